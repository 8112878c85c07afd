"""The InfluxDB sink: log readers that send committed rows to InfluxDB, v2 or v1 API.

Why this shape (DESIGN.md "One durable log, many readers"): the SQLite log is the queue.
One reader per table ("influx:sample", "influx:step", ...) reads committed rows through its
own durable cursor and hands them to one shared :class:`InfluxWriter`; ``deliver`` returns
(and the cursor advances) only when InfluxDB has confirmed every line, or has refused a line
as bad data and that line sits in the quarantine. An outage only makes the readers fall
behind: memory stays bounded (each reader has at most one batch in flight) and nothing is
dropped, because nothing leaves the log before InfluxDB has it.

The writer batches by size (``batch_rows`` lines per request) and by time (a batch smaller
than that waits at most ``flush_interval_s`` for company), gzips, and retries 5xx, 429 and
network errors with capped exponential backoff and jitter, honouring Retry-After. A 400/422
means the data is bad: the batch is bisected until the refused lines are found; they go to
the quarantine with the server's message and the rest is delivered.

Transports: v2 through ``influxdb-client`` (its synchronous write API, run in a thread: the
package's asyncio API needs aiohttp, which nothing else here uses). v1 is a plain POST to
``/write``, written by hand because influxdb-client's 1.x compatibility needs 1.8+ and Debian
ships 1.6; it is one request with a few parameters, on urllib3 (influxdb-client's own HTTP
library), so no further dependency.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email.utils
import gzip
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3

from shortwatch.alerts.sources import firing_from_log, source_alert
from shortwatch.model import AlertEvent, RecordBatch, Rejected
from shortwatch.settings import StorageSettings, resolve_secret
from shortwatch.storage.influx_line import V1_PRECISION, LineEncoder

log = logging.getLogger(__name__)

#: The log tables the sink sends, one reader (and cursor) each.
INFLUX_TABLES: tuple[str, ...] = ("sample", "step", "cycle", "detector", "alert")
#: HTTP statuses that mean "this data is wrong" (400 bad line protocol / partial write on 1.x,
#: 422 unprocessable on 2.x) or "too much at once" (413): split the batch, never retry as is.
SPLIT_STATUSES = frozenset({400, 413, 422})
GZIP_LEVEL = 1  # line protocol compresses ~8x even at level 1; higher levels cost CPU for little
_DROPPED = re.compile(r"dropped=(\d+)")


class InfluxHTTPError(Exception):
    """A write that InfluxDB did not confirm: ``status`` None for a network error."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: bytes | str | None, headers: Any = None) -> str:
    """The server's own words: the JSON ``error`` (1.x) or ``message`` (2.x), else the text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("error") or data.get("message") or text)
    if not text and headers is not None:
        text = headers.get("X-Influxdb-Error") or headers.get("X-Platform-Error-Code") or ""
    return text.strip()[:2000]


def network_message(exc: BaseException) -> str:
    """A network error in a line: urllib3's text without the connection object's repr."""
    return f"{type(exc).__name__}: " + re.sub(r"<[^>]*>: ", "", str(exc))


class Transport(Protocol):
    """One blocking POST of line protocol; raises InfluxHTTPError unless InfluxDB confirmed it."""

    description: str

    def send(self, body: bytes) -> None: ...

    def close(self) -> None: ...


class V1Transport:
    """``POST /write?db=&rp=&precision=`` (InfluxDB 1.x, and 3.x's v1 compatibility)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        precision: str = "ms",
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        gzip_body: bool = True,
        timeout_s: float = 30.0,
    ):
        params = {"db": database, "precision": V1_PRECISION[precision]}
        if retention_policy:
            params["rp"] = retention_policy
        self.url = f"{url.rstrip('/')}/write?{urlencode(params)}"
        self.description = f"InfluxDB v1 {url} db={database}" + (f" rp={retention_policy}" if retention_policy else "")
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif username:
            # Basic auth, not u=/p= in the query string, so the password stays out of access logs.
            pair = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        if gzip_body:
            self.headers["Content-Encoding"] = "gzip"
        self.gzip = gzip_body
        self._http = urllib3.PoolManager(num_pools=1, maxsize=2, retries=False, timeout=urllib3.Timeout(timeout_s))

    def send(self, body: bytes) -> None:
        data = gzip.compress(body, GZIP_LEVEL) if self.gzip else body
        try:
            r = self._http.request("POST", self.url, body=data, headers=self.headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise InfluxHTTPError(None, network_message(exc)) from None
        if r.status // 100 != 2:
            raise InfluxHTTPError(
                r.status, error_message(r.data, r.headers), retry_after_s(r.headers.get("Retry-After"))
            )

    def close(self) -> None:
        self._http.clear()


class V2Transport:
    """``POST /api/v2/write?org=&bucket=&precision=`` through influxdb-client (2.x, 3.x, 1.8+)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str | None,
        *,
        precision: str = "ms",
        gzip_body: bool = True,
        timeout_s: float = 30.0,
    ):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.description = f"InfluxDB v2 {url} org={org} bucket={bucket}"
        self.org = org
        self.bucket = bucket
        self.precision = precision
        self._client = InfluxDBClient(
            url=url, token=token or "", org=org, timeout=int(timeout_s * 1000), enable_gzip=gzip_body
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def send(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body, write_precision=self.precision)
        except ApiException as exc:
            headers = exc.headers or {}
            raise InfluxHTTPError(
                exc.status, error_message(exc.body, headers), retry_after_s(headers.get("Retry-After"))
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise InfluxHTTPError(None, network_message(exc)) from None

    def close(self) -> None:
        self._client.close()


@dataclass(slots=True)
class Refused:
    """A line InfluxDB refused as bad data, with the server's message."""

    line: str
    status: int
    message: str


@dataclass(eq=False, slots=True)
class _Job:
    lines: list[str]
    future: asyncio.Future[list[Refused]]
    queued_at: float
    taken: int = 0  # lines handed to requests so far
    done: int = 0  # lines confirmed or refused
    refused: list[Refused] = field(default_factory=list)


class InfluxWriter:
    """Sends lines in batches, confirming each caller's lines as a whole.

    ``await write(lines)`` returns the refused lines once every one of ``lines`` is either
    confirmed or refused. Lines of several callers share requests; a request holds at most
    ``batch_lines``. Transient failures are retried here, indefinitely, with backoff.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        batch_lines: int = 5000,
        flush_interval_s: float = 1.0,
        retry_first_s: float = 0.5,
        retry_max_s: float = 30.0,
    ):
        self.transport = transport
        self.batch_lines = batch_lines
        self.flush_interval_s = flush_interval_s
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._last_failure_log = 0.0
        self.stats: dict[str, Any] = {
            "points": 0,
            "requests": 0,
            "bytes": 0,
            "errors": 0,
            "refused": 0,
            "last_error": None,
            "last_error_at": None,
            "last_ok_at": None,
            "failing": False,
        }

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="influx-writer")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A request loop that died of a bug fails its callers (their readers retry the rows
        later, and the next write starts a new loop) instead of leaving them waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("the InfluxDB writer stopped: %s: %s", type(exc).__name__, exc, exc_info=exc)
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError(f"the InfluxDB writer stopped: {exc}"))
        self._jobs.clear()
        self._queued = 0

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the InfluxDB writer was closed"))
        self._jobs.clear()
        await asyncio.to_thread(self.transport.close)

    async def write(self, lines: list[str]) -> list[Refused]:
        if not lines:
            return []
        self.start()
        job = _Job(lines, asyncio.get_running_loop().create_future(), time.monotonic())
        self._jobs.append(job)
        self._queued += len(lines)
        self._wake.set()
        return await job.future  # cancelled: the job's untaken lines are dropped (the log keeps them)

    # ------------------------------------------------------------------ the request loop

    async def _run(self) -> None:
        while True:
            self._drop_cancelled()
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self._jobs[0]
            # Batch by time: a short batch waits for company, unless its caller is already
            # part-way (its first chunk went out) or enough lines wait for a full request.
            wait = head.queued_at + self.flush_interval_s - time.monotonic()
            if self._queued < self.batch_lines and head.taken == 0 and wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            items = self._take()
            if not items:
                continue
            refused = await self._send_checked([line for _, line in items])
            self._complete(items, refused)

    def _drop_cancelled(self) -> None:
        while self._jobs and self._jobs[0].future.done() and self._jobs[0].taken < len(self._jobs[0].lines):
            job = self._jobs.popleft()
            self._queued -= len(job.lines) - job.taken

    def _take(self) -> list[tuple[_Job, str]]:
        """Up to batch_lines lines: whole jobs in order, or a chunk of a job larger than that."""
        items: list[tuple[_Job, str]] = []
        for job in self._jobs:
            rest = len(job.lines) - job.taken
            if rest == 0 or job.future.done():
                continue
            room = self.batch_lines - len(items)
            if items and rest > room:
                break
            n = min(rest, room)
            items.extend((job, line) for line in job.lines[job.taken : job.taken + n])
            job.taken += n
            self._queued -= n
            if len(items) >= self.batch_lines:
                break
        return items

    def _complete(self, items: list[tuple[_Job, str]], refused: dict[int, Refused]) -> None:
        counts: dict[_Job, int] = collections.Counter(job for job, _ in items)
        for i, r in refused.items():
            items[i][0].refused.append(r)
        for job, n in counts.items():
            job.done += n
            if job.done >= len(job.lines):
                with contextlib.suppress(ValueError):
                    self._jobs.remove(job)
                if not job.future.done():
                    job.future.set_result(job.refused)

    async def _send_checked(self, lines: list[str], offset: int = 0) -> dict[int, Refused]:
        """Send ``lines``; bisect a batch the server refuses as bad data. Returns the refused
        lines by index (+offset). 1.x writes the good points of a partial write anyway, so
        sending them again while bisecting overwrites them with themselves."""
        try:
            await self._send_retrying(lines)
            return {}
        except InfluxHTTPError as exc:
            status, message = exc.status or 0, exc.message
        m = _DROPPED.search(message)
        whole = len(lines) == 1 or (status != 413 and m is not None and int(m.group(1)) >= len(lines))
        if whole:  # one line, or the server says it dropped every point: no need to look further
            self.stats["refused"] += len(lines)
            log.warning(
                "%s refused %d point(s) as bad data (HTTP %d: %s); e.g. %.300s",
                self.transport.description,
                len(lines),
                status,
                message,
                lines[0],
            )
            return {offset + i: Refused(line, status, message) for i, line in enumerate(lines)}
        mid = len(lines) // 2
        out = await self._send_checked(lines[:mid], offset)
        out.update(await self._send_checked(lines[mid:], offset + mid))
        return out

    async def _send_retrying(self, lines: list[str]) -> None:
        """One request, repeated until InfluxDB confirms it; raises InfluxHTTPError only for
        a status in SPLIT_STATUSES (the data, not the server, is the problem)."""
        body = "\n".join(lines).encode("utf-8")
        delay = self.retry_first_s
        while True:
            try:
                await asyncio.to_thread(self.transport.send, body)
            except InfluxHTTPError as exc:
                if exc.status in SPLIT_STATUSES:
                    raise
                wait = min(delay * random.uniform(0.5, 1.5), self.retry_max_s)
                if exc.retry_after is not None:  # the server knows best, within reason
                    wait = min(max(exc.retry_after, 0.0), 3600.0)
                self._note_failure(exc, len(lines), wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self._note_success(len(lines), len(body))
            return

    def _note_failure(self, exc: InfluxHTTPError, n: int, wait: float) -> None:
        now = time.monotonic()
        st = self.stats
        st["errors"] += 1
        st["last_error"] = str(exc)
        st["last_error_at"] = time.time()
        st["failing"] = True
        hint = ""
        if exc.status in (401, 403):
            hint = " (check the token or user and its write permission)"
        elif exc.status == 404:
            hint = " (does the database/bucket exist? `shortwatch influx setup` creates it)"
        if self._failing_since is None:
            self._failing_since = now
            self._last_failure_log = now
            log.error(
                "%s: write of %d points failed: %s%s; retrying (every <= %.0f s); the data waits in the local log",
                self.transport.description,
                n,
                exc,
                hint,
                self.retry_max_s,
            )
        elif now - self._last_failure_log >= 60.0:
            self._last_failure_log = now
            log.error(
                "%s still failing after %.0f s: %s%s; next try in %.1f s",
                self.transport.description,
                now - self._failing_since,
                exc,
                hint,
                wait,
            )

    def _note_success(self, n: int, nbytes: int) -> None:
        st = self.stats
        st["points"] += n
        st["requests"] += 1
        st["bytes"] += nbytes
        st["last_ok_at"] = time.time()
        st["failing"] = False
        if self._failing_since is not None:
            log.warning(
                "%s is writable again after %.0f s", self.transport.description, time.monotonic() - self._failing_since
            )
            self._failing_since = None


def make_transport(storage: StorageSettings) -> Transport:
    """The transport the ``[storage]`` settings name, with its secrets resolved."""
    token = resolve_secret(storage.token_env, storage.token_file)
    common = {"precision": storage.precision, "gzip_body": storage.gzip, "timeout_s": storage.timeout_s}
    if storage.api == "v2":
        return V2Transport(storage.url, storage.org or "", storage.bucket or "", token, **common)
    return V1Transport(
        storage.url,
        storage.database or "",
        retention_policy=storage.retention_policy,
        username=storage.username,
        password=resolve_secret(storage.password_env, storage.password_file),
        token=token,
        **common,
    )


class _Store(Protocol):
    """What the sink needs of the SQLite store (storage/sqlite.py)."""

    async def write(self, batch: RecordBatch) -> Any: ...

    async def flush(self) -> None: ...

    def log_backlog(self, table: str, name: str) -> tuple[int, float | None]: ...


class InfluxTableReader:
    """The log reader (a LogConsumer, storage/outbox.py) of one table: cursor ``influx:<table>``."""

    def __init__(self, sink: InfluxSink, table: str):
        self.sink = sink
        self.table = table
        self.name = f"influx:{table}"
        self.batch_rows = sink.batch_rows

    async def deliver(self, rows: list[dict[str, Any]]) -> None:
        await self.sink.deliver(self.table, rows)

    def close(self) -> None:
        """Nothing of its own to close: the sink closes the writer the readers share."""


class InfluxSink:
    """The readers of every table, one shared writer, the backlog figures and its alert."""

    def __init__(
        self,
        storage: StorageSettings,
        station: str,
        store: _Store,
        transport: Transport | None = None,
        tables: tuple[str, ...] = INFLUX_TABLES,
    ):
        self.storage = storage
        self.station = station
        self.store = store
        self.tables = tables
        self.batch_rows = storage.batch_rows
        self.encoder = LineEncoder(storage.precision)
        self.transport = transport or make_transport(storage)
        self.writer = InfluxWriter(
            self.transport,
            batch_lines=storage.batch_rows,
            flush_interval_s=storage.flush_interval_s,
            retry_max_s=storage.retry_max_s,
        )
        self.readers = [InfluxTableReader(self, t) for t in tables]
        self.skipped = 0  # rows with no field to send
        self.quarantined = 0
        self._alert: AlertEvent | None = None  # the firing influx_backlog alert, if any

    @property
    def description(self) -> str:
        return self.transport.description

    async def deliver(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Encode and send; returns once InfluxDB has every line (or refused it: quarantined)."""
        encode = self.encoder.encoders[table]
        lines: list[str] = []
        origin: dict[str, dict[str, Any]] = {}
        for row in rows:
            line = encode(row)
            if line is None:
                self.skipped += 1
                continue
            lines.append(line)
            origin[line] = row
        refused = await self.writer.write(lines)
        if refused:
            await self._quarantine(table, refused, origin)

    async def _quarantine(self, table: str, refused: list[Refused], origin: dict[str, dict[str, Any]]) -> None:
        """Refused lines go to the quarantine, committed before the cursor moves past them."""
        batch = RecordBatch()
        for r in refused:
            row = origin.get(r.line, {})
            t = row.get("time_s", row.get("time", row.get("t_start")))
            batch.rejected.append(
                Rejected(
                    source=f"influx:{table}",
                    reason="influx_rejected",
                    raw=r.line,
                    cell=row.get("cell"),
                    time=float(t) if isinstance(t, int | float) else None,
                    detail=f"HTTP {r.status}: {r.message}",
                )
            )
        await self.store.write(batch)
        await self.store.flush()
        self.quarantined += len(refused)
        log.error(
            "%d %s point(s) refused by InfluxDB went to the quarantine (reason influx_rejected)", len(refused), table
        )

    def daemon_line(self, figures: dict[str, Any], t: float | None = None) -> str | None:
        """The ``daemon`` health point for these figures (h8dash's /metrics figures)."""
        return self.encoder.daemon(self.station, time.time() if t is None else t, figures)

    async def send_health(self, figures: dict[str, Any]) -> None:
        """Write one ``daemon`` point, best effort: health is a snapshot, not log data, so it
        is not queued durably; a point that cannot be written is superseded by the next."""
        line = self.daemon_line(figures)
        if line is not None:
            await self.writer.write([line])

    async def report_health(self, collect: Callable[[], dict[str, Any]]) -> None:
        """Run beside the readers: every ``health_interval_s``, one ``daemon`` point with the
        sink's figures and the daemon's own (``collect()``, from the event loop). While
        InfluxDB is down a newer snapshot replaces the one still waiting: they never pile up."""
        pending: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    figures = await asyncio.to_thread(self.figures)
                except Exception:  # a failed snapshot (store busy) must not end the reports
                    log.exception("collecting the daemon's health figures failed")
                else:
                    if pending is not None:
                        pending.cancel()
                    pending = asyncio.create_task(self.send_health(figures | collect()))
                await asyncio.sleep(self.storage.health_interval_s)
        finally:
            if pending is not None:
                pending.cancel()

    # ------------------------------------------------------------------ backlog

    def backlog(self) -> dict[str, tuple[int, float | None]]:
        """Per table: (rows not yet confirmed by InfluxDB, wall time the oldest of them was
        committed, or None). Blocking (SQLite reads): call it in a thread from the loop."""
        return {t: self.store.log_backlog(t, f"influx:{t}") for t in self.tables}

    def backlog_summary(self, now: float | None = None) -> tuple[int, float]:
        """(rows pending over all tables, age in seconds of the oldest pending row; 0 when none)."""
        f = self.figures(now)
        return int(f["influx_backlog_rows"]), f["influx_backlog_age_s"]

    def figures(self, now: float | None = None) -> dict[str, float]:
        """The sink's health, for /metrics and the ``daemon`` point (h8dash's collector): the
        backlog (rows per table and in all, age of the oldest unsent row) and the writer's
        counters. Blocking (SQLite reads): call it in a thread from the loop."""
        now = time.time() if now is None else now
        out: dict[str, float] = {}
        rows_all = 0
        oldest: float | None = None
        for table, (rows, at) in self.backlog().items():
            out[f"influx_backlog_rows_{table}"] = float(rows)
            rows_all += rows
            if at is not None and (oldest is None or at < oldest):
                oldest = at
        st = self.writer.stats
        out |= {
            "influx_backlog_rows": float(rows_all),
            "influx_backlog_age_s": 0.0 if oldest is None else max(0.0, now - oldest),
            "influx_points_written": float(st["points"]),
            "influx_write_requests": float(st["requests"]),
            "influx_write_errors": float(st["errors"]),
            "influx_points_refused": float(st["refused"]),
            "influx_failing": float(st["failing"]),
            "influx_backlog_alert_firing": float(self._alert is not None),
        }
        return out

    def restore_alert(self, alerts: list[dict[str, Any]]) -> None:
        """Pick up a still-firing backlog alert from the stored alert log (after a restart)."""
        fired = firing_from_log(alerts, BACKLOG_DETECTOR)
        self._alert = fired.get(BACKLOG_SOURCE) or fired.get(None)

    def check_backlog(self, now: float | None = None) -> AlertEvent | None:
        """The backlog alert's next transition, if one is due: firing when the oldest unsent
        row is older than ``backlog_alert_age_s``, resolved when it is back under half that
        (the hysteresis keeps a backlog hovering at the limit from flapping). Blocking."""
        now = time.time() if now is None else now
        rows, age = self.backlog_summary(now)
        limit = self.storage.backlog_alert_age_s
        evidence = {"rows_pending": rows, "oldest_pending_age_s": round(age, 1), "limit_s": limit}
        if self._alert is None and age > limit:
            self._alert = source_alert(
                BACKLOG_SOURCE,
                BACKLOG_DETECTOR,
                now,
                f"InfluxDB is {_duration_text(age)} behind: {rows} rows wait in the local log "
                f"({self.description}: {self.writer.stats['last_error'] or 'writes too slow'})",
                evidence,
                advice="Check that InfluxDB is up and writable; nothing is lost, the rows are sent when it is back.",
            )
            return self._alert
        if self._alert is not None and age <= limit / 2:
            fired = self._alert
            self._alert = None
            return source_alert(
                BACKLOG_SOURCE,
                BACKLOG_DETECTOR,
                now,
                f"InfluxDB caught up: {rows} rows pending, the oldest {age:.0f} s old",
                evidence,
                state="resolved",
                severity=fired.severity,
                episode=fired.episode,
            )
        return None

    async def watch_backlog(self, raise_alert: Callable[[AlertEvent], Awaitable[None]]) -> None:
        """Run beside the readers: check the backlog (every 10 s, or half the alert age if
        shorter) and hand alert transitions to ``raise_alert``, which stores them in the log
        like any alert."""
        every_s = min(10.0, self.storage.backlog_alert_age_s / 2)
        while True:
            try:
                event = await asyncio.to_thread(self.check_backlog)
            except Exception:  # a failed check (store busy) must not end the watch
                log.exception("checking the InfluxDB backlog failed")
                event = None
            if event is not None:
                await raise_alert(event)
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        await self.writer.close()


def _duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


BACKLOG_DETECTOR = "influx_backlog"
BACKLOG_SOURCE = "influxdb"
