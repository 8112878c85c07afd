"""Read-only questions about the store that `status` and the health figures ask.

It opens the SQLite file read-only on its own connection, so it works beside a running
daemon (WAL: readers never block the writer) and on the state_dir of a stopped one, and
can never change the log.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortwatch.storage.sqlite import backlog_after


@dataclass(frozen=True)
class Backlog:
    rows: int
    oldest_age_s: float | None  # wall seconds since the oldest unsent row was committed


class StoreView:
    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            # check_same_thread off: the health watcher asks from a worker thread, one at a time
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 1000")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def last_samples(self) -> dict[str, float]:
        """Each cell's newest sample time (data time; one key lookup per cell)."""
        rows = self._db().execute(
            "SELECT name, (SELECT max(time) FROM sample WHERE cell_id = cell.id) FROM cell ORDER BY name"
        )
        return {name: t for name, t in rows if t is not None}

    def cell_status(self) -> dict[str, str]:
        """Each cell's latest overall status (detector ``cell_status``)."""
        rows = self._db().execute(
            "SELECT d.cell, d.state FROM detector AS d JOIN ("
            "  SELECT cell, max(time) AS t FROM detector WHERE detector = 'cell_status' GROUP BY cell"
            ") AS m ON d.cell = m.cell AND d.time = m.t AND d.detector = 'cell_status'"
        )
        return dict(rows.fetchall())

    def quarantine_counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 2 DESC")
        return dict(rows.fetchall())

    def alert_transitions(self) -> dict[str, int]:
        """Alert transitions in the log, by state (firing, resolved)."""
        return dict(self._db().execute("SELECT state, count(*) FROM alert GROUP BY state").fetchall())

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Alerts whose latest transition is a firing one, worst first."""
        cur = self._db().execute(
            "SELECT cell, detector, severity, time, summary FROM ("
            "  SELECT cell, detector, severity, state, time, summary, row_number() OVER ("
            "    PARTITION BY cell, detector ORDER BY time DESC, rowid DESC) AS rn FROM alert"
            ") WHERE rn = 1 AND state = 'firing' "
            "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, time"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def backlogs(self, now: float | None = None) -> dict[str, Backlog]:
        """Each durable reader's backlog: rows past its cursor, and how long the oldest has waited.

        ``SqliteStore.log_backlog``'s question for every cursor, asked on a read-only connection
        so that it also works on the state_dir of a stopped daemon (whose store nobody has open).
        """
        now = time.time() if now is None else now
        db = self._db()
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cursor'").fetchone():
            return {}
        out: dict[str, Backlog] = {}
        for name, table, after in db.execute("SELECT name, tbl, seq FROM cursor ORDER BY name, tbl").fetchall():
            rows, committed = backlog_after(db, table, after)
            oldest = None if committed is None else max(0.0, now - committed)
            prev = out.get(name)  # a reader of several tables: its totals
            if prev is not None:
                ages = [a for a in (prev.oldest_age_s, oldest) if a is not None]
                rows, oldest = rows + prev.rows, max(ages) if ages else None
            out[name] = Backlog(rows, oldest)
        return out
