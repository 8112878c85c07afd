"""Grafana provisioning files: a data source, a dashboard provider, and the dashboards.

Provisioning is the primary way in (DESIGN.md "Choices already made"): copy the folder to a
Grafana host, point ``paths.provisioning`` at it, and restart Grafana. The data source uses
InfluxQL, so on InfluxDB 2.x the bucket needs a DBRP mapping (``shortwatch influx setup``
creates it); without it every panel is empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shortwatch.dashboards.build import DEFAULT_DATASOURCE_UID, dashboards
from shortwatch.settings import Settings

DEFAULT_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/shortwatch"


def _storage(settings: Settings | None, key: str, default: Any) -> Any:
    """A storage setting when the config has it (the InfluxDB keys belong to the sink's section)."""
    value = getattr(settings.storage, key, None) if settings is not None else None
    return default if value is None else value


def _q(value: str) -> str:
    """A YAML scalar that stays a string whatever it holds (a JSON string is valid YAML)."""
    return json.dumps(str(value))


def datasource_yaml(settings: Settings | None, uid: str = DEFAULT_DATASOURCE_UID) -> str:
    """The InfluxDB (InfluxQL) data source; secrets stay in Grafana's environment."""
    url = _storage(settings, "url", "http://127.0.0.1:8086")
    api = _storage(settings, "api", "v1")
    if api == "v2":
        database = _storage(settings, "bucket", "shortwatch")
        token_env = _storage(settings, "token_env", "INFLUX_TOKEN")
        auth = (
            "      # InfluxDB 2.x answers InfluxQL through a DBRP mapping of the bucket (shortwatch influx setup)\n"
            "      httpHeaderName1: Authorization\n"
            "    secureJsonData:\n"
            f"      httpHeaderValue1: {_q(f'Token ${{{token_env}}}')}\n"
        )
    else:
        database = _storage(settings, "database", "shortwatch")
        user = _storage(settings, "username", None)
        password_env = _storage(settings, "password_env", "INFLUX_PASSWORD")
        auth = (
            f"    user: {_q(user)}\n    secureJsonData:\n      password: {_q(f'${{{password_env}}}')}\n"
            if user
            else "    # user: shortwatch\n    # secureJsonData:\n    #   password: ${INFLUX_PASSWORD}\n"
        )
    return (
        "# Grafana data source for shortwatch (written by `shortwatch dashboards export`).\n"
        "# ${NAME} is read from Grafana's environment: no secret lives in this file.\n"
        "apiVersion: 1\n"
        "datasources:\n"
        "  - name: shortwatch InfluxDB\n"
        f"    uid: {_q(uid)}\n"
        "    type: influxdb\n"
        "    access: proxy\n"
        f"    url: {_q(url)}\n"
        "    jsonData:\n"
        f"      dbName: {_q(database)}\n"
        "      httpMode: POST\n"
        "      timeInterval: 10s  # the cells' sampling period: the smallest $__interval\n"
        f"{auth}"
    )


def provider_yaml(dashboards_path: str) -> str:
    """The dashboard provider: Grafana loads every JSON file under ``dashboards_path``."""
    return (
        "# Grafana dashboard provider for shortwatch (written by `shortwatch dashboards export`).\n"
        "apiVersion: 1\n"
        "providers:\n"
        "  - name: shortwatch\n"
        "    folder: shortwatch\n"
        "    type: file\n"
        "    disableDeletion: false\n"
        "    allowUiUpdates: false  # edit the code (src/shortwatch/dashboards), not the UI\n"
        "    updateIntervalSeconds: 60\n"
        "    options:\n"
        f"      path: {_q(dashboards_path)}\n"
    )


def export(out: Path, settings: Settings | None = None, dashboards_path: str | None = None) -> list[Path]:
    """Write the provisioning tree under ``out``; returns the files written.

    ``dashboards_path`` is where Grafana will find the JSON files (default: ``out/dashboards``
    as an absolute path, right when Grafana runs on this host).
    """
    uid = settings.grafana.datasource_uid if settings is not None else DEFAULT_DATASOURCE_UID
    dash_dir = out / "dashboards"
    files = {
        out / "provisioning" / "datasources" / "shortwatch.yaml": datasource_yaml(settings, uid),
        out / "provisioning" / "dashboards" / "shortwatch.yaml": provider_yaml(
            dashboards_path or str(dash_dir.resolve())
        ),
    }
    for name, data in dashboards(uid).items():
        files[dash_dir / f"{name}.json"] = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
