"""The embedded SQLite store: what `shortwatch demo` and a bare machine write to.

It mirrors the InfluxDB measurements (DESIGN.md "InfluxDB schema") as tables, so the same
questions can be asked of either backend.

Why this layout
---------------
A year of 10-s data for 32 cells is about 100 M sample rows, and the pipeline must sustain
200 k samples/s, so ``sample`` is built for appends and range scans of one cell:

* ``sample`` is a WITHOUT ROWID table keyed ``(cell_id, time)``. The rows live in the key's
  B-tree, ordered by cell then time, so "cell X between t0 and t1" is one contiguous range
  scan, and because each cell's times increase, every insert lands at the right edge of that
  cell's range: 32 hot leaf pages, no random I/O, no slow-down as the file grows. The key also
  makes duplicates (re-imports) a no-op with ``INSERT OR IGNORE``. There is no secondary index
  to maintain.
* A sample row stores a small integer ``cell_id`` instead of the name (``cell`` table), and no
  ``station``: a cell belongs to one daemon instance (DESIGN.md "Scaling out"), so the station
  is stored once per cell in ``cell``. That saves ~10-20 bytes x 100 M rows.
* Samples are inserted with multi-row ``INSERT ... VALUES (...), (...)`` statements of a few
  fixed sizes, not ``executemany``. CPython's sqlite3 releases the GIL around every
  ``sqlite3_step``; with ``executemany`` that is once per row, and while the event loop is
  busy the writer thread then waits for the GIL after every row (a convoy: against a
  CPU-bound thread it managed ~4 k rows/s instead of ~450 k; in a replay-like asyncio
  benchmark end-to-end throughput fell from ~230 k to ~85 k samples/s). One statement per
  2048 rows releases the GIL rarely, and SQLite does the B-tree work while the event loop
  runs. The last statement of a batch is padded with copies of its last row, which the
  primary key ignores, so only a few statement sizes are ever compiled (and stay cached).
* WAL mode with ``synchronous=NORMAL``: readers never block the writer and vice versa, and a
  commit does not fsync (a power cut may lose the last commits, never corrupt the file).

The other tables (steps, cycles, alerts, quarantine, detector statistics) are small: ordinary
tables with the natural keys of their records, so rewriting a record replaces it.

One background thread owns the write connection. ``write`` hands it a batch and returns at
once (awaiting only when too many batches are pending); a failed write is retried with backoff
and never dropped. Reads use their own connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import heapq
import itertools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from shortwatch.model import (
    CSV_COLUMNS,
    AlertEvent,
    CycleFeatures,
    DetectorStatus,
    RecordBatch,
    Rejected,
    Sample,
    StepFeatures,
    iso_time,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the log (a seq per row, cursors, commit times), alert ids and episodes
TABLES: tuple[str, ...] = (
    "cell",
    "sample",
    "step",
    "cycle",
    "alert",
    "quarantine",
    "detector",
    "meta",
    "cursor",
    "commit_log",
)
#: The tables readers follow through cursors (DESIGN "One durable log, many readers").
LOG_TABLES: tuple[str, ...] = ("sample", "step", "cycle", "detector", "alert", "quarantine")

_SAMPLE_COLUMNS = ("cell_id", "time", *CSV_COLUMNS[2:], "seq")  # the cell's id (an int) in place of its name
_NCOL = len(_SAMPLE_COLUMNS)
#: Largest number of sample rows in one INSERT statement. A compiled statement costs ~2.5 kB
#: per row, and up to ~40 sizes stay cached: at most ~30 MB, typically a few MB. Larger
#: statements measured no faster. (Also bounded by SQLITE_LIMIT_VARIABLE_NUMBER.)
_MAX_STATEMENT_ROWS = 2048
#: Most sample rows the writer puts in one transaction when several batches are queued.
_MAX_GROUP_ROWS = 50_000
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0

_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepFeatures))
_CYCLE_FIELDS = tuple(f.name for f in dataclasses.fields(CycleFeatures))
_DETECTOR_FIELDS = tuple(f.name for f in dataclasses.fields(DetectorStatus))
_REJECTED_FIELDS = tuple(f.name for f in dataclasses.fields(Rejected))
_ALERT_COLUMNS = (
    "event_id",
    "episode",
    "time",
    "cell",
    "source",
    "detector",
    "kind",
    "severity",
    "state",
    "reminder",
    "summary",
    "evidence",
    "advice",
)

#: Exceptions that mean "this data cannot be stored" (a retry cannot help), as opposed to
#: "the database cannot be written right now" (locked, disk full, I/O error: retry).
_DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    OverflowError,
    AttributeError,
)


def _sql_type(annotation: Any) -> str:
    """SQLite column type for a dataclass field annotation (a string, model.py is postponed)."""
    text = str(annotation)
    if "float" in text:
        return "REAL"
    if "int" in text:
        return "INTEGER"
    return "TEXT"


def _feature_columns(cls: type) -> dict[str, str]:
    return {f.name: _sql_type(f.type) for f in dataclasses.fields(cls)}


_ALERT_DDL = """
CREATE TABLE IF NOT EXISTS alert (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    episode TEXT NOT NULL,
    station TEXT NOT NULL,
    time REAL NOT NULL,
    cell TEXT,
    source TEXT,
    detector TEXT NOT NULL,
    kind TEXT,
    severity TEXT,
    state TEXT NOT NULL,
    reminder INTEGER NOT NULL DEFAULT 0,
    summary TEXT,
    evidence TEXT,
    advice TEXT,
    seq INTEGER
);
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cell (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    station TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sample (
    cell_id INTEGER NOT NULL,
    time REAL NOT NULL,
    voltage_V REAL,
    current_A REAL,
    pressure_MPa REAL,
    temperature_C REAL,
    cycle INTEGER,
    step INTEGER,
    mode TEXT,
    seq INTEGER,
    PRIMARY KEY (cell_id, time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS step (
    station TEXT NOT NULL,
    {", ".join(f'"{n}" {t}' for n, t in _feature_columns(StepFeatures).items())},
    seq INTEGER,
    PRIMARY KEY (cell, step_index)
);
CREATE TABLE IF NOT EXISTS cycle (
    station TEXT NOT NULL,
    {", ".join(f'"{n}" {t}' for n, t in _feature_columns(CycleFeatures).items())},
    seq INTEGER,
    PRIMARY KEY (cell, cycle)
);
{_ALERT_DDL}
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    station TEXT NOT NULL,
    received REAL NOT NULL,
    source TEXT,
    reason TEXT,
    cell TEXT,
    time REAL,
    raw TEXT,
    detail TEXT,
    seq INTEGER,
    qkey BLOB
);
CREATE TABLE IF NOT EXISTS detector (
    station TEXT NOT NULL,
    time REAL NOT NULL,
    cell TEXT NOT NULL,
    detector TEXT NOT NULL,
    statistic REAL,
    threshold REAL,
    state TEXT,
    seq INTEGER,
    PRIMARY KEY (cell, time, detector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor (
    name TEXT NOT NULL,
    tbl TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (name, tbl)
);
CREATE TABLE IF NOT EXISTS quarantine_overflow (
    reason TEXT PRIMARY KEY,
    dropped INTEGER NOT NULL,
    last_received REAL NOT NULL,
    last_raw TEXT
);
CREATE TABLE IF NOT EXISTS commit_log (
    tbl TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (tbl, last_seq)
) WITHOUT ROWID;
"""

#: After the tables (and after migrating an older file): the log's indexes.
_LOG_INDEXES = "".join(f"CREATE INDEX IF NOT EXISTS {t}_seq ON {t} (seq);\n" for t in LOG_TABLES) + (
    "CREATE UNIQUE INDEX IF NOT EXISTS quarantine_key ON quarantine (qkey);\n"
    # one transition is logged once, whatever its event id (the same decision made again after a crash)
    "CREATE UNIQUE INDEX IF NOT EXISTS alert_transition ON alert "
    "(coalesce(cell, ''), coalesce(source, ''), detector, time, state, severity, reminder);\n"
)

#: Sample rows of one cell and time merge: a later row fills the channels an earlier one lacked (a
#: load cell's pressure and a cycler's V/I logged at the same second are one sample), and gets a new
#: seq so the log's readers see the merged row. A row that adds nothing changes nothing.
_SAMPLE_MERGE = (
    " ON CONFLICT (cell_id, time) DO UPDATE SET "
    + ", ".join(f"{c} = coalesce(sample.{c}, excluded.{c})" for c in CSV_COLUMNS[2:])
    + ", seq = excluded.seq WHERE "
    + " OR ".join(f"(sample.{c} IS NULL AND excluded.{c} IS NOT NULL)" for c in CSV_COLUMNS[2:])
)


def _insert_sql(verb: str, table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    return f"{verb} INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})"


_STEP_SQL = _insert_sql("INSERT OR REPLACE", "step", ("station", *_STEP_FIELDS, "seq"))
_CYCLE_SQL = _insert_sql("INSERT OR REPLACE", "cycle", ("station", *_CYCLE_FIELDS, "seq"))
# A transition is logged once: the same event again (same id) is ignored.
_ALERT_SQL = _insert_sql("INSERT OR IGNORE", "alert", ("station", *_ALERT_COLUMNS, "seq"))
_DETECTOR_SQL = _insert_sql("INSERT OR REPLACE", "detector", ("station", *_DETECTOR_FIELDS, "seq"))
# Quarantine is idempotent like the samples: input read again after a restart is not kept twice.
_QUARANTINE_SQL = _insert_sql(
    "INSERT OR IGNORE", "quarantine", ("station", "received", *_REJECTED_FIELDS, "qkey", "seq")
)
_SAMPLE_ROW_SQL = _insert_sql("INSERT", "sample", _SAMPLE_COLUMNS) + _SAMPLE_MERGE

_get_step = attrgetter(*_STEP_FIELDS)
_get_cycle = attrgetter(*_CYCLE_FIELDS)
_get_detector = attrgetter(*_DETECTOR_FIELDS)
_get_rejected = attrgetter(*_REJECTED_FIELDS)


@functools.cache
def _sample_sql(rows: int) -> str:
    """The INSERT for ``rows`` sample rows (the same str object each time: cheap cache lookups)."""
    return "INSERT INTO sample VALUES " + ",".join(["(" + ",".join("?" * _NCOL) + ")"] * rows) + _SAMPLE_MERGE


def _padded_rows(n: int) -> int:
    """Rows of the INSERT statement that takes ``n`` rows: n itself up to 16, above that
    rounded up to a quarter of its power of two (at most 25 % padding, ~40 sizes in all)."""
    if n <= 16:
        return n
    quantum = 1 << (n.bit_length() - 3)
    return -(-n // quantum) * quantum


def _json_default(value: Any) -> Any:
    """Evidence values json cannot encode: numpy scalars become numbers (null if not finite),
    anything else its text."""
    item = getattr(value, "item", None)
    if not callable(item):
        return str(value)
    number = item()
    return None if isinstance(number, float) and not math.isfinite(number) else number


def _alert_row(station: str, ev: AlertEvent) -> tuple[Any, ...]:
    evidence = json.dumps(ev.to_json_dict()["evidence"], default=_json_default, allow_nan=False)
    return (
        station,
        ev.id,
        ev.episode,
        ev.time,
        ev.cell,
        ev.source,
        ev.detector,
        ev.kind,
        ev.severity,
        ev.state,
        int(ev.reminder),
        ev.summary,
        evidence,
        ev.advice,
    )


def backlog_after(conn: sqlite3.Connection, table: str, after: int) -> tuple[int, float | None]:
    """(rows of a log table past ``after``, wall time the oldest of them was committed), on any
    connection: the daemon's own, or a read-only one on a stopped daemon's file (``status``)."""
    (rows,) = conn.execute(f'SELECT count(*) FROM "{table}" WHERE seq > ?', (after,)).fetchone()
    if not rows:
        return 0, None
    row = conn.execute(
        "SELECT at FROM commit_log WHERE tbl = ? AND last_seq > ? ORDER BY last_seq LIMIT 1", (table, after)
    ).fetchone()
    return rows, None if row is None else row[0]


def alert_event(row: dict[str, Any]) -> dict[str, Any]:
    """An alert row of the log as the DESIGN alert-event dict alone (without ``seq``, ``time_s``)."""
    return {k: v for k, v in row.items() if k not in ("seq", "time_s")}


def _check_log_table(table: str) -> None:
    if table not in LOG_TABLES:
        raise ValueError(f"{table!r} is not a log table; one of {', '.join(LOG_TABLES)}")


def _quarantine_key(r: Rejected) -> bytes:
    """What makes a quarantined input the same input when it is read again after a restart."""
    h = hashlib.blake2b(digest_size=16)
    for part in (r.source, r.reason, r.cell or "", repr(r.time), r.raw):
        h.update(str(part).encode("utf-8", "backslashreplace"))
        h.update(b"\0")
    return h.digest()


def alert_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert row as the DESIGN alert-event JSON dict, plus ``time_s`` (and ``seq``)."""
    d = {
        "id": row["event_id"],
        "episode": row["episode"],
        "time": iso_time(row["time"]),
        "station": row["station"],
        "cell": row["cell"],
        "source": row["source"],
        "detector": row["detector"],
        "kind": row["kind"],
        "severity": row["severity"],
        "state": row["state"],
        "reminder": bool(row["reminder"]),
        "summary": row["summary"],
        "evidence": json.loads(row["evidence"]) if row["evidence"] else {},
        "advice": row["advice"],
        "time_s": row["time"],
    }
    if "seq" in row:
        d["seq"] = row["seq"]
    return d


# numpy integers are not ints and sqlite3 refuses them; detectors may well produce them.
for _np_type in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
    sqlite3.register_adapter(_np_type, int)
sqlite3.register_adapter(np.float32, float)
sqlite3.register_adapter(np.bool_, bool)


class StoreClosedError(RuntimeError):
    """The store is not open (or its writer gave up at close)."""


class _Aborted(Exception):
    """close() timed out while the writer was still retrying."""


@dataclasses.dataclass(slots=True)
class _Item:
    seq: int
    batch: RecordBatch
    received: float  # wall time the batch was handed over: the quarantine's "received"


class SqliteStore:
    """The embedded store: one SQLite file, one writer thread, any number of readers.

    ``write`` must not be given a batch that the caller still mutates: the writer thread reads
    it later. Use ``open()``/``close()`` or ``with SqliteStore(path) as store:``.
    """

    def __init__(
        self,
        path: Path,
        station: str = "lab",
        max_pending_batches: int = 8,
        *,
        busy_timeout_s: float = 1.0,
        quarantine_rows_per_reason: int = 10_000,
    ):
        if max_pending_batches < 1:
            raise ValueError("max_pending_batches must be at least 1")
        self.path = Path(path)
        self.station = station
        self.max_pending_batches = max_pending_batches
        self.busy_timeout_s = busy_timeout_s
        self._cond = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._pending = 0  # handed over, not yet committed (queued or being written)
        self._enqueued_seq = 0
        self._done_seq = 0
        self._stopping = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._wconn: sqlite3.Connection | None = None
        self._cell_ids: dict[str, int] = {}
        self._cell_ids_stale = False
        self._max_statement_rows = _MAX_STATEMENT_ROWS
        self._local = threading.local()
        self._read_conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._seq: dict[str, int] = dict.fromkeys(LOG_TABLES, 0)  # per log table: the last seq given out
        # A year unattended must not fill the disk with one broken channel's rows: the first
        # quarantine_rows_per_reason raw inputs of a reason are kept, the rest only counted.
        self.quarantine_rows_per_reason = quarantine_rows_per_reason
        self._quarantined: collections.Counter[str] = collections.Counter()  # reason -> raw rows kept
        self._overflow: dict[str, tuple[int, float, str]] = {}  # reason -> (inputs only counted, last seen, raw)
        self._listeners: list[Callable[[int], None]] = []
        self._ack_lock = threading.Lock()
        self._ack_conn: sqlite3.Connection | None = None
        self._rows = dict.fromkeys(("sample", "step", "cycle", "alert", "quarantine", "detector"), 0)
        self._stats: dict[str, Any] = {
            "sample_ignored": 0,
            "batches": 0,
            "transactions": 0,
            "errors": 0,
            "last_error": None,
            "last_write_s": None,
            "last_commit_at": None,
        }

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> SqliteStore:
        """Create the file and schema if needed and start the writer thread."""
        if self._thread is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=256)
        try:
            # page_size only takes effect on a new file, and must precede the switch to WAL.
            conn.execute("PRAGMA page_size = 4096")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB
            conn.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL after bursts
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._create_schema(conn)
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._max_statement_rows = max(1, min(_MAX_STATEMENT_ROWS, limit // _NCOL))
            self._cell_ids = dict(conn.execute("SELECT name, id FROM cell"))
            self._seq = {t: conn.execute(f"SELECT coalesce(max(seq), 0) FROM {t}").fetchone()[0] for t in LOG_TABLES}
            self._quarantined = collections.Counter(
                dict(conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason"))
            )
        except BaseException:
            conn.close()
            raise
        self._wconn = conn
        self._stopping = False
        self._abort.clear()
        self._thread = threading.Thread(target=self._run, name=f"sqlite-writer:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {row[0]}, newer than this shortwatch ({SCHEMA_VERSION})"
            )
        conn.executescript(_SCHEMA)
        self._migrate(conn, int(row[0]) if row is not None else SCHEMA_VERSION)
        conn.executescript(_LOG_INDEXES)
        # Feature fields added to model.py after the file was created become new columns.
        for table, columns in (("step", _feature_columns(StepFeatures)), ("cycle", _feature_columns(CycleFeatures))):
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            for name, sql_type in columns.items():
                if name not in have:
                    conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (str(time.time()),))

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring a file of an older schema up to this one. Rows written before the log existed
        keep seq NULL: readers that start now do not re-send that history."""
        if version >= SCHEMA_VERSION:
            return
        log.warning("%s: upgrading the store from schema %d to %d", self.path, version, SCHEMA_VERSION)
        conn.execute("BEGIN IMMEDIATE")
        for table in ("sample", "step", "cycle", "detector", "quarantine"):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN seq INTEGER")
        conn.execute("ALTER TABLE quarantine ADD COLUMN qkey BLOB")
        # alert: new columns and no longer UNIQUE (cell, time, detector, state): rebuilt
        conn.execute("ALTER TABLE alert RENAME TO alert_v1")
        conn.execute(_ALERT_DDL)
        conn.execute(
            "INSERT INTO alert (event_id, episode, station, time, cell, detector, kind, severity, state, summary, "
            "evidence, advice) SELECT 'v1-' || id, cell || '/' || detector || '/' || time, station, time, cell, "
            "detector, kind, severity, state, summary, evidence, advice FROM alert_v1 ORDER BY id"
        )
        conn.execute("DROP TABLE alert_v1")
        conn.execute("COMMIT")

    def close(self, timeout: float | None = None) -> None:
        """Write everything handed over so far, stop the writer, close the connections.

        With a ``timeout`` (seconds) and a database that stays unwritable, the writer gives up
        after it, logs what was not written, and StoreClosedError is raised.
        """
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        lost = 0
        if thread.is_alive():
            self._abort.set()
            thread.join()
            with self._cond:
                lost = self._pending
        self._thread = None
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None
        for conn in self._read_conns.values():
            conn.close()
        self._read_conns.clear()
        with self._ack_lock:
            if self._ack_conn is not None:
                self._ack_conn.close()
                self._ack_conn = None
        self._local = threading.local()
        if lost:
            raise StoreClosedError(f"{lost} batches could not be written to {self.path} before close")

    def __enter__(self) -> SqliteStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing (callers)

    async def write(self, batch: RecordBatch) -> int:
        """Hand the batch to the writer; awaits (without blocking the loop) only while
        ``max_pending_batches`` batches are already waiting to be committed. Returns the batch's
        number: once :attr:`committed` reaches it, the batch and everything before it is committed."""
        while not self._try_enqueue(batch):
            await asyncio.to_thread(self._wait_for_room)
        return self._enqueued_seq

    @property
    def committed(self) -> int:
        """The number of the last batch committed (see :meth:`write`)."""
        return self._done_seq

    def write_sync(self, batch: RecordBatch) -> None:
        """Hand the batch over and block until it is committed."""
        while not self._try_enqueue(batch):
            self._wait_for_room()
        self.flush_sync()

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed."""
        with self._cond:
            if self._done_seq >= self._enqueued_seq:
                return
        await asyncio.to_thread(self.flush_sync)

    def flush_sync(self) -> None:
        with self._cond:
            target = self._enqueued_seq
            self._wait(lambda: self._done_seq >= target)

    def _try_enqueue(self, batch: RecordBatch) -> bool:
        with self._cond:
            if self._thread is None or self._stopping or not self._thread.is_alive():
                raise StoreClosedError(f"{self.path}: store is not open")
            if self._pending >= self.max_pending_batches:
                return False
            if len(batch):
                self._enqueued_seq += 1
                self._pending += 1
                self._queue.append(_Item(self._enqueued_seq, batch, time.time()))
                self._cond.notify_all()
            return True

    def _wait_for_room(self) -> None:
        with self._cond:
            self._wait(lambda: self._pending < self.max_pending_batches)

    def _wait(self, done: Callable[[], bool]) -> None:
        """Wait on the condition (lock held) until ``done()``; fail if the writer is gone."""
        while not done():
            thread = self._thread
            if thread is None or not thread.is_alive():
                raise StoreClosedError(f"{self.path}: the writer thread is not running")
            self._cond.wait(0.5)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for the daemon's health point: ``rows`` per table (samples actually
        inserted), ``sample_ignored`` (duplicates of stored samples, or samples with no time),
        ``batches``, ``transactions``, ``errors``,
        ``last_error``, ``pending_batches``, ``last_write_s`` (duration of the last
        transaction) and ``last_commit_at`` (its wall time)."""
        with self._cond:
            return {"rows": dict(self._rows), **self._stats, "pending_batches": self._pending}

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                group = [self._queue.popleft()]
                rows = len(group[0].batch.samples)
                while self._queue and rows + len(self._queue[0].batch.samples) <= _MAX_GROUP_ROWS:
                    item = self._queue.popleft()
                    rows += len(item.batch.samples)
                    group.append(item)
            try:
                counts, ignored, elapsed = self._commit(group)
            except _Aborted:
                with self._cond:
                    items = [*group, *self._queue]
                    records = sum(len(i.batch) for i in items)
                log.error(
                    "giving up on %s at close: %d batches (%d records) NOT written",
                    self.path,
                    len(items),
                    records,
                )
                return
            with self._cond:
                for table, n in counts.items():
                    self._rows[table] += n
                self._stats["sample_ignored"] += ignored
                self._stats["batches"] += len(group)
                self._stats["transactions"] += 1
                self._stats["last_write_s"] = elapsed
                self._stats["last_commit_at"] = time.time()
                self._pending -= len(group)
                self._done_seq = group[-1].seq
                self._cond.notify_all()
            for listener in list(self._listeners):
                try:
                    listener(group[-1].seq)
                except Exception:  # a listener must not stop the writer
                    log.exception("commit listener failed")

    def _commit(self, group: list[_Item]) -> tuple[dict[str, int], int, float]:
        """Write the group in one transaction, retrying until it succeeds (or close aborts).

        Database errors (locked, disk full, I/O) are retried with backoff, keeping the batch.
        Data that SQLite refuses is written record by record instead, and the records that
        still fail go to the quarantine table: nothing accepted is dropped silently.
        """
        delay = _BACKOFF_FIRST_S
        salvage = False
        records = sum(len(i.batch) for i in group)
        seq_before = dict(self._seq)
        quarantined_before = collections.Counter(self._quarantined)
        while True:
            t0 = time.perf_counter()
            # a rolled-back attempt's numbers and counts are given out again
            self._seq = dict(seq_before)
            self._quarantined = collections.Counter(quarantined_before)
            self._overflow = {}
            try:
                if self._cell_ids_stale:
                    self._cell_ids = dict(self._conn().execute("SELECT name, id FROM cell"))
                    self._cell_ids_stale = False
                counts, ignored = self._write_salvage(group) if salvage else self._write_group(group)
                return counts, ignored, time.perf_counter() - t0
            except Exception as exc:
                self._rollback()
                with self._cond:
                    self._stats["errors"] += 1
                    self._stats["last_error"] = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, _DATA_ERRORS) and not salvage:
                    log.error(
                        "%s refused %d records (%d batches): %s; writing them one by one, "
                        "unstorable ones go to the quarantine table",
                        self.path,
                        records,
                        len(group),
                        exc,
                    )
                    salvage = True
                    continue
                log.error(
                    "writing %d records (%d batches) to %s failed: %s: %s; retrying in %.2f s",
                    records,
                    len(group),
                    self.path,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if self._abort.wait(delay):
                    raise _Aborted from exc
                delay = min(delay * 2, _BACKOFF_MAX_S)

    def _conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise StoreClosedError(f"{self.path}: store is not open")
        return self._wconn

    def _rollback(self) -> None:
        self._cell_ids_stale = True  # cells registered in a rolled-back transaction are gone
        conn = self._wconn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _register_cells(self, names: set[str]) -> None:
        conn = self._conn()
        for name in names - self._cell_ids.keys():
            conn.execute("INSERT OR IGNORE INTO cell (name, station) VALUES (?, ?)", (name, self.station))
            self._cell_ids[name] = conn.execute("SELECT id FROM cell WHERE name = ?", (name,)).fetchone()[0]

    def _sample_params(self, samples: list[Sample]) -> list[Any]:
        """The samples' values, flattened row after row (the hot loop: ~0.15 µs per row)."""
        ids = self._cell_ids
        flat: list[Any] = []
        add = flat.extend
        seq = self._seq["sample"]
        try:
            for s in samples:
                seq += 1
                add(
                    (
                        ids[s.cell],
                        s.time,
                        s.voltage_V,
                        s.current_A,
                        s.pressure_MPa,
                        s.temperature_C,
                        s.cycle,
                        s.step,
                        s.mode,
                        seq,
                    )
                )
        except KeyError:
            self._register_cells({s.cell for s in samples})
            return self._sample_params(samples)
        self._seq["sample"] = seq
        return flat

    def _insert_samples(self, conn: sqlite3.Connection, flat: list[Any]) -> int:
        """Insert flattened rows with as few statements as possible; returns rows inserted."""
        n = len(flat) // _NCOL
        inserted = 0
        for start in range(0, n, self._max_statement_rows):
            rows = min(self._max_statement_rows, n - start)
            params = flat[start * _NCOL : (start + rows) * _NCOL]
            size = _padded_rows(rows)
            if size > rows:  # copies of the last row: ignored as duplicates by the key
                params.extend(params[-_NCOL:] * (size - rows))
            inserted += conn.execute(_sample_sql(size), params).rowcount
        return inserted

    def _record_tables(self, item: _Item) -> Iterator[tuple[str, str, list[Any], Callable[[Any], tuple[Any, ...]]]]:
        """(table, insert sql, records, record -> row without its seq) for the batch's non-sample records."""
        st = self.station
        b = item.batch
        yield "step", _STEP_SQL, b.steps, lambda x: (st, *_get_step(x))
        yield "cycle", _CYCLE_SQL, b.cycles, lambda x: (st, *_get_cycle(x))
        yield "alert", _ALERT_SQL, b.alerts, lambda x: _alert_row(st, x)
        yield "detector", _DETECTOR_SQL, b.detector_states, lambda x: (st, *_get_detector(x))
        yield (
            "quarantine",
            _QUARANTINE_SQL,
            b.rejected,
            lambda x: (st, item.received, *_get_rejected(x), _quarantine_key(x)),
        )

    def _insert_quarantined(self, conn: sqlite3.Connection, row: tuple[Any, ...], r: Rejected) -> int:
        """Insert one rejected input within its reason's bound; beyond it, only count it."""
        if self._quarantined[r.reason] >= self.quarantine_rows_per_reason:
            n, _, _ = self._overflow.get(r.reason, (0, 0.0, ""))
            self._overflow[r.reason] = (n + 1, row[1], r.raw[:1000])
            return 0
        n = conn.execute(_QUARANTINE_SQL, row).rowcount  # 0: the same input again (a re-read)
        self._quarantined[r.reason] += n
        return n

    def _write_overflow(self, conn: sqlite3.Connection) -> None:
        if self._overflow:
            conn.executemany(
                "INSERT INTO quarantine_overflow (reason, dropped, last_received, last_raw) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (reason) DO UPDATE SET dropped = dropped + excluded.dropped, "
                "last_received = excluded.last_received, last_raw = excluded.last_raw",
                [(reason, *v) for reason, v in self._overflow.items()],
            )
            self._overflow.clear()

    def _next_seq(self, table: str) -> int:
        self._seq[table] += 1
        return self._seq[table]

    def _log_commit(self, conn: sqlite3.Connection, before: dict[str, int]) -> None:
        """Note when each table's new rows were committed (for the readers' backlog age)."""
        now = time.time()
        rows = [(t, seq, now) for t, seq in self._seq.items() if seq != before[t]]
        if rows:
            conn.executemany("INSERT OR REPLACE INTO commit_log (tbl, last_seq, at) VALUES (?, ?, ?)", rows)

    def _write_group(self, group: list[_Item]) -> tuple[dict[str, int], int]:
        conn = self._conn()
        before = dict(self._seq)
        batches = [i.batch for i in group]
        samples = batches[0].samples if len(batches) == 1 else [s for b in batches for s in b.samples]
        flat = self._sample_params(samples)
        others: dict[str, tuple[str, list[tuple[Any, ...]]]] = {}
        quarantined: list[tuple[tuple[Any, ...], Rejected]] = []
        for item in group:
            for table, sql, records, to_row in self._record_tables(item):
                if table == "quarantine":
                    quarantined.extend(((*to_row(x), self._next_seq(table)), x) for x in records)
                elif records:
                    rows = others.setdefault(table, (sql, []))[1]
                    rows.extend((*to_row(x), self._next_seq(table)) for x in records)
        conn.execute("BEGIN IMMEDIATE")
        inserted = self._insert_samples(conn, flat) if samples else 0
        counts = {"sample": inserted}
        for table, (sql, rows) in others.items():
            before_changes = conn.total_changes
            conn.executemany(sql, rows)
            counts[table] = conn.total_changes - before_changes
        if quarantined:
            counts["quarantine"] = sum(self._insert_quarantined(conn, row, r) for row, r in quarantined)
        self._write_overflow(conn)
        self._log_commit(conn, before)
        conn.execute("COMMIT")
        return counts, len(samples) - inserted

    def _write_salvage(self, group: list[_Item]) -> tuple[dict[str, int], int]:
        """Record-by-record fallback after a data error; refused records are quarantined."""
        conn = self._conn()
        before = dict(self._seq)
        counts = dict.fromkeys(self._rows, 0)
        ignored = 0
        refused: list[tuple[str, Any, Exception]] = []
        conn.execute("BEGIN IMMEDIATE")
        for item in group:
            for s in item.batch.samples:
                try:
                    self._register_cells({s.cell})
                    n = conn.execute(_SAMPLE_ROW_SQL, self._sample_params([s])).rowcount
                except _DATA_ERRORS as exc:
                    refused.append(("sample", s, exc))
                    continue
                counts["sample"] += n
                ignored += 1 - n
            for table, sql, records, to_row in self._record_tables(item):
                for record in records:
                    try:
                        row = (*to_row(record), self._next_seq(table))
                        if table == "quarantine":
                            counts[table] += self._insert_quarantined(conn, row, record)
                        else:
                            counts[table] += conn.execute(sql, row).rowcount
                    except _DATA_ERRORS as exc:
                        refused.append((table, record, exc))
        for table, record, exc in refused:
            cell = getattr(record, "cell", None)
            t = getattr(record, "time", None)
            r = Rejected(
                source="storage",
                reason=f"unstorable {table} record",
                raw=repr(record),
                cell=cell if isinstance(cell, str) else None,
                time=float(t) if isinstance(t, int | float) and math.isfinite(t) else None,
                detail=f"{type(exc).__name__}: {exc}",
            )
            row = (self.station, time.time(), *_get_rejected(r), _quarantine_key(r), self._next_seq("quarantine"))
            counts["quarantine"] += self._insert_quarantined(conn, row, r)
        self._write_overflow(conn)
        self._log_commit(conn, before)
        conn.execute("COMMIT")
        if refused:
            log.error("%d unstorable records moved to the quarantine table of %s", len(refused), self.path)
        return counts, ignored

    # ------------------------------------------------------------------ reading

    def _connect_reader(self) -> sqlite3.Connection:
        if self._thread is None:
            raise StoreClosedError(f"{self.path}: store is not open")
        conn = sqlite3.connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA cache_size = -16384")
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: reads see committed data, never block writes).

        Connections of threads that have ended are closed here, so short-lived threads
        (a report's worker pool) do not leave connections behind.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect_reader()
            self._local.conn = conn
            with self._cond:
                for thread in [t for t in self._read_conns if not t.is_alive()]:
                    self._read_conns.pop(thread).close()
                self._read_conns[threading.current_thread()] = conn
        return conn

    def cells(self) -> list[str]:
        """Names of the cells that have samples, sorted."""
        rows = self._reader().execute(
            "SELECT name FROM cell WHERE EXISTS (SELECT 1 FROM sample WHERE cell_id = cell.id) ORDER BY name"
        )
        return [r[0] for r in rows]

    def _cell_id(self, conn: sqlite3.Connection, cell: str) -> int | None:
        row = conn.execute("SELECT id FROM cell WHERE name = ?", (cell,)).fetchone()
        return None if row is None else row[0]

    def read_samples(
        self, cell: str | None = None, since: float | None = None, until: float | None = None
    ) -> Iterator[Sample]:
        """Samples with ``since <= time < until``, streamed, ordered by time (then cell).

        It reads one consistent snapshot on its own connection; while a long export runs,
        the WAL cannot be checkpointed past that snapshot and grows.
        """
        if self._thread is None:  # fail now, not at the first next()
            raise StoreClosedError(f"{self.path}: store is not open")
        return self._iter_samples(cell, since, until)

    def _iter_samples(self, cell: str | None, since: float | None, until: float | None) -> Iterator[Sample]:
        sql = (
            "SELECT time, ?, voltage_V, current_A, pressure_MPa, temperature_C, cycle, step, mode "
            "FROM sample WHERE cell_id = ? AND time >= ? AND time < ? ORDER BY time"
        )
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        conn = self._connect_reader()
        try:
            conn.execute("BEGIN")  # one snapshot for all the per-cell cursors
            if cell is None:
                cells = conn.execute("SELECT name, id FROM cell ORDER BY name").fetchall()
            else:
                cell_id = self._cell_id(conn, cell)
                cells = [] if cell_id is None else [(cell, cell_id)]
            # The table is ordered by (cell, time): merge the per-cell ranges by (time, cell)
            # instead of letting SQLite sort the whole table.
            cursors = [conn.execute(sql, (name, cell_id, lo, hi)) for name, cell_id in cells]
            rows = cursors[0] if len(cursors) == 1 else heapq.merge(*cursors)
            yield from itertools.starmap(Sample, rows)
        finally:
            conn.close()

    def read_samples_decimated(self, cell: str, max_points: int = 5000) -> dict[str, np.ndarray]:
        """At most ``max_points`` samples of a cell for plotting, NaN where a value is missing.

        The cell's time span is cut into equal buckets and the first sample of each is taken
        by a key lookup, so the cost does not grow with the data (a year of 10-s data: ~25 ms).
        The first and the last sample are always included.
        """
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        keys = ("time", "voltage_V", "current_A", "pressure_MPa", "temperature_C")
        conn = self._reader()
        cell_id = self._cell_id(conn, cell)
        rows: list[tuple[Any, ...]] = []
        if cell_id is not None:
            few = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM sample WHERE cell_id = ? LIMIT ?)",
                (cell_id, max_points + 1),
            ).fetchone()[0]
            cols = ", ".join(keys)
            if few <= max_points:
                rows = conn.execute(f"SELECT {cols} FROM sample WHERE cell_id = ? ORDER BY time", (cell_id,)).fetchall()
            else:
                # Two queries: min() and max() together defeat SQLite's one-lookup optimization.
                (t0,) = conn.execute("SELECT min(time) FROM sample WHERE cell_id = ?", (cell_id,)).fetchone()
                (t1,) = conn.execute("SELECT max(time) FROM sample WHERE cell_id = ?", (cell_id,)).fetchone()
                buckets = max_points - 1
                width = (t1 - t0) / buckets
                s_cols = ", ".join(f"s.{k}" for k in keys)
                # CROSS JOIN keeps the buckets as the outer loop: one key lookup per bucket
                # (SQLite otherwise may scan the cell's rows and probe the buckets: 20x slower).
                rows = conn.execute(
                    f"""
                    WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i + 1 < :n)
                    SELECT {s_cols} FROM b CROSS JOIN sample AS s
                      ON s.cell_id = :id AND s.time = (
                        SELECT time FROM sample
                        WHERE cell_id = :id AND time >= :t0 + b.i * :w
                          AND time < min(:t0 + (b.i + 1) * :w, :t1)
                        ORDER BY time LIMIT 1)
                    ORDER BY b.i
                    """,
                    {"n": buckets, "id": cell_id, "t0": t0, "t1": t1, "w": width},
                ).fetchall()
                rows += conn.execute(
                    f"SELECT {cols} FROM sample WHERE cell_id = ? AND time = ?", (cell_id, t1)
                ).fetchall()
        table = np.array(rows, dtype=float).reshape(len(rows), len(keys))  # None -> NaN
        return {k: np.ascontiguousarray(table[:, j]) for j, k in enumerate(keys)}

    def read_samples_envelope(
        self, cell: str, max_points: int = 2000, since: float | None = None, until: float | None = None
    ) -> dict[str, np.ndarray]:
        """The min and max of every channel per time bucket (at most ``max_points`` buckets),
        for plots that must not hide a short excursion: "time" is each bucket's first sample,
        "<channel>_min" / "<channel>_max" its extremes (NaN where none), "n" its sample count.
        Unlike read_samples_decimated this reads every row in range (~1.3 µs per row, ~4 s for
        a year of one cell's 10-s data).
        """
        chans = ("voltage_V", "current_A", "pressure_MPa", "temperature_C")
        keys = ("time", "n", *(f"{c}_{m}" for c in chans for m in ("min", "max")))
        conn = self._reader()
        cell_id = self._cell_id(conn, cell)
        rows: list[tuple[Any, ...]] = []
        if cell_id is not None:
            lo = -math.inf if since is None else since
            hi = math.inf if until is None else until
            t0, t1 = conn.execute(
                "SELECT min(time), max(time) FROM sample WHERE cell_id = ? AND time >= ? AND time < ?",
                (cell_id, lo, hi),
            ).fetchone()
            if t0 is not None:
                width = max((t1 - t0) / max_points, 1e-9) * (1 + 1e-9)  # the last sample in the last bucket
                aggs = ", ".join(f"{m}({c})" for c in chans for m in ("min", "max"))
                rows = conn.execute(
                    f"SELECT min(time), count(*), {aggs} FROM sample WHERE cell_id = ? AND time >= ? AND time <= ? "
                    "GROUP BY CAST((time - ?) / ? AS INTEGER) ORDER BY 1",
                    (cell_id, t0, t1, t0, width),
                ).fetchall()
        table = np.array(rows, dtype=float).reshape(len(rows), len(keys))  # None -> NaN
        return {k: np.ascontiguousarray(table[:, j]) for j, k in enumerate(keys)}

    def _read_dicts(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur = self._reader().execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def read_steps(self, cell: str) -> list[dict[str, Any]]:
        """The cell's steps in order, as ``StepFeatures.to_dict()`` dicts."""
        cols = ", ".join(f'"{c}"' for c in _STEP_FIELDS)
        return self._read_dicts(f"SELECT {cols} FROM step WHERE cell = ? ORDER BY step_index", (cell,))

    def read_cycles(self, cell: str) -> list[dict[str, Any]]:
        """The cell's cycles in order, as ``CycleFeatures.to_dict()`` dicts."""
        cols = ", ".join(f'"{c}"' for c in _CYCLE_FIELDS)
        return self._read_dicts(f"SELECT {cols} FROM cycle WHERE cell = ? ORDER BY cycle", (cell,))

    def read_alerts(self, cell: str | None = None) -> list[dict[str, Any]]:
        """Alert transitions in time order, as DESIGN alert-event dicts plus ``time_s``."""
        where, params = ("WHERE cell = ?", (cell,)) if cell is not None else ("", ())
        rows = self._read_dicts(f"SELECT * FROM alert {where} ORDER BY time, id", params)
        return [{k: v for k, v in alert_dict(r).items() if k != "seq"} for r in rows]

    def read_rejected(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The last ``limit`` quarantined inputs, oldest first, with ``received`` (wall time)."""
        cols = ", ".join(("id", "received", *_REJECTED_FIELDS))
        rows = self._read_dicts(f"SELECT {cols} FROM quarantine ORDER BY seq DESC LIMIT ?", (limit,))
        for d in rows:
            del d["id"]
        return rows[::-1]

    def quarantine_summary(self) -> list[dict[str, Any]]:
        """Per reason: raw rows kept, and inputs only counted beyond the bound."""
        return self._read_dicts(
            "SELECT r.reason, r.kept, coalesce(o.dropped, 0) AS dropped FROM "
            "(SELECT reason, count(*) AS kept FROM quarantine GROUP BY reason) AS r "
            "LEFT JOIN quarantine_overflow AS o ON o.reason = r.reason ORDER BY r.reason",
            (),
        )

    def read_detector_states(self, cell: str) -> list[dict[str, Any]]:
        """The cell's detector statistics in time order, as DetectorStatus fields."""
        cols = ", ".join(_DETECTOR_FIELDS)
        return self._read_dicts(f"SELECT {cols} FROM detector WHERE cell = ? ORDER BY time, detector", (cell,))

    # ------------------------------------------------------------------ the log and its cursors

    def log_position(self, table: str) -> int:
        """The newest seq of a log table (0 when empty)."""
        _check_log_table(table)
        return self._reader().execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()[0]

    def log_read(self, table: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` committed rows of ``table`` with seq > ``after``, in log order, as dicts
        with ``seq`` and ``station`` (samples: the cell's name in ``cell``; alerts: the DESIGN
        alert-event dict plus ``time_s``)."""
        _check_log_table(table)
        if table == "sample":
            cols = ", ".join(f"s.{c}" for c in CSV_COLUMNS[2:])
            return self._read_dicts(
                f"SELECT s.seq, c.station, c.name AS cell, s.time, {cols} FROM sample AS s "
                "JOIN cell AS c ON c.id = s.cell_id WHERE s.seq > ? ORDER BY s.seq LIMIT ?",
                (after, limit),
            )
        rows = self._read_dicts(f"SELECT * FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        if table == "alert":
            return [alert_dict(r) for r in rows]
        if table == "quarantine":
            for r in rows:
                del r["qkey"], r["id"]
        return rows

    def alert_seq(self, event_id: str) -> int | None:
        """The log seq of an alert event, by its id."""
        row = self._reader().execute("SELECT seq FROM alert WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else row[0]

    def cursor(self, name: str, table: str) -> int | None:
        """A reader's acknowledged position in a log table; None for a reader never seen."""
        row = self._reader().execute("SELECT seq FROM cursor WHERE name = ? AND tbl = ?", (name, table)).fetchone()
        return None if row is None else row[0]

    def ack(self, name: str, table: str, seq: int) -> None:
        """Durably move a reader's cursor forward to ``seq`` (never back). Blocking: call it
        from a worker thread. It has a connection of its own, so an acknowledgement does not
        wait behind the samples queued for the writer."""
        _check_log_table(table)
        with self._ack_lock:
            if self._ack_conn is None:
                if self._thread is None:
                    raise StoreClosedError(f"{self.path}: store is not open")
                self._ack_conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._ack_conn.execute("PRAGMA busy_timeout = 10000")
            self._ack_conn.execute(
                "INSERT INTO cursor (name, tbl, seq, updated) VALUES (?, ?, ?, ?) ON CONFLICT (name, tbl) "
                "DO UPDATE SET seq = max(seq, excluded.seq), updated = excluded.updated",
                (name, table, seq, time.time()),
            )

    def cursors(self) -> list[dict[str, Any]]:
        """Every reader's position: name, tbl, seq, updated (wall time)."""
        return self._read_dicts("SELECT name, tbl, seq, updated FROM cursor ORDER BY name, tbl", ())

    def log_backlog(self, table: str, name: str) -> tuple[int, float | None]:
        """(rows a reader has not acknowledged, wall time the oldest of them was committed)."""
        _check_log_table(table)
        return backlog_after(self._reader(), table, self.cursor(name, table) or 0)

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(batch_seq)`` from the writer thread after each commit; ``batch_seq`` is
        the number :meth:`write` returned for the last batch in it."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def enforce_retention(
        self, days: float, now: float | None = None, readers: set[str] | None = None
    ) -> dict[str, int]:
        """Delete rows older than ``days`` that every reader (every cursor of that table) has
        acknowledged; rows of a table nobody reads count as passed. ``readers``: the names of
        the readers configured now; the cursors of others (a notifier or InfluxDB since removed
        from the config) no longer hold rows back. Returns rows deleted per table. Blocking, one
        cell at a time for samples (key-range deletes, never a table scan)."""
        cutoff = (time.time() if now is None else now) - days * 86400.0
        time_col = {
            "sample": "time",
            "step": "t_end",
            "cycle": "t_end",
            "detector": "time",
            "alert": "time",
            "quarantine": "received",
        }
        deleted: dict[str, int] = {}
        with self._ack_lock:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            try:
                for table in LOG_TABLES:
                    cursors = conn.execute("SELECT name, seq FROM cursor WHERE tbl = ?", (table,)).fetchall()
                    held = [seq for name, seq in cursors if readers is None or name in readers]
                    passed = min(held) if held else math.inf
                    limit = passed if math.isfinite(passed) else 2**62
                    n = 0
                    if table == "sample":
                        for (cell_id,) in conn.execute("SELECT id FROM cell").fetchall():
                            n += conn.execute(
                                "DELETE FROM sample WHERE cell_id = ? AND time < ? AND (seq IS NULL OR seq <= ?)",
                                (cell_id, cutoff, limit),
                            ).rowcount
                    else:
                        n = conn.execute(
                            f"DELETE FROM {table} WHERE {time_col[table]} < ? AND (seq IS NULL OR seq <= ?)",
                            (cutoff, limit),
                        ).rowcount
                    conn.execute("DELETE FROM commit_log WHERE tbl = ? AND last_seq <= ?", (table, limit))
                    deleted[table] = n
            finally:
                conn.close()
        return deleted

    def count(self, table: str, cell: str | None = None) -> int:
        """Rows in a table, or of one cell (a scan: seconds for ~100 M samples)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; one of {', '.join(TABLES)}")
        conn = self._reader()
        if cell is None:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if table == "sample":
            cell_id = self._cell_id(conn, cell)
            return (
                0
                if cell_id is None
                else conn.execute("SELECT count(*) FROM sample WHERE cell_id = ?", (cell_id,)).fetchone()[0]
            )
        if table in ("meta", "cell"):
            raise ValueError(f"table {table!r} has no per-cell rows")
        return conn.execute(f"SELECT count(*) FROM {table} WHERE cell = ?", (cell,)).fetchone()[0]
