"""The `shortwatch` command line: run, demo, replay, export, report, silence, ack, alerts test,
check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from shortwatch import __version__
from shortwatch.alerts.jsonl import JsonlAlertWriter
from shortwatch.daemon.lock import StateDirBusyError, state_dir_lock
from shortwatch.daemon.runner import Runner, Source
from shortwatch.model import RecordBatch
from shortwatch.sensors.formats import CONFIG_FORMATS
from shortwatch.settings import (
    ConfigError,
    FileSource,
    MqttSource,
    SerialSource,
    Settings,
    SimulatorSource,
    load_settings,
    parse_settings,
)

log = logging.getLogger("shortwatch")


def _setup_logging(level: str, console: Any = None) -> None:
    """Log lines to stderr; through a rich console when a live display (progress bar) owns
    the terminal, so the lines print above it instead of breaking it."""
    if console is not None:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(level=getattr(logging, level), format="%(name)s: %(message)s", handlers=[handler])
        return
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(path: str | None) -> Settings:
    if path is None:
        return demo_settings()
    return load_settings(path)


def demo_settings() -> Settings:
    """The embedded demo config (the same text as config/demo.toml)."""
    import tomllib

    text = resources.files("shortwatch").joinpath("demo.toml").read_text(encoding="utf-8")
    return parse_settings(tomllib.loads(text))


def build_sources(settings: Settings) -> list[Source]:
    """Instantiate the configured sources (simulator cells get default specs if unconfigured)."""
    from shortwatch.sensors.file_source import FileSource as FileTail
    from shortwatch.sensors.simulator import SimulatorSourceRunner, default_spec

    sources: list[Source] = []
    for n, cfg in enumerate(settings.sources):
        if isinstance(cfg, SimulatorSource):
            for cell, scenario in cfg.cells.items():
                if cell not in settings.cells:
                    settings.cells[cell] = default_spec(scenario)
            runner = SimulatorSourceRunner(cfg, settings.cell_spec)
            runner.name = f"simulator-{n}"
            sources.append(runner)
        elif isinstance(cfg, MqttSource):
            from shortwatch.sensors.mqtt import MqttSourceRunner

            sources.append(MqttSourceRunner(cfg, station=settings.daemon.station, name=f"mqtt-{n}"))
        elif isinstance(cfg, SerialSource):
            from shortwatch.sensors.serial_source import SerialSourceRunner

            sources.append(SerialSourceRunner(cfg, settings.cell_spec, name=f"serial-{n}"))
        elif isinstance(cfg, FileSource):
            sources.append(
                FileTail(
                    cfg.paths,
                    fmt=cfg.format,
                    cell=cfg.cell,
                    tz=settings.daemon.timezone,
                    follow=cfg.follow,
                    poll_s=cfg.poll_s,
                    name=f"file-{n}",
                    retire_after_s=cfg.retire_after_s,
                    options=cfg.format_options(),
                    state_dir=settings.daemon.state_dir,
                )
            )
    return sources


class UsageError(Exception):
    """A problem the user can fix outside shortwatch (a path, a permission): one line, exit 2."""


def _check_writable(folder: Path, what: str) -> None:
    """Fail early, with the path, rather than with a traceback from deep inside SQLite or the
    checkpoint writer. Trying to create a file is the only test that also sees read-only
    mounts and ACLs (os.access does not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {folder.absolute()} is not writable ({exc.strerror})") from None


def _open_store(settings: Settings, enabled: bool = True):
    if not enabled:
        return None
    from shortwatch.storage.sqlite import SqliteStore

    path = settings.store_path
    _check_writable(path.parent, "the store's folder")
    store = SqliteStore(
        path,
        station=settings.daemon.station,
        max_pending_batches=settings.storage.max_pending_batches,
        quarantine_rows_per_reason=settings.storage.quarantine_rows_per_reason,
    )
    try:
        store.open()
    except sqlite3.Error as exc:  # e.g. a read-only store file in a writable folder
        raise UsageError(f"cannot open the store {path}: {exc} (is it writable?)") from None
    return store


class _AlertCollector:
    """The demo's reader of the log: this run's alert events, in order."""

    name = "demo"
    table = "alert"
    batch_rows = 500
    ephemeral = True

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        self.events.extend(rows)


# ---------------------------------------------------------------- commands


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    print(
        f"{args.config}: OK ({len(settings.cells)} cells, {len(settings.sources)} sources, "
        f"storage {settings.storage.backend} at {settings.store_path})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # a stop request while starting up (opening the store, reading checkpoints) is kept, not fatal
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early_stop.append(signum))
    settings = load_settings(args.config)
    _setup_logging(settings.daemon.log_level)
    if not settings.sources:
        raise ConfigError(["sources: the daemon needs at least one [[sources]] entry"])
    _check_writable(settings.daemon.state_dir, "state_dir")
    with state_dir_lock(settings.daemon.state_dir, "run"):
        return _run_daemon(settings, early_stop)


def _influx_sink(settings: Settings, store: Any) -> Any:
    """The InfluxDB sink (its readers follow the log) when [storage] backend = "influxdb"."""
    if store is None or settings.storage.backend != "influxdb":
        return None
    from shortwatch.storage.influx import InfluxSink

    return InfluxSink(settings.storage, settings.daemon.station, store)


def _run_daemon(settings: Settings, early_stop: list[int]) -> int:
    from shortwatch.daemon.health import HealthModel, HealthServer, watch

    sources = build_sources(settings)
    store = _open_store(settings)
    consumers: list[Any] = []
    if settings.alerts.jsonl_path:
        consumers.append(
            JsonlAlertWriter(
                settings.alerts.jsonl_path,
                max_bytes=int(settings.alerts.jsonl_max_mb * 1e6),
                keep=settings.alerts.jsonl_keep,
            )
        )
    from shortwatch.alerts.notify import build_consumers

    consumers += build_consumers(settings, store, live=True, console=True)
    sink = _influx_sink(settings, store)
    if sink is not None:
        consumers.extend(sink.readers)
        sink.restore_alert(store.read_alerts())
    runner: Runner | None = None

    async def main() -> None:
        nonlocal runner
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if early_stop:
            stop.set()
        runner = Runner(settings, sources, store, live=True, use_checkpoints=True, consumers=consumers, drain_s=5.0)
        log.info("shortwatch %s running: %d sources, state in %s", __version__, len(sources), settings.daemon.state_dir)
        health = HealthModel(settings)
        server = HealthServer(health, settings.daemon.http) if settings.daemon.http else None
        if server is not None:
            try:
                server.start()
            except OSError as exc:
                raise ConfigError(
                    [
                        f"daemon.http: cannot listen on {settings.daemon.http}: {exc.strerror} "
                        '(another daemon there? choose another port, or "" for off)'
                    ]
                ) from None
        watcher = asyncio.create_task(watch(runner, health, stop), name="health")
        helpers: list[asyncio.Task[None]] = []
        if sink is not None:
            log.info("sending to %s", sink.description)
            helpers.append(asyncio.create_task(sink.watch_backlog(lambda ev: store.write(RecordBatch(alerts=[ev])))))
            # the `daemon` measurement: the health model's figures beside the sink's own
            helpers.append(asyncio.create_task(sink.report_health(health.daemon_fields)))
        try:
            await runner.run(stop)
        finally:
            stop.set()
            await watcher
            for task in helpers:
                task.cancel()
            if sink is not None:
                await sink.close()
            if server is not None:
                server.stop()
        log.info("stopped: %d items in, rejected %s", runner.items_in, dict(runner.pipeline.rejects.counts))

    try:
        asyncio.run(main())
    finally:
        for c in consumers:
            c.close()
        failed = _close_store(store)
    if failed or (runner is not None and runner.store_failed):
        print(f"shortwatch: {failed or runner.store_failed}", file=sys.stderr)  # type: ignore[union-attr]
        print("shortwatch: stopped with data not stored; the next start reads it again", file=sys.stderr)
        return 1
    return 0


def _close_store(store: Any) -> str | None:
    """Close the store, giving a writer that cannot write a bounded time; why it failed, or None."""
    if store is None:
        return None
    from shortwatch.storage.sqlite import StoreClosedError

    try:
        store.close(timeout=10.0)
    except StoreClosedError as exc:
        return str(exc)
    return None


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    from shortwatch.sensors.file_source import FileSource as FileTail

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"replay: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.notify and args.no_store:
        print("replay: --notify reads the stored alert log; it cannot go with --no-store", file=sys.stderr)
        return 2
    if not args.no_store:
        _check_writable(settings.daemon.state_dir, "state_dir")
    lock = contextlib.nullcontext() if args.no_store else state_dir_lock(settings.daemon.state_dir, "replay")
    signals: list[signal.Signals] = []
    with lock:
        store = _open_store(settings, enabled=not args.no_store)
        total = sum(Path(f).stat().st_size for f in args.files)
        offsets: dict[str, int] = {}
        progress, console = _progress_bar(total, enabled=sys.stderr.isatty() and not args.no_progress)
        _setup_logging(args.log_level or "WARNING", console)
        source = FileTail(
            list(args.files),
            fmt=args.format,
            tz=settings.daemon.timezone,
            follow=False,
            name="replay",
            on_progress=lambda path, off: (offsets.__setitem__(path, off), progress(sum(offsets.values()))),
            options=next(
                (c.format_options() for c in settings.sources if isinstance(c, FileSource) and c.format == args.format),
                {},
            ),
        )
        out = open(args.alerts_out, "w", encoding="utf-8") if args.alerts_out else sys.stdout  # noqa: SIM115
        # this run's transitions, read from the log like every other reader's (from its head at the start)
        alerts_out = JsonlAlertWriter(stream=out, name="replay-out", ephemeral=True)
        consumers: list[Any] = [alerts_out]
        if args.notify:  # a replay sends nothing unless asked: it is usually old data
            from shortwatch.alerts.notify import build_consumers

            consumers += build_consumers(settings, store, live=False, console=False)
        t0 = time.perf_counter()
        sink = _influx_sink(settings, store)
        consumers += sink.readers if sink is not None else []
        # replay is the backfill: it waits (bounded) for InfluxDB to confirm what it read
        drain = {} if sink is None else {"drain_s": args.influx_timeout}
        runner = Runner(settings, [source], store, live=False, use_checkpoints=False, consumers=consumers, **drain)

        async def main() -> None:
            # Ctrl-C or SIGTERM: stop reading, store what was read, print the summary. A second
            # one gets the default behaviour (stop at once), for a user who cannot wait.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal(sig: signal.Signals) -> None:
                signals.append(sig)
                stop.set()
                loop.remove_signal_handler(sig)

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig)
            try:
                await runner.run(stop)
            finally:
                if sink is not None:
                    await sink.close()

        try:
            asyncio.run(main())
        finally:
            progress(None)
            failed = _close_store(store)
            if out is not sys.stdout:
                out.close()
    dt = time.perf_counter() - t0
    for path, why in source.failed.items():
        print(f"replay: could not read {path}: {why}", file=sys.stderr)
    if signals:
        print(f"replay: stopped by {signals[0].name}; the rows read so far are stored", file=sys.stderr)
    rejected = dict(runner.pipeline.rejects.counts)
    print(
        f"replayed {runner.items_in} rows from {len(args.files)} file(s) in {dt:.1f} s "
        f"({runner.items_in / dt if dt else 0:,.0f} rows/s); accepted {runner.pipeline.samples_accepted}; "
        f"cells {len(runner.pipeline.monitors)}; input problems {rejected or 'none'}",
        file=sys.stderr,
    )
    if failed or runner.store_failed:
        print(f"replay: {failed or runner.store_failed}; what was not stored is not imported", file=sys.stderr)
        return 1
    if signals:
        return 128 + signals[0].value
    if source.failed:
        return 1
    if sink is not None:
        return _report_influx(sink, runner)
    return 0


def _report_influx(sink: Any, runner: Runner) -> int:
    """After a replay: did InfluxDB confirm everything? 0 if so, 3 (and what waits) if not."""
    pending = {n.removeprefix("influx:"): k for n, k in runner.pending_after_drain.items() if n.startswith("influx:")}
    stats = sink.writer.stats
    if not any(pending.values()):
        print(
            f"InfluxDB ({sink.description}) confirmed every row: {stats['points']} points written"
            + (f", {sink.quarantined} refused (in the quarantine)" if sink.quarantined else ""),
            file=sys.stderr,
        )
        return 0
    waiting = ", ".join(f"{t} {k}" for t, k in pending.items() if k)
    print(
        f"replay: InfluxDB ({sink.description}) has not confirmed {sum(pending.values())} rows yet ({waiting}): "
        f"{stats['last_error'] or 'still sending'}. They wait in the local log; the next `shortwatch run` or "
        "`shortwatch replay` sends them.",
        file=sys.stderr,
    )
    return 3


def _progress_bar(total: int, enabled: bool):
    """A rich progress bar over bytes read: (update(done) / update(None) to stop, its console)."""
    if not enabled:
        return (lambda done: None), None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    prog = Progress(
        "replay", BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True, console=Console(stderr=True)
    )
    task = prog.add_task("replay", total=total)
    prog.start()

    def update(done: int | None) -> None:
        if done is None:
            prog.stop()
        else:
            prog.update(task, completed=done)

    return update, prog.console


def _parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"time {text!r}: use ISO-8601 with an offset, or Unix seconds") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time {text!r} needs a UTC offset, e.g. {text}+00:00")
    return dt.timestamp()


def cmd_export(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    from shortwatch.sensors.canonical_csv import write_csv

    if not settings.store_path.exists():
        print(f"export: no store at {settings.store_path}", file=sys.stderr)
        return 2
    store = _open_store(settings)
    try:
        if args.cell is not None and args.cell not in (stored := store.cells()):
            shown = ", ".join(stored[:50]) + (f" and {len(stored) - 50} more" if len(stored) > 50 else "")
            print(
                f"export: cell {args.cell!r} is not in the store at {settings.store_path}; "
                f"stored cells: {shown or 'none'}",
                file=sys.stderr,
            )
            return 2
        samples = store.read_samples(args.cell, _parse_time(args.since), _parse_time(args.until))
        if args.out == "-":
            n = write_csv(samples, sys.stdout)
        else:
            with open(args.out, "w", encoding="utf-8", newline="") as fh:
                n = write_csv(samples, fh)
    finally:
        store.close()
    print(f"exported {n} samples to {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The report pages and plots for any stored data (cells, a time range)."""
    settings = load_settings(args.config)
    from shortwatch.report import build_report

    if not settings.store_path.exists():
        print(f"report: no store at {settings.store_path}", file=sys.stderr)
        return 2
    since, until = _parse_time(args.since), _parse_time(args.until)
    store = _open_store(settings)
    try:
        known = store.cells()
        unknown = [c for c in args.cell or [] if c not in known]
        if unknown:
            print(f"report: no samples for cell(s) {', '.join(unknown)}; stored: {', '.join(known)}", file=sys.stderr)
            return 2
        index = build_report(
            store,
            Path(args.out_dir),
            cells=args.cell or None,
            specs=settings.cell_spec,
            title=f"shortwatch report: {settings.daemon.station}",
            since=since,
            until=until,
        )
    finally:
        store.close()
    print(f"report: {index.resolve()}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    """Add, list or end silences and acknowledgements (a file under state_dir the daemon reads)."""
    from shortwatch.alerts.silences import Silences, parse_duration
    from shortwatch.model import iso_time

    settings = load_settings(args.config)
    silences = Silences(settings.daemon.state_dir)
    kind = args.command
    if args.expire:
        if not silences.expire(args.expire):
            print(f"{kind}: no silence or acknowledgement with id {args.expire}", file=sys.stderr)
            return 2
        print(f"{args.expire} ended")
        return 0
    if args.list:
        active = silences.active()
        for s in active:
            until = iso_time(round(s.until))
            print(f"{s.id}  {s.kind:7} cell={s.cell} detector={s.detector} until {until}  {s.by} {s.comment}")
        if not active:
            print("no active silences or acknowledgements")
        return 0
    if args.cell is None and args.detector is None:
        print(f"{kind}: give --cell and/or --detector (globs; '*' for everything)", file=sys.stderr)
        return 2
    try:
        duration = parse_duration(args.for_)
    except ValueError as exc:
        print(f"{kind}: {exc}", file=sys.stderr)
        return 2
    s = silences.add(kind, duration, args.cell or "*", args.detector or "*", args.by, args.comment or "")
    what = "silenced" if kind == "silence" else "acknowledged (no reminders)"
    print(f"{s.id}: cell={s.cell} detector={s.detector} {what} until {iso_time(round(s.until))}")
    return 0


def cmd_alerts_test(args: argparse.Namespace) -> int:
    """Send a marked test alert with a sample plot through each notifier; print each answer."""
    from shortwatch.alerts.notifiers import Message, build_notifier
    from shortwatch.alerts.testalert import sample_png, test_event

    settings = load_settings(args.config)
    chosen = [n for n in settings.alerts.notifiers if args.notifier in (None, n.name)]
    if not chosen:
        names = ", ".join(n.name for n in settings.alerts.notifiers) or "none configured"
        print(f"alerts test: no notifier {args.notifier!r} ([[alerts.notifiers]]: {names})", file=sys.stderr)
        return 2
    event = test_event(settings.daemon.station)
    png = sample_png(event)

    async def send_all() -> list[tuple[str, bool, str]]:
        results = []
        for cfg in chosen:
            try:
                n = build_notifier(cfg, settings.daemon.station, settings.daemon.state_dir)
                answer = await asyncio.wait_for(
                    n.send(Message([event], images={event["id"]: png}, test=True)), cfg.timeout_s + 5
                )
                results.append((cfg.name, True, answer))
            except Exception as exc:  # report every notifier's outcome, whatever failed
                results.append((cfg.name, False, f"{type(exc).__name__}: {exc}"))
        return results

    results = asyncio.run(send_all())
    for name, ok, answer in results:
        print(f"{name:20} {'OK    ' if ok else 'FAILED'} {answer}")
    return 0 if all(ok for _, ok, _ in results) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    _setup_logging("WARNING")
    from rich.console import Console
    from rich.live import Live

    from shortwatch.console import CellTable
    from shortwatch.report import build_report

    _check_writable(settings.daemon.state_dir, "state_dir")
    for path in (settings.store_path, settings.daemon.state_dir / "checkpoint.json"):
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)  # a demo starts from scratch
    shutil.rmtree(settings.daemon.state_dir / "notify", ignore_errors=True)
    sources = build_sources(settings)
    store = _open_store(settings)
    collector = _AlertCollector()
    alerts = collector.events
    from shortwatch.alerts.notify import build_consumers

    notifiers = build_consumers(settings, store, live=False, console=False)  # those a --config names
    runner = Runner(settings, sources, store, live=False, use_checkpoints=False, consumers=[collector, *notifiers])
    console = Console()
    if not console.is_terminal:
        console = Console(width=220)  # a log or pipe: print the final table at full width

    table = CellTable()

    def snapshot_table() -> Any:
        snaps = [m.snapshot() for m in runner.pipeline.monitors.values()]
        title = f"shortwatch demo: {len(snaps)} simulated cells, {len(alerts)} alert events"
        return table.render(snaps, title=title, width=console.width)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_later(args.seconds, stop.set)
        task = asyncio.create_task(runner.run(stop))
        if console.is_terminal:
            with Live(snapshot_table(), console=console, refresh_per_second=4) as live:
                while not task.done():
                    await asyncio.wait([task], timeout=0.25)
                    live.update(snapshot_table())
        else:
            while not task.done():  # no display, but the table keeps the last known per-cycle values
                await asyncio.wait([task], timeout=0.25)
                snapshot_table()
        await task

    try:
        asyncio.run(main())
        out_dir = Path(args.out)
        index = build_report(store, out_dir, specs=settings.cell_spec, title="shortwatch demo")
    finally:
        store.close()
    if not console.is_terminal:
        console.print(snapshot_table())
    for e in alerts:
        console.print(
            f"{e['time'][:19]}  {e['cell']:4} {e['severity']:8} {e['state']:8} {e['detector']}: {e['summary']}"
        )
    console.print(f"report: {index.resolve()}")
    return 0


def cmd_influx_setup(args: argparse.Namespace) -> int:
    """Create the database / bucket, retention and DBRP mapping the config names."""
    settings = load_settings(args.config)
    st = settings.storage
    if st.backend != "influxdb":
        print(f'{args.config}: [storage] backend is {st.backend!r}; set backend = "influxdb" first', file=sys.stderr)
        return 2
    from shortwatch.storage.influx_setup import setup

    result = setup(st)
    for line in result.done:
        print(f"ok: {line}")
    if result.ok:
        return 0
    print(f"influx setup ({st.api} at {st.url}): {result.denied}", file=sys.stderr)
    print("An administrator can run instead:", file=sys.stderr)
    for cmd in result.commands:
        print(f"  {cmd}", file=sys.stderr)
    return 1


def cmd_detectors(args: argparse.Namespace) -> int:
    """Every detector, the cells it watches, and its parameters with their defaults."""
    import inspect

    from shortwatch.detectors.registry import DETECTORS, LIVE_ONLY

    for name, cls in DETECTORS.items():
        doc = inspect.getdoc(inspect.getmodule(cls)) or ""
        live = ", live mode only" if name in LIVE_ONLY else ""
        print(f"{name}  (kind {cls.kind}; cells: {', '.join(cls.cell_kinds)}{live})")
        print(f"    {doc.splitlines()[0] if doc else ''}")
        for key, (default, meaning) in cls.params.items():
            print(f"    {key} = {default!r}".ljust(44) + f"  # {meaning}")
        print()
    print("Set them for every cell under [detectors.NAME], per cell under [cells.X.detectors.NAME];")
    print("enabled = false switches a detector off.")
    return 0


def cmd_dashboards_export(args: argparse.Namespace) -> int:
    from shortwatch.dashboards.provisioning import export

    settings = load_settings(args.config) if args.config else None
    files = export(Path(args.dir), settings, dashboards_path=args.dashboards_path)
    for f in files:
        print(f)
    print(
        f"wrote {len(files)} files; copy {Path(args.dir) / 'provisioning'} into Grafana's provisioning folder",
        file=sys.stderr,
    )
    return 0


def cmd_dashboards_push(args: argparse.Namespace) -> int:
    from grafana_client.client import GrafanaException
    from niquests.exceptions import RequestException

    from shortwatch.dashboards.push import push

    settings = load_settings(args.config)
    try:
        push(settings.grafana)
    except (GrafanaException, RequestException, OSError) as exc:
        print(f"dashboards push: {settings.grafana.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shortwatch.daemon.status import render

    text, code = render(load_settings(args.config))
    print(text)
    return code


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="shortwatch", description="Watch solid-state lithium-metal cells for the signs of an internal short."
    )
    ap.add_argument("--version", action="version", version=f"shortwatch {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the live daemon")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulate 8 cells for about a minute, then write a report")
    p.add_argument("--config", help="default: the embedded demo config (config/demo.toml)")
    p.add_argument("--seconds", type=float, default=90.0, help="wall-time limit (default 90)")
    p.add_argument("--out", default="demo-report", help="report folder (default demo-report)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("replay", help="run recorded files through the pipeline as fast as possible")
    p.add_argument("--config", required=True)
    p.add_argument("--alerts-out", help="alert transitions as JSON lines (default stdout)")
    p.add_argument("--no-store", action="store_true", help="do not write to the configured storage")
    p.add_argument("--notify", action="store_true", help="also send the transitions through the notifiers")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", *CONFIG_FORMATS],
        help='columns: the columns map of the config\'s first file source with format = "columns"',
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--influx-timeout",
        type=float,
        default=60.0,
        help="with [storage] backend = influxdb: seconds to wait at the end for InfluxDB to confirm (default 60)",
    )
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="write stored samples as canonical CSV")
    p.add_argument("--config", required=True)
    p.add_argument("--cell")
    p.add_argument("--since", help="ISO-8601 with offset, or Unix seconds (inclusive)")
    p.add_argument("--until", help="ISO-8601 with offset, or Unix seconds (exclusive)")
    p.add_argument("out", help="output CSV path, or - for stdout")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write the report pages and plots for stored data")
    p.add_argument("--config", required=True)
    p.add_argument("--cell", action="append", help="only this cell (repeat for several); default: all")
    p.add_argument("--since", help="ISO-8601 with offset, or Unix seconds (inclusive)")
    p.add_argument("--until", help="ISO-8601 with offset, or Unix seconds (exclusive)")
    p.add_argument("out_dir", help="folder for index.html and the PNGs")
    p.set_defaults(func=cmd_report)

    for kind, text in (
        ("silence", "hold back alerts of a cell or detector until the silence expires"),
        ("ack", "acknowledge alerts of a cell or detector: no reminders until it expires"),
    ):
        p = sub.add_parser(kind, help=text)
        p.add_argument("--config", required=True)
        p.add_argument("--cell", help="cell glob ('_station' for alerts about a source or the daemon)")
        p.add_argument("--detector", help="detector glob")
        p.add_argument("--for", dest="for_", default="2h" if kind == "silence" else "24h", help="e.g. 30m, 2h, 1d")
        p.add_argument("--by", default=os.environ.get("USER", ""), help="who (default: $USER)")
        p.add_argument("--comment")
        p.add_argument("--list", action="store_true", help="list the active ones")
        p.add_argument("--expire", metavar="ID", help="end one now")
        p.set_defaults(func=cmd_silence)

    p = sub.add_parser("alerts", help="alert tools: `alerts test` sends a test alert through each notifier")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True)
    t = alerts_sub.add_parser("test", help="send a marked test alert with a sample plot; print each server's answer")
    t.add_argument("--config", required=True)
    t.add_argument("--notifier", help="only this notifier (its name); default: every one")
    t.set_defaults(func=cmd_alerts_test)

    p = sub.add_parser("detectors", help="list the detectors and their parameters with defaults")
    p.set_defaults(func=cmd_detectors)

    p = sub.add_parser("dashboards", help="Grafana dashboards: export provisioning files, or push to Grafana")
    dsub = p.add_subparsers(dest="dashboards_command", required=True)
    d = dsub.add_parser("export", help="write the dashboards and Grafana provisioning files into DIR")
    d.add_argument("dir")
    d.add_argument("--config", help="take the data source (URL, database, uid) from this config")
    d.add_argument(
        "--dashboards-path", help="where Grafana will read the JSON files (default: DIR/dashboards, absolute)"
    )
    d.set_defaults(func=cmd_dashboards_export)
    d = dsub.add_parser("push", help="create or overwrite the dashboards in Grafana ([grafana] url and token)")
    d.add_argument("--config", required=True)
    d.set_defaults(func=cmd_dashboards_push)

    p = sub.add_parser("status", help="is the daemon working? (exit 0 healthy, 1 failing, 3 not running)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("influx", help="InfluxDB: set up what the config names")
    influx = p.add_subparsers(dest="influx_command", required=True)
    p = influx.add_parser("setup", help="create the database/bucket, retention policy and DBRP mapping")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_influx_setup)

    p = sub.add_parser("check-config", help="validate a config file and list every problem")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)
    return ap


def _tune_gc() -> None:
    """Samples are many, short-lived and free of reference cycles: collecting the youngest
    generation every 700 allocations (the default) costs ~13 % of replay time for nothing."""
    gc.set_threshold(50_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "replay", "demo"):
        _tune_gc()
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print("config error:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    except (argparse.ArgumentTypeError, StateDirBusyError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
