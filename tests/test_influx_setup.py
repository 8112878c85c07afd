"""`shortwatch influx setup`: v1 on a real influxd (open, and with auth and a user without the
rights); v2 on a recording HTTP server standing in for InfluxDB 2.x's management API (no 2.x
server can be installed here), which checks the bucket and DBRP requests the command makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from influx_servers import Influxd, Recorder
from shortwatch.cli import main


def _config(tmp_path: Path, storage: str) -> Path:
    cfg = tmp_path / "sw.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "var"}"\n[storage]\nbackend = "influxdb"\n{storage}\n')
    return cfg


@pytest.fixture
def influxd_root(tmp_path: Path) -> Path:
    if not Influxd.available():
        pytest.skip("influxd is not installed")
    return tmp_path / "influxd"


def test_v1_setup_creates_database_and_default_retention_policy(tmp_path, influxd_root, capsys) -> None:
    server = Influxd(influxd_root).start()
    try:
        cfg = _config(
            tmp_path,
            f'url = "{server.url}"\napi = "v1"\ndatabase = "sw lab"\nretention_policy = "two_years"\n'
            "influx_retention_days = 730\n",
        )
        assert main(["influx", "setup", "--config", str(cfg)]) == 0
        assert main(["influx", "setup", "--config", str(cfg)]) == 0  # again: nothing breaks
        out = capsys.readouterr().out
        assert "ok: retention policy two_years on sw lab: 17520h, default" in out
        assert ["sw lab"] in server.query("SHOW DATABASES")[0]["values"]
        rps = {v[0]: v for v in server.query('SHOW RETENTION POLICIES ON "sw lab"')[0]["values"]}
        assert rps["two_years"][1] == "17520h0m0s" and rps["two_years"][4] is True
    finally:
        server.stop()


def test_v1_setup_without_rights_prints_the_commands(tmp_path, influxd_root, capsys, monkeypatch) -> None:
    server = Influxd(influxd_root, auth=True).start()
    try:
        server.query("CREATE USER admin WITH PASSWORD 'adm' WITH ALL PRIVILEGES")
        server.auth = ("admin", "adm")
        server.query("CREATE USER writer WITH PASSWORD 'wr'")
        monkeypatch.setenv("SW_INFLUX_PW", "wr")
        cfg = _config(
            tmp_path,
            f'url = "{server.url}"\napi = "v1"\ndatabase = "sw"\nretention_policy = "rp1"\n'
            'username = "writer"\npassword_env = "SW_INFLUX_PW"\n',
        )
        assert main(["influx", "setup", "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert "not allowed" in err
        assert f"influx -host 127.0.0.1 -port {server.port} -username writer -password '<password>' -execute" in err
        assert "'CREATE DATABASE \"sw\"'" in err
        assert '\'CREATE RETENTION POLICY "rp1" ON "sw" DURATION INF REPLICATION 1 DEFAULT\'' in err
        assert not any(v == ["sw"] for s in server.query("SHOW DATABASES") for v in s.get("values", []))
    finally:
        server.stop()


ORG_ID = "0123456789abcdef"


def _influx2(rec) -> tuple[int, dict, bytes]:
    """Answers of InfluxDB 2.x's API for the calls setup makes (a stand-in; see the module doc)."""
    path = rec.path
    if rec.method == "GET" and path == "/api/v2/buckets":
        return 200, {}, json.dumps({"buckets": []}).encode()
    if rec.method == "GET" and path == "/api/v2/orgs":
        return 200, {}, json.dumps({"orgs": [{"id": ORG_ID, "name": "lab"}]}).encode()
    if rec.method == "POST" and path == "/api/v2/buckets":
        body = json.loads(rec.body)
        bucket = {"id": "b0b0b0b0b0b0b0b0", "orgID": body["orgID"], "name": body["name"]}
        return 201, {}, json.dumps(bucket | {"retentionRules": body["retentionRules"]}).encode()
    if rec.method == "GET" and path == "/api/v2/dbrps":
        return 200, {}, json.dumps({"content": []}).encode()
    if rec.method == "POST" and path == "/api/v2/dbrps":
        body = json.loads(rec.body)
        return 201, {}, json.dumps(body | {"id": "d0d0d0d0d0d0d0d0", "virtual": False}).encode()
    return 404, {}, b'{"code":"not found","message":"path not found"}'


def test_v2_setup_creates_bucket_and_dbrp_mapping(tmp_path, capsys, monkeypatch) -> None:
    rec = Recorder(answer=_influx2).start()
    monkeypatch.setenv("SW_TOKEN", "adm1n")
    try:
        cfg = _config(
            tmp_path,
            f'url = "{rec.url}"\napi = "v2"\norg = "lab"\nbucket = "shortwatch"\ntoken_env = "SW_TOKEN"\n'
            "influx_retention_days = 30\n",
        )
        assert main(["influx", "setup", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "ok: bucket shortwatch created" in out
        assert "ok: DBRP mapping shortwatch/autogen -> bucket shortwatch created" in out
        (bucket_req,) = [r for r in rec.requests if r.method == "POST" and r.path == "/api/v2/buckets"]
        body = json.loads(bucket_req.body)
        assert body["name"] == "shortwatch" and body["orgID"] == ORG_ID
        (rule,) = body["retentionRules"]
        assert rule["type"] == "expire" and rule["everySeconds"] == 30 * 86400
        (dbrp_req,) = [r for r in rec.requests if r.method == "POST" and r.path == "/api/v2/dbrps"]
        dbrp = json.loads(dbrp_req.body)
        assert dbrp["bucketID"] == "b0b0b0b0b0b0b0b0" and dbrp["database"] == "shortwatch"
        assert dbrp["retention_policy"] == "autogen" and dbrp["default"] is True
        assert all(r.headers["authorization"] == "Token adm1n" for r in rec.requests)
    finally:
        rec.stop()


def test_v2_setup_without_rights_prints_the_commands(tmp_path, capsys, monkeypatch) -> None:
    rec = Recorder(answer=lambda r: (403, {}, b'{"code":"forbidden","message":"insufficient permissions"}')).start()
    monkeypatch.setenv("SW_TOKEN", "writeonly")
    try:
        cfg = _config(
            tmp_path, f'url = "{rec.url}"\napi = "v2"\norg = "lab"\nbucket = "shortwatch"\ntoken_env = "SW_TOKEN"\n'
        )
        assert main(["influx", "setup", "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert "insufficient permissions" in err
        assert f"influx bucket create --host {rec.url} --org lab --name shortwatch --retention 0" in err
        assert f"influx v1 dbrp create --host {rec.url} --org lab --db shortwatch --rp autogen" in err
        assert "--default" in err
    finally:
        rec.stop()
