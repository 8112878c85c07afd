"""`shortwatch influx setup`: create what the config's [storage] names in InfluxDB.

v1: the database and, when the config names one, its retention policy (made the database's
default, because the dashboards' InfluxQL reads the default policy). v2: the bucket, and the
DBRP mapping (database/retention policy -> bucket) without which InfluxQL, and so every
dashboard, finds nothing on InfluxDB 2.x. Each step is idempotent. When the credentials lack
the rights, it prints the exact commands for an administrator instead.
"""

from __future__ import annotations

import json
import shlex
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import urllib3

from shortwatch.settings import StorageSettings, resolve_secret
from shortwatch.storage.influx import network_message

DBRP_RP = "autogen"  # the retention policy name InfluxQL queries use on 2.x


@dataclass
class SetupResult:
    done: list[str] = field(default_factory=list)  # what was created or found in place
    denied: str | None = None  # why it could not finish (no rights, unreachable)
    commands: list[str] = field(default_factory=list)  # what an administrator should run instead

    @property
    def ok(self) -> bool:
        return self.denied is None


def _duration(days: float | None) -> str:
    """An InfluxQL duration: whole hours (the shortest a 1.x retention policy takes), or INF."""
    return "INF" if days is None else f"{max(1, round(days * 24))}h"


def _q(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def v1_statements(s: StorageSettings) -> list[str]:
    stmts = [f"CREATE DATABASE {_q(s.database or '')}"]
    if s.retention_policy:
        stmts.append(
            f"CREATE RETENTION POLICY {_q(s.retention_policy)} ON {_q(s.database or '')} "
            f"DURATION {_duration(s.influx_retention_days)} REPLICATION 1 DEFAULT"
        )
    return stmts


def setup_v1(s: StorageSettings) -> SetupResult:
    """CREATE DATABASE and RETENTION POLICY over /query (ALTER when the policy exists)."""
    out = SetupResult()
    headers = {}
    token = resolve_secret(s.token_env, s.token_file)
    password = resolve_secret(s.password_env, s.password_file)
    if token:
        headers["Authorization"] = f"Token {token}"
    elif s.username:
        headers |= urllib3.make_headers(basic_auth=f"{s.username}:{password or ''}")
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(s.timeout_s))
    base = s.url.rstrip("/")
    cli = ["influx", "-host", urllib.parse.urlsplit(base).hostname or "127.0.0.1"]
    cli += ["-port", str(urllib.parse.urlsplit(base).port or 8086)]
    if s.username:
        cli += ["-username", s.username, "-password", "<password>"]

    def query(stmt: str) -> dict[str, Any]:
        r = http.request("POST", f"{base}/query", fields={"q": stmt}, headers=headers, encode_multipart=False)
        data = json.loads(r.data or b"{}")
        err = data.get("error") or next((x["error"] for x in data.get("results", []) if "error" in x), None)
        if r.status in (401, 403) or (err and "authoriz" in err):
            raise PermissionError(err or f"HTTP {r.status}")
        if r.status // 100 != 2 or err:
            raise RuntimeError(f"{stmt}: {err or f'HTTP {r.status}'}")
        return data

    stmts = v1_statements(s)
    try:
        query(stmts[0])
        out.done.append(f"database {s.database} exists")
        if s.retention_policy:
            res = query(f"SHOW RETENTION POLICIES ON {_q(s.database or '')}")
            have = {v[0] for r in res.get("results", []) for x in r.get("series", []) for v in x.get("values", [])}
            if s.retention_policy in have:
                stmts[1] = stmts[1].replace("CREATE RETENTION POLICY", "ALTER RETENTION POLICY")
            query(stmts[1])
            out.done.append(
                f"retention policy {s.retention_policy} on {s.database}: {_duration(s.influx_retention_days)}, default"
            )
    except PermissionError as exc:
        out.denied = f"not allowed: {exc}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        out.denied = f"{base} unreachable: {network_message(exc)}"
    except (RuntimeError, ValueError) as exc:
        out.denied = str(exc)
    if out.denied:
        out.commands = [shlex.join([*cli, "-execute", st]) for st in stmts]
    return out


def setup_v2(s: StorageSettings) -> SetupResult:
    """The bucket (with ``influx_retention_days``) and its DBRP mapping, via influxdb-client."""
    from influxdb_client import BucketRetentionRules, InfluxDBClient
    from influxdb_client.client.exceptions import InfluxDBError
    from influxdb_client.domain.dbrp_create import DBRPCreate
    from influxdb_client.rest import ApiException
    from influxdb_client.service.dbr_ps_service import DBRPsService

    out = SetupResult()
    database = s.database or s.bucket or ""
    seconds = 0 if s.influx_retention_days is None else round(s.influx_retention_days * 86400)
    token = resolve_secret(s.token_env, s.token_file)
    client = InfluxDBClient(url=s.url, token=token or "", org=s.org, timeout=int(s.timeout_s * 1000))
    bucket_id = "<bucket id from: influx bucket list --name " + shlex.quote(s.bucket or "") + ">"
    try:
        buckets = client.buckets_api()
        bucket = buckets.find_bucket_by_name(s.bucket)
        if bucket is None:
            rules = BucketRetentionRules(type="expire", every_seconds=seconds)  # 0: forever
            bucket = buckets.create_bucket(bucket_name=s.bucket, org=s.org, retention_rules=rules)
            out.done.append(f"bucket {s.bucket} created")
        else:
            out.done.append(f"bucket {s.bucket} exists")
        bucket_id = bucket.id
        dbrps = DBRPsService(client.api_client)
        have = dbrps.get_dbr_ps(org_id=bucket.org_id, db=database, rp=DBRP_RP).content or []
        if any(m.bucket_id == bucket.id for m in have):
            out.done.append(f"DBRP mapping {database}/{DBRP_RP} -> bucket {s.bucket} exists")
        else:
            dbrps.post_dbrp(
                DBRPCreate(
                    org_id=bucket.org_id, bucket_id=bucket.id, database=database, retention_policy=DBRP_RP, default=True
                )
            )
            out.done.append(f"DBRP mapping {database}/{DBRP_RP} -> bucket {s.bucket} created")
    except ApiException as exc:
        out.denied = f"HTTP {exc.status}: {exc.body.decode() if isinstance(exc.body, bytes) else exc.body}"
        if exc.status not in (401, 403):
            out.denied = "failed: " + out.denied
    except InfluxDBError as exc:  # e.g. the organization does not exist
        out.denied = f"failed: {exc.message}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        out.denied = f"{s.url} unreachable: {network_message(exc)}"
    finally:
        client.close()
    if out.denied:
        retention = f"{seconds}s" if seconds else "0"
        host = ["--host", s.url]
        out.commands = [
            shlex.join(["influx", "bucket", "create", *host, "--org", s.org or "", "--name", s.bucket or ""])
            + f" --retention {retention}",
            shlex.join(["influx", "v1", "dbrp", "create", *host, "--org", s.org or "", "--db", database])
            + f" --rp {DBRP_RP} --bucket-id {bucket_id} --default",
        ]
    return out


def setup(s: StorageSettings) -> SetupResult:
    return setup_v2(s) if s.api == "v2" else setup_v1(s)
