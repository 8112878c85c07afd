"""The daemon's own health: /healthz, Prometheus /metrics, and the `daemon` record.

How it fits together:

* ``HealthModel.update(runner)`` runs in the event loop (the ``watch`` task, every second)
  and takes a snapshot of the runner's figures: an immutable ``Figures`` swapped in whole,
  so the HTTP thread never sees half an update and the hot path pays nothing (the
  runner keeps its plain counters; nothing is incremented per sample for health's sake).
  Figures that need the store (alert transitions, readers' backlogs) are read every few
  seconds on a worker thread through a read-only connection.
* ``HealthServer`` serves /healthz and /metrics from a thread (prometheus-client's own
  threading WSGI server, the one its ``start_wsgi_server`` uses, with our app in front of
  its metrics app). A thread, not an asyncio handler: a thread still answers when the event
  loop is stuck, and /healthz can then say so (the snapshot stops getting younger), where
  an asyncio server would just hang. aiohttp is not a dependency, and one is not needed.
* /metrics comes from a registry of its own (not the process-global one), through a
  custom collector that renders the snapshot: prometheus-client's documented way to
  expose figures that live elsewhere.
* ``daemon_fields()`` is the same snapshot as one flat record for the ``daemon``
  measurement (the InfluxDB sink writes it every ``storage.health_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from shortwatch.aio import wait_event
from shortwatch.daemon.storeview import Backlog, StoreView
from shortwatch.settings import Settings

log = logging.getLogger(__name__)

STALL_S = 30.0  # /healthz fails when the event loop has not refreshed the figures for this long
STORE_STUCK_S = 60.0  # ... or when batches wait this long for SQLite after a write error
SLOW_EVERY_S = 5.0  # how often the store-backed figures are re-read
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class SourceFigures:
    items: int = 0
    last_data_at: float | None = None  # wall time of its last batch
    problem: str | None = None  # None: up


@dataclass(frozen=True)
class ReaderFigures:
    """A reader of the log (alerts JSONL, InfluxDB sink, a notifier) as its pump sees it."""

    delivered: int = 0  # rows delivered since start
    failures: int = 0  # consecutive failed attempts (0: delivering fine)
    last_error: str | None = None


@dataclass(frozen=True)
class Figures:
    """One consistent snapshot of the daemon's figures (all times are wall-clock Unix seconds,
    except cells' last sample times, which are data time)."""

    at: float
    started: float
    samples_accepted: int = 0
    items_in: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    queue_capacity: int = 0
    store_pending_batches: int = 0
    store_write_errors: int = 0
    store_last_error: str | None = None
    store_last_commit_at: float | None = None
    store_rows: dict[str, int] = field(default_factory=dict)
    sources: dict[str, SourceFigures] = field(default_factory=dict)
    cells: dict[str, tuple[float | None, str]] = field(default_factory=dict)  # cell -> (last sample, status)
    alerts_firing: dict[str, int] = field(default_factory=dict)  # by severity
    alert_transitions: dict[str, int] = field(default_factory=dict)  # by state, from the log
    backlogs: dict[str, Backlog] = field(default_factory=dict)  # by reader (cursor name), from the log
    readers: dict[str, ReaderFigures] = field(default_factory=dict)  # by reader, from its pump


class HealthModel:
    """The figures, the verdict on them, and their Prometheus rendering."""

    def __init__(self, settings: Settings, started: float | None = None):
        self.settings = settings
        self.started = time.time() if started is None else started
        self.figures = Figures(at=self.started, started=self.started)
        self._slow: tuple[dict[str, int], dict[str, Backlog]] = ({}, {})
        self.error: str | None = None  # why the last refresh failed
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # ---------------------------------------------------------------- updating (event loop)

    def set_slow(self, alert_transitions: dict[str, int], backlogs: dict[str, Backlog]) -> None:
        self._slow = (alert_transitions, backlogs)

    def update(self, runner: Any, now: float | None = None) -> Figures:
        """Snapshot the runner's figures (call in the event loop)."""
        now = time.time() if now is None else now
        pipeline = runner.pipeline
        firing = dict.fromkeys(SEVERITIES, 0)
        for f in pipeline.alerts.firing.values():
            firing[f.severity] = firing.get(f.severity, 0) + 1
        stats = runner.store.stats if runner.store is not None else {}
        sources = {}
        for src in runner.sources:
            problem = runner.source_problems.get(src.name)
            check = getattr(src, "problem", None)  # optional: a source that knows it is disconnected
            if problem is None and callable(check):
                problem = check()
            sources[src.name] = SourceFigures(
                runner.source_items.get(src.name, 0), runner.source_last_data.get(src.name), problem
            )
        transitions, backlogs = self._slow
        self.figures = Figures(
            at=now,
            started=self.started,
            samples_accepted=pipeline.samples_accepted,
            items_in=runner.items_in,
            rejected=dict(pipeline.rejects.counts),
            queue_depth=runner.queue.qsize(),
            queue_capacity=runner.queue.maxsize,
            store_pending_batches=stats.get("pending_batches", 0),
            store_write_errors=stats.get("errors", 0),
            store_last_error=stats.get("last_error"),
            store_last_commit_at=stats.get("last_commit_at"),
            store_rows=dict(stats.get("rows", {})),
            sources=sources,
            cells={c: (m.last_time, m.status) for c, m in pipeline.monitors.items()},
            alerts_firing=firing,
            alert_transitions=dict(transitions),
            backlogs=dict(backlogs),
            readers={p.consumer.name: ReaderFigures(p.delivered, p.failures, p.last_error) for p in runner.pumps},
        )
        return self.figures

    # ---------------------------------------------------------------- verdict

    def problems(self, now: float | None = None) -> list[str]:
        """What is wrong, one line each; empty when healthy."""
        f = self.figures
        now = time.time() if now is None else now
        d = self.settings.daemon
        out = []
        if self.error is not None:
            out.append(f"health figures cannot be taken: {self.error}")
        elif now - f.at > STALL_S:
            out.append(f"figures not refreshed for {now - f.at:.0f} s: the event loop is stalled")
        for name, s in f.sources.items():
            if s.problem:
                out.append(f"source {name} down: {s.problem}")
        last = max((s.last_data_at for s in f.sources.values() if s.last_data_at), default=None)
        silent = now - (last or f.started)
        if d.health_no_data_s and f.sources and silent > d.health_no_data_s:
            since = "since start" if last is None else f"for {silent:.0f} s"
            out.append(f"no data from any source {since} (limit {d.health_no_data_s:.0f} s)")
        if f.store_pending_batches and f.store_last_error:
            waiting = now - (f.store_last_commit_at or f.started)
            if waiting > STORE_STUCK_S:
                out.append(
                    f"store failing: {f.store_pending_batches} batches waiting {waiting:.0f} s; "
                    f"last error: {f.store_last_error}"
                )
        for reader, b in f.backlogs.items():
            if b.oldest_age_s is not None and b.oldest_age_s > d.health_backlog_s:
                out.append(
                    f"reader {reader} behind: {b.rows} rows unsent, the oldest for {b.oldest_age_s:.0f} s "
                    f"(limit {d.health_backlog_s:.0f} s)"
                )
        return out

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body): 200 when healthy, 503 with the reasons otherwise."""
        problems = self.problems()
        sources = {
            name: {"items": s.items, "last_data_at": s.last_data_at, "problem": s.problem}
            for name, s in self.figures.sources.items()
        }
        readers = {
            name: {"delivered": r.delivered, "failures": r.failures, "last_error": r.last_error}
            for name, r in self.figures.readers.items()
        }
        body = {
            "status": "failing" if problems else "ok",
            "problems": problems,
            "figures": self.daemon_fields(),
            "sources": sources,
            "readers": readers,
        }
        return (503 if problems else 200), body

    def daemon_fields(self) -> dict[str, Any]:
        """The snapshot as one flat record (InfluxDB measurement ``daemon``; /healthz's figures).

        Always the same core keys (zeros when there is nothing), so dashboards find them.
        """
        f = self.figures
        problems = self.problems(f.at)
        out: dict[str, Any] = {
            "healthy": 0 if problems else 1,
            "problems": "; ".join(problems),
            "uptime_s": round(f.at - f.started, 3),
            "samples_accepted": f.samples_accepted,
            "items_in": f.items_in,
            "rejected": sum(f.rejected.values()),
            "queue_depth": f.queue_depth,
            "store_pending_batches": f.store_pending_batches,
            "store_write_errors": f.store_write_errors,
            "sources_down": sum(1 for s in f.sources.values() if s.problem),
            "cells": len(f.cells),
            "backlog_rows": sum(b.rows for b in f.backlogs.values()),
            "backlog_age_s": max((b.oldest_age_s or 0.0 for b in f.backlogs.values()), default=0.0),
            "readers_failing": sum(1 for r in f.readers.values() if r.failures),
        }
        for severity in SEVERITIES:
            out[f"alerts_firing_{severity}"] = f.alerts_firing.get(severity, 0)
        for reason, n in sorted(f.rejected.items()):
            out[f"rejected_{_key(reason)}"] = n
        for reader, b in sorted(f.backlogs.items()):
            out[f"backlog_rows_{_key(reader)}"] = b.rows
            out[f"backlog_age_s_{_key(reader)}"] = b.oldest_age_s or 0.0
        return out


def _key(name: str) -> str:
    """A name as a field-key suffix: ``influx:sample`` -> ``influx_sample``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


class _Collector(Collector):
    """Renders the current snapshot as Prometheus metrics at each scrape."""

    def __init__(self, model: HealthModel):
        self.model = model

    def collect(self) -> Iterator[Metric]:
        m = self.model
        f = m.figures
        g = GaugeMetricFamily
        c = CounterMetricFamily
        yield g("shortwatch_healthy", "1 when /healthz answers 200", value=0 if m.problems() else 1)
        yield g("shortwatch_start_time_seconds", "Unix time the daemon started", value=f.started)
        yield g("shortwatch_figures_age_seconds", "age of the figures snapshot", value=max(0.0, time.time() - f.at))
        yield c("shortwatch_samples_accepted", "samples accepted into the log", value=f.samples_accepted)
        items = c("shortwatch_items_received", "items (samples or rejects) received, by source", labels=["source"])
        up = g("shortwatch_source_up", "1 when the source runs without a problem", labels=["source"])
        last = g("shortwatch_source_last_data_timestamp_seconds", "wall time of its last batch", labels=["source"])
        for name, s in f.sources.items():
            items.add_metric([name], s.items)
            up.add_metric([name], 0 if s.problem else 1)
            if s.last_data_at is not None:
                last.add_metric([name], s.last_data_at)
        yield from (items, up, last)
        rej = c("shortwatch_rejected", "input rejected to quarantine, by reason", labels=["reason"])
        for reason, n in f.rejected.items():
            rej.add_metric([reason], n)
        yield rej
        yield g("shortwatch_queue_depth", "batches waiting between sources and the pipeline", value=f.queue_depth)
        yield g("shortwatch_queue_capacity", "the queue's bound (daemon.queue_batches)", value=f.queue_capacity)
        yield g(
            "shortwatch_store_pending_batches",
            "batches handed to SQLite, not yet committed",
            value=f.store_pending_batches,
        )
        yield c("shortwatch_store_write_errors", "failed SQLite transactions (retried)", value=f.store_write_errors)
        if f.store_last_commit_at is not None:
            yield g(
                "shortwatch_store_last_commit_timestamp_seconds",
                "wall time of the last commit",
                value=f.store_last_commit_at,
            )
        rows = c("shortwatch_store_rows", "rows written to the log since start, by table", labels=["table"])
        for table, n in f.store_rows.items():
            rows.add_metric([table], n)
        yield rows
        cell_last = g(
            "shortwatch_cell_last_sample_timestamp_seconds", "data time of the newest sample", labels=["cell"]
        )
        status = g("shortwatch_cell_status", "1 for the cell's current status", labels=["cell", "status"])
        for cell, (t, st) in f.cells.items():
            if t is not None and math.isfinite(t):
                cell_last.add_metric([cell], t)
            status.add_metric([cell, st], 1)
        yield from (cell_last, status)
        firing = g("shortwatch_alerts_firing", "alerts firing now, by severity", labels=["severity"])
        for severity, n in f.alerts_firing.items():
            firing.add_metric([severity], n)
        yield firing
        trans = c("shortwatch_alert_transitions", "alert transitions in the log, by state", labels=["state"])
        for state, n in f.alert_transitions.items():
            trans.add_metric([state], n)
        yield trans
        rows_b = g("shortwatch_backlog_rows", "log rows a reader has not delivered yet", labels=["reader"])
        age_b = g("shortwatch_backlog_oldest_age_seconds", "age of the oldest undelivered row", labels=["reader"])
        for reader, b in f.backlogs.items():
            rows_b.add_metric([reader], b.rows)
            age_b.add_metric([reader], b.oldest_age_s or 0.0)
        yield from (rows_b, age_b)
        sent = c("shortwatch_reader_delivered_rows", "log rows delivered since start, by reader", labels=["reader"])
        failing = g(
            "shortwatch_reader_failed_attempts",
            "consecutive failed deliveries (write errors to InfluxDB, a notifier...), by reader; 0 = fine",
            labels=["reader"],
        )
        for reader, r in f.readers.items():
            sent.add_metric([reader], r.delivered)
            failing.add_metric([reader], r.failures)
        yield from (sent, failing)


def _read_slow(view: StoreView) -> tuple[dict[str, int], dict[str, Backlog]]:
    """The figures that need a query: alert transitions by state, readers' backlogs."""
    return view.alert_transitions(), view.backlogs()


async def watch(
    runner: Any,
    model: HealthModel,
    stop: asyncio.Event,
) -> None:
    """Refresh the figures every second until ``stop``; store-backed ones every few seconds.

    The store is read on a thread of its own and never awaited inline: the shared worker
    threads can all be busy waiting for the store while a backlog drains, and the
    figures must keep coming exactly then.
    """
    loop = asyncio.get_running_loop()
    view = StoreView(runner.settings.store_path) if runner.store is not None else None
    reader = ThreadPoolExecutor(1, thread_name_prefix="health-store")
    slow: asyncio.Future[tuple[dict[str, int], dict[str, Backlog]]] | None = None
    last_slow = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if slow is not None and slow.done():
                try:
                    model.set_slow(*slow.result())
                except Exception as exc:  # the daemon goes on; /healthz judges the store by its own figures
                    log.warning("health: reading the store failed: %s", exc)
                slow = None
            if view is not None and slow is None and now - last_slow >= SLOW_EVERY_S:
                last_slow = now
                slow = loop.run_in_executor(reader, _read_slow, view)
            try:
                model.update(runner)
            except Exception as exc:  # health must not die with the daemon running on unwatched
                if model.error is None:
                    log.exception("health: the figures cannot be taken")
                model.error = f"{type(exc).__name__}: {exc}"
            else:
                model.error = None
            await wait_event(stop, 1.0)
    finally:
        if slow is not None:
            with contextlib.suppress(Exception):
                await slow
        reader.shutdown(wait=True)
        if view is not None:
            view.close()


# ---------------------------------------------------------------- HTTP


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s would flood the log."""


def _app(model: HealthModel):
    metrics = make_wsgi_app(model.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            code, body = model.healthz()
            start_response(
                "200 OK" if code == 200 else "503 Service Unavailable", [("Content-Type", "application/json")]
            )
            return [json.dumps(body, indent=1).encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"shortwatch: see /healthz and /metrics\n"]

    return app


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _ThreadingWSGIServer6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class HealthServer:
    """/healthz and /metrics on ``address`` (host:port), served from a daemon thread."""

    def __init__(self, model: HealthModel, address: str):
        self.model = model
        self.host, self.port = parse_address(address)
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server_class = _ThreadingWSGIServer6 if ":" in self.host else ThreadingWSGIServer
        self._server = make_server(self.host, self.port, _app(self.model), server_class, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        log.info("health: http://%s:%d/healthz and /metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
