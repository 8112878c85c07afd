"""A live `shortwatch run` over a followed folder, abused at random: appends, partial lines,
files rewritten (a new inode) or truncated, garbage lines and kill -9s. After each run:

- the stored samples are exactly the distinct good rows written (none lost, none twice);
- no quarantined input is stored twice;
- every alert transition in the store reached the JSONL file exactly once, and nothing else did.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_process import start_run, store_rows

T0 = 1_767_600_000
HEADER = "time,cell,voltage_V,current_A,pressure_MPa\n"

OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "partial", "garbage", "rewrite", "truncate", "kill"]),
        st.integers(min_value=5, max_value=40),
        st.floats(min_value=0.0, max_value=0.4),
    ),
    min_size=4,
    max_size=9,
)


class Lab:
    """The followed folder, the rows written so far, and the daemon."""

    def __init__(self, tmp: Path):
        self.data = tmp / "data"
        self.data.mkdir()
        self.path = self.data / "cells.csv"
        self.path.write_text(HEADER)
        self.state = tmp / "state"
        self.jsonl = tmp / "alerts.jsonl"
        self.cfg = tmp / "cfg.toml"
        self.cfg.write_text(
            f'[daemon]\nhttp = ""\nstate_dir = "{self.state}"\ncheckpoint_interval_s = 0.5\n'
            f'[cells.P1]\nkind = "symmetric"\n[alerts]\njsonl_path = "{self.jsonl}"\nconsole = false\n'
            f'[[sources]]\ntype = "file"\npaths = ["{self.data}/*.csv"]\npoll_s = 0.2\n'
        )
        self.n = 0  # rows written: row k is at T0 + 10 k
        self.good: set[float] = set()
        self.proc: subprocess.Popen | None = None

    def row(self) -> str:
        k = self.n
        self.n += 1
        t = T0 + 10 * k
        self.good.add(float(t))
        pressure = 0.2 if (k // 25) % 4 == 3 else 5.0  # every 100 rows a pressure excursion: an alert
        sign = 1 if (k // 30) % 2 == 0 else -1
        return f"{t},P1,{0.02 * sign},{0.0004 * sign},{pressure}\n"

    def append(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text)

    def start(self) -> None:
        self.proc = start_run(self.cfg)

    def wait_stored(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.stored_times()) < len(self.good) and time.monotonic() < deadline:
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def stored_times(self) -> list[float]:
        return [t for (t,) in store_rows(self.state / "shortwatch.sqlite", "SELECT time FROM sample ORDER BY time")]


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_abuse_of_a_followed_folder_loses_and_repeats_nothing(tmp_path_factory, ops) -> None:
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.start()
    try:
        for op, n, pause in ops:
            if op == "append":
                lab.append("".join(lab.row() for _ in range(n)))
            elif op == "partial":  # a row written in two pieces, faster than the idle read (1 s)
                line = lab.row()
                lab.append(line[: len(line) // 2])
                time.sleep(0.05)
                lab.append(line[len(line) // 2 :])
            elif op == "garbage":
                lab.append("".join(lab.row() for _ in range(n // 2)) + "not,a,row\n\x00\x01garbage\n")
            elif op == "rewrite":  # the exporter writes the whole file again, to a new inode
                tmp = lab.data / "cells.tmp"
                tmp.write_text(lab.path.read_text() + "".join(lab.row() for _ in range(n)))
                os.replace(tmp, lab.path)
            elif op == "truncate":  # rotated: the same path starts again, with later rows
                # (rows a writer destroys before anyone read them are gone for any reader: a
                # logger rotates long after writing, so the test waits until they are stored)
                lab.wait_stored()
                lab.path.write_text(HEADER + "".join(lab.row() for _ in range(n)))
            elif op == "kill":
                lab.kill9()
                lab.start()
            time.sleep(pause)
        lab.wait_stored()
        assert lab.stop() == 0
    finally:
        if lab.proc is not None and lab.proc.poll() is None:
            lab.proc.kill()

    stored = lab.stored_times()
    assert len(stored) == len(set(stored))
    lost, extra = sorted(lab.good - set(stored)), sorted(set(stored) - lab.good)
    assert not lost and not extra, f"lost {lost[:5]}, extra {extra[:5]}"
    with sqlite3.connect(lab.state / "shortwatch.sqlite") as conn:
        quarantined = conn.execute("SELECT source, reason, cell, time, raw FROM quarantine").fetchall()
        logged = [r[0] for r in conn.execute("SELECT event_id FROM alert ORDER BY seq")]
    assert len(quarantined) == len(set(quarantined)), "a quarantined input was stored twice"
    delivered = [json.loads(x)["id"] for x in lab.jsonl.read_text().splitlines()] if lab.jsonl.exists() else []
    assert delivered == logged, "the JSONL file must hold every logged transition once, in order"
