"""`shortwatch dashboards push`: put the dashboards into a running Grafana through its HTTP API."""

from __future__ import annotations

import re
from collections.abc import Callable

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from shortwatch.dashboards.build import dashboards
from shortwatch.settings import ConfigError, GrafanaSettings, resolve_secret


def folder_uid(title: str) -> str:
    """A stable folder uid from its title (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-")[:40] or "shortwatch"


def push(cfg: GrafanaSettings, say: Callable[[str], None] = print) -> list[str]:
    """Create the folder when missing and overwrite the dashboards in it; returns their URLs.

    A missing data source is only warned about: the dashboards are still useful once it exists.
    """
    if not cfg.url:
        raise ConfigError(["grafana.url: set the Grafana base URL to push dashboards (e.g. http://127.0.0.1:3000)"])
    token = resolve_secret(cfg.token_env, cfg.token_file)
    if token is None:
        raise ConfigError(["grafana: set token_env or token_file (a Grafana service-account token)"])
    api = GrafanaApi.from_url(cfg.url, credential=token, timeout=cfg.timeout_s)
    fuid = folder_uid(cfg.folder)
    try:
        api.folder.get_folder(fuid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(cfg.folder, uid=fuid)
        say(f"created folder {cfg.folder!r} (uid {fuid})")
    try:
        api.datasource.get_datasource_by_uid(cfg.datasource_uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        say(
            f"warning: Grafana has no data source with uid {cfg.datasource_uid!r}: the panels stay empty until "
            "it exists (deploy/grafana/provisioning/datasources/shortwatch.yaml, or set grafana.datasource_uid)"
        )
    urls = []
    for name, data in dashboards(cfg.datasource_uid).items():
        answer = api.dashboard.update_dashboard(
            {"dashboard": data, "folderUid": fuid, "overwrite": True, "message": "shortwatch dashboards push"}
        )
        url = cfg.url.rstrip("/") + str(answer.get("url", f"/d/{data['uid']}"))
        say(f"pushed {name}: {url}")
        urls.append(url)
    return urls
