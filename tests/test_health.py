"""Health: the verdict rules, and /healthz, /metrics and `status` on a real `shortwatch run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shortwatch.daemon.health import Figures, HealthModel, SourceFigures
from shortwatch.daemon.storeview import Backlog
from shortwatch.settings import parse_settings

SHORTWATCH = [sys.executable, "-m", "shortwatch.cli"]


# ------------------------------------------------------------------ the verdict


def _model(**daemon: Any) -> HealthModel:
    return HealthModel(parse_settings({"daemon": daemon}), started=1000.0)


def test_healthy_figures_have_no_problems():
    m = _model()
    m.figures = Figures(at=1100.0, started=1000.0, sources={"mqtt-0": SourceFigures(5, 1099.0, None)})
    assert m.problems(now=1100.5) == []
    assert m.daemon_fields()["healthy"] == 1


def test_each_problem_is_named():
    m = _model(health_no_data_s=60, health_backlog_s=600)
    m.figures = Figures(
        at=2000.0,
        started=1000.0,
        sources={"file-0": SourceFigures(10, 1500.0, "stopped: OSError: gone"), "mqtt-0": SourceFigures(3, 1800.0)},
        store_pending_batches=4,
        store_last_error="OperationalError: disk I/O error",
        store_last_commit_at=1900.0,
        backlogs={"influx:sample": Backlog(12_000, 3600.0), "notify:lab-email": Backlog(1, 5.0)},
    )
    problems = m.problems(now=2001.0)
    assert problems[0] == "source file-0 down: stopped: OSError: gone"
    assert problems[1] == "no data from any source for 201 s (limit 60 s)"
    assert problems[2].startswith("store failing: 4 batches waiting 101 s; last error: OperationalError")
    assert problems[3] == "reader influx:sample behind: 12000 rows unsent, the oldest for 3600 s (limit 600 s)"
    assert len(problems) == 4  # the e-mail reader is within its limit
    code, body = m.healthz()
    assert code == 503 and body["status"] == "failing"
    fields = m.daemon_fields()
    assert fields["healthy"] == 0 and fields["sources_down"] == 1
    assert fields["backlog_rows"] == 12_001 and fields["backlog_age_s"] == 3600.0
    assert fields["backlog_rows_influx_sample"] == 12_000


def test_a_stalled_event_loop_is_a_problem():
    m = _model()
    m.figures = Figures(at=1000.0, started=1000.0)
    assert m.problems(now=1010.0) == []
    assert m.problems(now=1045.0) == ["figures not refreshed for 45 s: the event loop is stalled"]


# ------------------------------------------------------------------ a real daemon


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _config(tmp: Path, port: int, sources: str, daemon_extra: str = "") -> Path:
    cfg = tmp / "lab.toml"
    cfg.write_text(
        f'[daemon]\nstation = "test"\nstate_dir = "{tmp}/var"\nhttp = "127.0.0.1:{port}"\n'
        f"checkpoint_interval_s = 1\n{daemon_extra}\n{sources}"
    )
    return cfg


def _simulator(cells: dict[str, str], speedup: float, period_s: float = 10, duration_h: float | None = None) -> str:
    lines = ["[[sources]]", 'type = "simulator"', f"speedup = {speedup}", f"period_s = {period_s}"]
    if duration_h is not None:
        lines.append(f"duration_h = {duration_h}")
    lines.append("[sources.cells]")
    lines += [f'{c} = "{s}"' for c, s in cells.items()]
    return "\n".join(lines) + "\n"


class Daemon:
    """`shortwatch run` as a subprocess, stopped with SIGTERM at the end."""

    def __init__(self, cfg: Path, port: int):
        self.cfg, self.port = cfg, port
        self.log = open(cfg.parent / "daemon.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*SHORTWATCH, "run", "--config", str(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(self.url + "/healthz")
                return
            except OSError:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < deadline, "the daemon's /healthz never answered\n" + self.output()
                time.sleep(0.1)

    def output(self) -> str:
        return (self.cfg.parent / "daemon.log").read_text()

    def healthz(self) -> tuple[int, dict[str, Any]]:
        code, body = _get(self.url + "/healthz")
        return code, json.loads(body)

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """/metrics parsed with prometheus-client's own parser: sample name -> labels -> value."""
        code, body = _get(self.url + "/metrics")
        assert code == 200
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()


def _status(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHORTWATCH, "status", "--config", str(cfg)], capture_output=True, text=True, timeout=60)


def _until(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_metrics_move_and_status_reads_running_and_stopped_daemon(tmp_path):
    port = _free_port()
    cfg = _config(tmp_path, port, _simulator({"A1": "sym_healthy", "B3": "full_dpq_short"}, speedup=40000))
    d = Daemon(cfg, port)
    try:
        first = d.metrics()
        code, body = d.healthz()
        assert code == 200 and body["status"] == "ok" and body["problems"] == []

        def moved():
            m = d.metrics()
            return (
                m
                if m["shortwatch_samples_accepted_total"][()] > first["shortwatch_samples_accepted_total"][()]
                else None
            )

        later = _until(moved, what="samples_accepted to grow")
        src = (("source", "simulator-0"),)
        assert later["shortwatch_items_received_total"][src] >= later["shortwatch_samples_accepted_total"][()] > 0
        assert later["shortwatch_source_up"][src] == 1.0
        assert later["shortwatch_healthy"][()] == 1.0
        assert later["shortwatch_queue_capacity"][()] == 16.0
        assert 0 <= later["shortwatch_queue_depth"][()] <= 16
        assert later["shortwatch_store_rows_total"][(("table", "sample"),)] > 0
        assert set(later["shortwatch_cell_last_sample_timestamp_seconds"]) == {(("cell", "A1"),), (("cell", "B3"),)}
        assert set(later["shortwatch_alerts_firing"]) == {(("severity", s),) for s in ("info", "warning", "critical")}

        def alerted():  # B3's d(dP)_Q falls from cycle ~12: an alert fires, and the log has it
            m = d.metrics()
            firing = sum(m["shortwatch_alerts_firing"].values())
            return m if firing and m.get("shortwatch_alert_transitions_total", {}).get((("state", "firing"),)) else None

        alerts = _until(alerted, timeout=60, what="an alert to fire")
        b3 = {dict(k)["status"] for k, v in alerts["shortwatch_cell_status"].items() if dict(k)["cell"] == "B3" and v}
        assert b3 <= {"warning", "critical"} and len(b3) == 1
        figures = d.healthz()[1]["figures"]
        assert figures["alerts_firing_warning"] + figures["alerts_firing_critical"] >= 1

        running = _status(cfg)
        assert running.returncode == 0, running.stdout + running.stderr
        assert "running, healthy" in running.stdout
        assert "simulator-0: up" in running.stdout
        assert "A1" in running.stdout and "B3" in running.stdout
    finally:
        assert d.stop() == 0, d.output()
    stopped = _status(cfg)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "not running (no answer at" in stopped.stdout and "Connection refused" in stopped.stdout
    # the checkpoint's count of accepted samples, as the daemon wrote it at its stop
    checkpoint = json.loads((tmp_path / "var" / "checkpoint.json").read_text())
    assert f"{checkpoint['pipeline']['samples_accepted']:,} accepted" in stopped.stdout
    assert checkpoint["pipeline"]["samples_accepted"] > later["shortwatch_samples_accepted_total"][()] - 1
    assert "  A1 " in stopped.stdout and "last sample 2026-" in stopped.stdout


@pytest.mark.slow
def test_healthz_fails_when_a_source_is_down(tmp_path):
    port = _free_port()
    ending = _simulator({"A1": "sym_healthy"}, speedup=20000, duration_h=2)  # ends after about 0.4 s
    lasting = _simulator({"B1": "full_healthy"}, speedup=10)
    d = Daemon(_config(tmp_path, port, ending + lasting), port)
    try:
        _, body = _until(lambda: (r := d.healthz())[0] == 503 and r, what="503")
        assert body["problems"] == ["source simulator-0 down: ended: it delivers no more data"]
        assert body["figures"]["sources_down"] == 1
        m = d.metrics()
        assert m["shortwatch_source_up"][(("source", "simulator-0"),)] == 0.0
        assert m["shortwatch_source_up"][(("source", "simulator-1"),)] == 1.0
        assert m["shortwatch_healthy"][()] == 0.0
        status = _status(d.cfg)
        assert status.returncode == 1 and "FAILING" in status.stdout
        assert "! source simulator-0 down" in status.stdout
    finally:
        assert d.stop() == 0, d.output()


@pytest.mark.slow
def test_healthz_200_then_503_when_no_data_comes(tmp_path):
    port = _free_port()
    # one sample now, the next an hour of wall time later
    slow = _simulator({"A1": "sym_healthy"}, speedup=1, period_s=3600)
    d = Daemon(_config(tmp_path, port, slow, "health_no_data_s = 4"), port)
    try:
        code, body = d.healthz()
        assert code == 200, body
        _, body = _until(lambda: (r := d.healthz())[0] == 503 and r, what="503")
        (problem,) = body["problems"]
        assert problem.startswith("no data from any source for ") and problem.endswith("(limit 4 s)")
    finally:
        assert d.stop() == 0, d.output()


def test_http_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _config(tmp_path, port, _simulator({"A1": "sym_healthy"}, speedup=1, period_s=3600))
        r = subprocess.run([*SHORTWATCH, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"daemon.http: cannot listen on 127.0.0.1:{port}" in r.stderr


# ------------------------------------------------------------------ a reader that falls behind


class _LinePoster:
    """A log reader that POSTs its rows as text lines to an HTTP endpoint (a stand-in for the
    InfluxDB sink): a real connection that is refused while nothing listens there."""

    table = "sample"
    batch_rows = 500

    def __init__(self, url: str):
        self.name = "influx:sample"
        self.url = url

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        import asyncio

        body = "\n".join(f"sample,cell={r['cell']} voltage_V={r['voltage_V']} {r['time']}" for r in rows).encode()
        req = urllib.request.Request(self.url, data=body, method="POST")
        await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=5).read())


@pytest.mark.slow
async def test_a_reader_that_cannot_deliver_falls_behind_and_healthz_says_so(tmp_path):
    import asyncio
    import http.server
    import threading

    from shortwatch.cli import build_sources
    from shortwatch.daemon.health import watch
    from shortwatch.daemon.runner import Runner
    from shortwatch.daemon.storeview import StoreView
    from shortwatch.storage.sqlite import SqliteStore

    settings = parse_settings(
        {
            "daemon": {"state_dir": str(tmp_path), "health_backlog_s": 1.0, "http": ""},
            "sources": [{"type": "simulator", "speedup": 2000, "cells": {"A1": "sym_healthy"}}],
        }
    )
    port = _free_port()  # nothing listens yet: every delivery is refused
    store = SqliteStore(settings.store_path).open()
    reader = _LinePoster(f"http://127.0.0.1:{port}/write")
    runner = Runner(settings, build_sources(settings), store, live=True, use_checkpoints=False, consumers=[reader])
    model = HealthModel(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(watch(runner, model, stop))]

    async def until(check, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {model.figures}"
            await asyncio.sleep(0.1)

    received: list[bytes] = []
    server = None
    try:
        behind = "reader influx:sample behind: "
        await until(lambda: any(p.startswith(behind) for p in model.problems()), "the backlog problem")
        f = model.figures
        assert f.readers["influx:sample"].failures >= 1
        assert "Connection refused" in (f.readers["influx:sample"].last_error or "")
        assert f.backlogs["influx:sample"].rows > 0 and f.backlogs["influx:sample"].oldest_age_s > 1.0
        assert model.healthz()[0] == 503
        assert model.daemon_fields()["backlog_rows_influx_sample"] > 0

        class Accept(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Accept)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        await until(lambda: received, "the first delivery after the remote came back")
        # the reader catches up in order and the problem clears (the data keep coming meanwhile)
        await until(lambda: not any(p.startswith(behind) for p in model.problems()), "health to recover")
        assert model.figures.readers["influx:sample"].failures == 0
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        store.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    view = StoreView(settings.store_path)
    try:
        left = view.backlogs()["influx:sample"]
    finally:
        view.close()
    assert sum(len(b.splitlines()) for b in received) + left.rows == store.stats["rows"]["sample"]


def test_server_answers_on_ipv6_loopback_and_names_its_paths():
    from shortwatch.daemon.health import HealthServer

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    model = _model()
    model.figures = Figures(at=time.time(), started=time.time())
    server = HealthServer(model, "[::1]:0")
    try:
        server.start()
    except OSError as exc:  # IPv6 switched off on this host
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert _get(f"http://[::1]:{server.port}/healthz")[0] == 200
        code, body = _get(f"http://[::1]:{server.port}/")
        assert code == 404 and b"/healthz" in body and b"/metrics" in body
    finally:
        server.stop()


@pytest.mark.slow
def test_status_knows_a_running_daemon_without_http_by_its_lock(tmp_path):
    cfg = _config(tmp_path, 0, _simulator({"A1": "sym_healthy"}, speedup=1, period_s=3600))
    cfg.write_text(cfg.read_text().replace('http = "127.0.0.1:0"', 'http = ""'))
    proc = subprocess.Popen([*SHORTWATCH, "run", "--config", str(cfg)], stderr=subprocess.PIPE)
    try:
        r = _until(lambda: (s := _status(cfg)).returncode == 0 and s, what="status to see the daemon")
        assert f"daemon    running: shortwatch run (pid {proc.pid}) (daemon.http is off" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    r = _status(cfg)
    assert r.returncode == 3 and "not running (daemon.http is off)" in r.stdout


@pytest.mark.parametrize("bad", ["9108", "localhost", "127.0.0.1:", "127.0.0.1:99999", ":9108"])
def test_http_address_must_be_host_and_port(bad):
    from shortwatch.settings import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_settings({"daemon": {"http": bad}})
    (problem,) = err.value.problems
    assert problem.startswith("daemon.http: expected host:port such as 127.0.0.1:9108")


def test_http_defaults_to_loopback_and_empty_is_off():
    assert parse_settings({}).daemon.http == "127.0.0.1:9108"
    assert parse_settings({"daemon": {"http": ""}}).daemon.http == ""
    assert parse_settings({"daemon": {"http": "[::1]:9108"}}).daemon.http == "[::1]:9108"
