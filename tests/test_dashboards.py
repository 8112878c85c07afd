"""Grafana dashboards: the JSON model, the provisioning files, and every query on a real influxd.

No Grafana server can be installed here, so the dashboards are checked in two steps:
1. their JSON against Grafana's dashboard model: the Foundation SDK's own model (a round
   trip through ``Dashboard.from_json``) plus the structure Grafana's documented JSON model
   asks for (uid, title, panels with datasource/targets/gridPos, templating, annotations);
2. every panel's InfluxQL (and the variable and annotation queries), with $cell,
   $__interval and $timeFilter filled in as Grafana would, against a real influxd 1.6
   holding a simulated run: each must return the series the panel draws.

The data are the pipeline's records committed to the SQLite log and encoded by the InfluxDB
sink's own LineEncoder, so a schema change on either side fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shortwatch.daemon.health import Figures, HealthModel
from shortwatch.daemon.pipeline import Pipeline
from shortwatch.dashboards.build import CELL_UID, LAB_UID, dashboards
from shortwatch.dashboards.provisioning import DEFAULT_DASHBOARDS_PATH, export
from shortwatch.model import RecordBatch
from shortwatch.sensors.simulator import SimulatedCell, default_spec
from shortwatch.settings import parse_settings
from shortwatch.storage.influx_line import LineEncoder
from shortwatch.storage.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[1]
START = 1767600000.0  # 2026-01-05 08:00 UTC
STATION = "glovebox-1"
CELLS = {"A5": "sym_cv_rise", "B2": "full_dpq_short"}  # CV checks + ASR; pressure d(dP)_Q + CE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def influxd(tmp_path_factory):
    """A real influxd 1.6 on free loopback ports, its files in a temp dir, database shortwatch."""
    exe = shutil.which("influxd")
    if exe is None:
        pytest.skip("influxd not installed (apt-get install influxdb)")
    d = tmp_path_factory.mktemp("influxd")
    port, port2 = _free_port(), _free_port()
    conf = d / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{port2}"\n'
        f'[meta]\n  dir = "{d}/meta"\n'
        f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
    )
    log = open(d / "influxd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-config", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(url + "/ping", 1)[0] == 204:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (d / "influxd.log").read_text()
            assert time.monotonic() < deadline, "influxd did not answer /ping"
            time.sleep(0.1)
        _query(url, "CREATE DATABASE shortwatch", post=True)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _query(url: str, q: str, post: bool = False) -> dict[str, Any]:
    params = urllib.parse.urlencode({"db": "shortwatch", "q": q, "epoch": "ms"})
    req = urllib.request.Request(f"{url}/query?{params}", method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------ the sink's own lines


def _lines(out: RecordBatch, tmp: Path) -> list[str]:
    """The pipeline's records as the InfluxDB sink sends them: committed to the SQLite log,
    read back through it, encoded by the sink's LineEncoder."""
    encoder = LineEncoder("ms")
    lines: list[str] = []
    with SqliteStore(tmp / "log.sqlite", station=STATION) as store:
        store.write_sync(out)
        for table in ("sample", "step", "cycle", "detector", "alert"):
            after = 0
            while rows := store.log_read(table, after, 50_000):
                lines += [x for r in rows if (x := encoder.encode(table, r)) is not None]
                after = rows[-1]["seq"]
    return lines


def _daemon_lines(t0: float, t1: float) -> list[str]:
    """`daemon` records as the health model makes them, every 10 min over the run."""
    model = HealthModel(parse_settings({}), started=t0)
    out = []
    n = int((t1 - t0) // 600)
    for i in range(n):
        t = t0 + 600 * i
        model.figures = Figures(
            at=t,
            started=t0,
            samples_accepted=1000 * i,
            items_in=1000 * i,
            rejected={"out_of_order": i},
            queue_depth=i % 3,
            alerts_firing={"warning": i % 2, "critical": 0},
        )
        out.append(LineEncoder("ms").daemon(STATION, t, model.daemon_fields()))
    return [x for x in out if x is not None]


@pytest.fixture(scope="module")
def loaded(influxd, tmp_path_factory):
    """A simulated run of two cells (300 h, 30-s samples) through the pipeline, written to influxd."""
    settings = parse_settings({})
    out = RecordBatch()
    for cell, scenario in CELLS.items():
        settings.cells[cell] = spec = default_spec(scenario)
        sim = SimulatedCell(cell, scenario, spec, seed=3, start=START, period_s=30, duration_h=300)
        p = Pipeline(settings)
        p.process(list(sim.samples()), cell, out)
        p.finish(out)
    assert out.alerts and any(c.cv_peak_A for c in out.cycles) and any(c.dpq_MPa_g_per_Ah for c in out.cycles)
    t1 = max(s.time for s in out.samples)
    lines = _lines(out, tmp_path_factory.mktemp("log")) + _daemon_lines(START, t1)
    for i in range(0, len(lines), 20_000):
        body = "\n".join(lines[i : i + 20_000]).encode()
        req = urllib.request.Request(f"{influxd}/write?db=shortwatch&precision=ms", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 204
    return {"url": influxd, "t0": START, "t1": t1, "batch": out}


# ------------------------------------------------------------------ the JSON model


def _targets(panel: dict[str, Any]) -> list[dict[str, Any]]:
    return panel.get("targets") or []


def test_json_follows_grafanas_dashboard_model():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    from shortwatch.dashboards.influxql import InfluxQLQuery, register

    register()
    boards = dashboards("my-influx")
    assert {b["uid"] for b in boards.values()} == {LAB_UID, CELL_UID}
    for name, d in boards.items():
        for key in ("uid", "title", "panels", "templating", "annotations", "schemaVersion", "time"):
            assert key in d, f"{name}: no {key}"
        assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        boxes = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert all(isinstance(g[k], int) for k in "hwxy") and g["w"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not boxes & cells, f"{name}: panel {p['title']!r} overlaps another"
            boxes |= cells
            assert p["type"] in {"timeseries", "stat", "table", "xychart"}
            assert p["datasource"] == {"type": "influxdb", "uid": "my-influx"}
            refs = [t["refId"] for t in _targets(p)]
            assert refs and len(refs) == len(set(refs)), p["title"]
            for t in _targets(p):
                assert t["rawQuery"] is True and t["query"].startswith(("SELECT", "SHOW"))
                assert t["datasource"] == p["datasource"]
                if t["resultFormat"] == "time_series" and "GROUP BY time(" in t["query"]:
                    assert "$__interval" in t["query"], "aggregate by the dashboard's interval"
        # the SDK's model reads the dashboard back unchanged (InfluxDB targets decoded as ours)
        model = Dashboard.from_json(d)
        assert all(isinstance(t, InfluxQLQuery) for p in model.panels or [] for t in p.targets or [])
        again = json.loads(json.dumps(model, cls=JSONEncoder))
        again["panels"] = [{**p, "id": d["panels"][i]["id"]} for i, p in enumerate(again["panels"])]
        # annotation targets are data-source queries, which the SDK's annotation model cannot hold
        assert {**again, "annotations": None} == {**d, "annotations": None}

    cell = boards["shortwatch-cell"]
    (var,) = cell["templating"]["list"]
    assert var["name"] == "cell" and var["type"] == "query" and var["query"].startswith("SHOW TAG VALUES")
    (anno,) = cell["annotations"]["list"]
    assert anno["datasource"]["uid"] == "my-influx" and anno["enable"] is True
    assert anno["target"]["textColumn"] == "text" and 'FROM "alert"' in anno["target"]["query"]
    vip = next(p for p in cell["panels"] if p["title"].startswith("Voltage"))
    overrides = {o["matcher"]["options"]: o["properties"] for o in vip["fieldConfig"]["overrides"]}
    for label in ("V", "I", "P"):  # a min/max band around each mean
        assert {"id": "custom.fillBelowTo", "value": f"{label} min"} in overrides[f"{label} max"]


def test_export_writes_the_files_in_deploy(tmp_path):
    """deploy/grafana is what `shortwatch dashboards export` writes: regenerate it when this fails
    (shortwatch dashboards export deploy/grafana --dashboards-path /var/lib/grafana/dashboards/shortwatch)."""
    files = export(tmp_path, None, DEFAULT_DASHBOARDS_PATH)
    assert len(files) == 4
    for f in files:
        rel = f.relative_to(tmp_path)
        assert (REPO / "deploy" / "grafana" / rel).read_text() == f.read_text(), f"deploy/grafana/{rel} is stale"
    provider = (tmp_path / "provisioning" / "dashboards" / "shortwatch.yaml").read_text()
    assert f'path: "{DEFAULT_DASHBOARDS_PATH}"' in provider
    ds = (tmp_path / "provisioning" / "datasources" / "shortwatch.yaml").read_text()
    assert "type: influxdb" in ds and 'uid: "shortwatch-influxdb"' in ds


def test_export_takes_the_datasource_from_the_config(tmp_path):
    settings = parse_settings({"grafana": {"datasource_uid": "lab-influx"}})
    export(tmp_path, settings)
    lab = json.loads((tmp_path / "dashboards" / "shortwatch-lab.json").read_text())
    assert {p["datasource"]["uid"] for p in lab["panels"]} == {"lab-influx"}
    ds = (tmp_path / "provisioning" / "datasources" / "shortwatch.yaml").read_text()
    assert 'uid: "lab-influx"' in ds
    provider = (tmp_path / "provisioning" / "dashboards" / "shortwatch.yaml").read_text()
    assert f'path: "{(tmp_path / "dashboards").resolve()}"' in provider


# ------------------------------------------------------------------ every query on influxd

#: (dashboard, panel title) -> (cell, columns that must hold values, tag of the series or None)
EXPECTED: dict[tuple[str, str], tuple[str | None, set[str], str | None]] = {
    ("shortwatch-lab", "Cell status"): (None, {"status"}, "cell"),
    ("shortwatch-lab", "Latest alerts"): (None, {"cell", "detector", "severity", "state", "summary"}, None),
    ("shortwatch-lab", "Samples in"): (None, {"samples/s", "rejected/s"}, "station"),
    ("shortwatch-lab", "Queue and store"): (None, {"queue batches", "store pending"}, "station"),
    ("shortwatch-lab", "Alerts firing"): (None, {"warning", "critical"}, "station"),
    ("shortwatch-lab", "InfluxDB and notifier backlog (rows)"): (None, {"rows unsent"}, "station"),
    ("shortwatch-lab", "Oldest unsent row"): (None, {"age"}, "station"),
    ("shortwatch-cell", "Voltage, current and stack pressure"): (
        "B2",
        {"V", "V min", "V max", "I", "I min", "I max", "P", "P min", "P max"},
        None,
    ),
    ("shortwatch-cell", "ASR per cycle"): ("A5", {"cycle", "ASR"}, None),
    ("shortwatch-cell", "Coulombic efficiency per cycle"): ("B2", {"cycle", "CE"}, None),
    ("shortwatch-cell", "d(dP)_Q per cycle"): ("B2", {"cycle", "d(dP)_Q"}, None),
    ("shortwatch-cell", "CV check peak current per cycle"): ("A5", {"cycle", "CV peak"}, None),
    ("shortwatch-cell", "Cycles"): ("B2", {"cycle", "q_charge_Ah", "q_discharge_Ah", "ce", "dpq_MPa_g_per_Ah"}, None),
    ("shortwatch-cell", "Half-cycle ASR"): ("A5", {"ASR"}, "step_kind"),
    ("shortwatch-cell", "Detector statistics"): ("A5", {"statistic"}, "detector"),
    ("shortwatch-cell", "Alerts of this cell"): ("A5", {"detector", "severity", "state", "summary"}, None),
}


def _fill(query: str, cell: str | None, t0: float, t1: float, interval: str = "30m") -> str:
    """Grafana's substitutions for the InfluxDB data source."""
    time_filter = f"time >= {int(t0 * 1000)}ms and time <= {int(t1 * 1000)}ms"
    out = query.replace("$timeFilter", time_filter).replace("$__interval", interval)
    if cell is not None:
        out = out.replace("$cell", cell)
    assert "$" not in out.replace("$col", "").replace("$tag_", ""), out
    return out


def _series(answer: dict[str, Any]) -> list[dict[str, Any]]:
    (result,) = answer["results"]
    assert "error" not in result, result["error"]
    return result.get("series", [])


def _non_null_columns(series: list[dict[str, Any]]) -> set[str]:
    cols = set()
    for s in series:
        for j, name in enumerate(s["columns"]):
            if any(row[j] is not None for row in s["values"]):
                cols.add(name)
    return cols


@pytest.mark.slow
def test_every_panel_query_returns_its_series(loaded):
    url, t0, t1, batch = loaded["url"], loaded["t0"], loaded["t1"], loaded["batch"]
    seen = set()
    for name, board in dashboards().items():
        for panel in board["panels"]:
            key = (name, panel["title"])
            assert key in EXPECTED, f"no expectation for panel {key}: add one"
            seen.add(key)
            cell, columns, tag = EXPECTED[key]
            series = []
            for target in _targets(panel):
                got = _series(_query(url, _fill(target["query"], cell, t0, t1)))
                assert got, f"{key} {target['refId']}: no series"
                series += got
            missing = columns - _non_null_columns(series)
            assert not missing, f"{key}: no values in {missing}"
            if tag is not None:
                assert all(tag in s.get("tags", {}) for s in series), f"{key}: not grouped by {tag}"
            if key == ("shortwatch-lab", "Cell status"):
                statuses = {s["tags"]["cell"]: s["values"][0][1] for s in series}
                assert statuses == {c: "critical" for c in CELLS}  # both cells end in a hard short
            if key == ("shortwatch-cell", "CV check peak current per cycle"):
                want = {c.cycle: c.cv_peak_A for c in batch.cycles if c.cell == "A5" and c.cv_peak_A is not None}
                (s,) = series
                got = {row[1]: row[2] for row in s["values"] if row[2] is not None}
                assert got == pytest.approx(want)  # x = the cycle number, y = that cycle's peak
    assert seen == set(EXPECTED)


@pytest.mark.slow
def test_variable_and_annotation_queries(loaded):
    url, t0, t1, batch = loaded["url"], loaded["t0"], loaded["t1"], loaded["batch"]
    cell_board = dashboards()["shortwatch-cell"]
    (var,) = cell_board["templating"]["list"]
    (s,) = _series(_query(url, var["query"]))
    assert sorted(v[1] for v in s["values"]) == sorted(CELLS)
    (anno,) = cell_board["annotations"]["list"]
    target = anno["target"]
    for cell in CELLS:
        (s,) = _series(_query(url, _fill(target["query"], cell, t0, t1)))
        assert target["textColumn"] in s["columns"]
        for col in target["tagsColumn"].split(","):
            assert col in s["columns"]
        text = [row[s["columns"].index("text")] for row in s["values"]]
        assert text == [a.summary for a in batch.alerts if a.cell == cell]


# ------------------------------------------------------------------ push


class _GrafanaStandIn:
    """A local HTTP server that answers like Grafana's API and records every request: a stand-in,
    as no Grafana server can run here. It starts with no folder and no data source."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.folders: dict[str, str] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                return body

            def do_GET(self) -> None:
                self._record()
                if self.path.startswith("/api/folders/") and self.path.rsplit("/", 1)[1] in outer.folders:
                    uid = self.path.rsplit("/", 1)[1]
                    return self._answer(200, {"uid": uid, "title": outer.folders[uid]})
                self._answer(404, {"message": "not found"})

            def do_POST(self) -> None:
                body = self._record()
                if self.path == "/api/folders":
                    outer.folders[body["uid"]] = body["title"]
                    return self._answer(200, {"uid": body["uid"], "title": body["title"]})
                if self.path == "/api/dashboards/db":
                    uid = body["dashboard"]["uid"]
                    return self._answer(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1})
                self._answer(404, {"message": "not found"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_push_creates_the_folder_and_overwrites_the_dashboards(tmp_path, monkeypatch, capsys):
    from shortwatch.cli import main

    grafana = _GrafanaStandIn()
    try:
        cfg = tmp_path / "lab.toml"
        cfg.write_text(
            f'[grafana]\nurl = "{grafana.url}"\ntoken_env = "GRAFANA_TOKEN"\nfolder = "Battery lab"\n'
            'datasource_uid = "lab-influx"\n'
        )
        monkeypatch.setenv("GRAFANA_TOKEN", "s3cret")
        assert main(["dashboards", "push", "--config", str(cfg)]) == 0
        assert main(["dashboards", "push", "--config", str(cfg)]) == 0  # again: the folder exists now
    finally:
        grafana.close()
    out = capsys.readouterr().out
    assert out.count("created folder 'Battery lab' (uid Battery-lab)") == 1
    assert "no data source with uid 'lab-influx'" in out
    assert f"pushed shortwatch-cell: {grafana.url}/d/{CELL_UID}/x" in out
    assert all(h.get("Authorization") == "Bearer s3cret" for _, _, h, _ in grafana.requests)
    posts = [b for m, p, _, b in grafana.requests if (m, p) == ("POST", "/api/dashboards/db")]
    assert len(posts) == 4
    assert [p["dashboard"]["uid"] for p in posts] == [LAB_UID, CELL_UID, LAB_UID, CELL_UID]
    for p in posts:
        assert p["overwrite"] is True and p["folderUid"] == "Battery-lab"
        assert {panel["datasource"]["uid"] for panel in p["dashboard"]["panels"]} == {"lab-influx"}
    assert [(m, p) for m, p, _, _ in grafana.requests if p == "/api/folders"] == [("POST", "/api/folders")]


def test_push_without_url_or_token_says_which_key(tmp_path, capsys):
    from shortwatch.cli import main

    cfg = tmp_path / "lab.toml"
    cfg.write_text("[grafana]\n")
    assert main(["dashboards", "push", "--config", str(cfg)]) == 2
    assert "grafana.url: set the Grafana base URL" in capsys.readouterr().err
    cfg.write_text('[grafana]\nurl = "http://127.0.0.1:9"\n')
    assert main(["dashboards", "push", "--config", str(cfg)]) == 2
    assert "grafana: set token_env or token_file" in capsys.readouterr().err


def test_push_to_a_grafana_that_is_not_there_fails_cleanly(tmp_path, monkeypatch, capsys):
    from shortwatch.cli import main

    port = _free_port()  # nothing listens there
    cfg = tmp_path / "lab.toml"
    cfg.write_text(f'[grafana]\nurl = "http://127.0.0.1:{port}"\ntoken_env = "GRAFANA_TOKEN"\ntimeout_s = 2\n')
    monkeypatch.setenv("GRAFANA_TOKEN", "x")
    assert main(["dashboards", "push", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dashboards push: http://127.0.0.1:{port}: ") and "Traceback" not in err
