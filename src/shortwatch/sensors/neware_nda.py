"""Neware BTS binary files: ``.nda`` and ``.ndax`` (a zip of XML and binary parts), via NewareNDA.

NewareNDA (BSD-3) reads a whole file into a table; it has no incremental API. So a poll
re-reads the file when its size or modification time changed, and passes on only the
rows after the last one passed on before. What was passed on is recognised by the first
row and the last row passed on (index and timestamp): a file whose rows there differ is
another run and is read from the start.

A whole-file read costs time in proportion to the file (the 700k-record .ndax: ~5-8 s), so
while following, a file is read again at most every ten times its last read took: the
CPU spent stays under ~10 %, at the price of latency on very large files.

An ``.ndax`` is a zip whose central directory is written last, so while Neware writes it
the file is not a valid zip; it is read only once it is one again (complete). A ``.nda``
that NewareNDA cannot read yet (being written) is tried again at the next change.

Mapping: time = ``Timestamp`` (a time without a zone is local, in the configured zone);
voltage ``Voltage``; current ``Current(mA)`` / 1000, signed by Neware (discharge negative)
and checked against ``Status`` (``CC_Chg``, ``CC_DChg``, ``CV_Chg``, ``Rest``), which also
gives the mode; cycle ``Cycle``; step ``Step_Index`` (the protocol's step); temperature ``T1``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from shortwatch.model import Rejected, Sample
from shortwatch.sensors.canonical_csv import FormatError
from shortwatch.sensors.neware_csv import neware_state

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NDA_MAGIC = b"NEWARE"
_REQUIRED = frozenset({"Index", "Timestamp", "Voltage", "Current(mA)", "Cycle", "Status"})
ZIP_MAGIC = b"PK\x03\x04"


def sniff_nda(head: bytes) -> bool:
    return head.startswith(NDA_MAGIC)


def sniff_ndax(head: bytes) -> bool:
    """A zip whose first entries are Neware's step/test XML files."""
    return head.startswith(ZIP_MAGIC) and any(
        name in head for name in (b"Step.xml", b"TestInfo.xml", b"VersionInfo.xml", b"data.ndc")
    )


class NewareDecoder:
    """Polls one .nda/.ndax file; each poll returns rows not returned before."""

    reread_factor = 10.0  # a changed file is read again after this many times its last read took

    def __init__(self, source: str, default_cell: str, tz: str = "UTC"):
        self.source = source
        self.cell = default_cell
        self._zone = ZoneInfo(tz)
        self.n_done = 0
        self.first_key: list[Any] | None = None  # (Index, Unix time) of the first row
        self.last_key: list[Any] | None = None  # of the last row returned
        self.offset = 0  # the file size when it was last read whole
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the last complete read
        self._rows: list[Sample | Rejected] = []  # problems to report
        self._pending: pd.DataFrame | None = None  # rows read and not yet returned (converted per poll)
        self._pending_times: list[float] = []
        self._problem = ""
        self._next_read = 0.0  # monotonic time before which a changed file is not read again

    def state(self) -> dict[str, Any]:
        return {"n_done": self.n_done, "first_key": self.first_key, "last_key": self.last_key, "offset": self.offset}

    def load(self, state: dict[str, Any]) -> None:
        self.n_done = int(state["n_done"])
        self.first_key, self.last_key, self.offset = state["first_key"], state["last_key"], int(state["offset"])

    def poll(self, path: Path, max_records: int = 5000, final: bool = False) -> list[Sample | Rejected]:
        if self._pending is None and not self._rows:
            self._refresh(path, final)
        if self._rows:
            out, self._rows = self._rows, []
            return out
        if self._pending is None:
            return []
        df, times = self._pending.iloc[:max_records], self._pending_times[:max_records]
        if len(self._pending) > max_records:
            self._pending, self._pending_times = self._pending.iloc[max_records:], self._pending_times[max_records:]
        else:
            self._pending, self._pending_times = None, []
        return self._samples(df, times)

    def _refresh(self, path: Path, final: bool) -> None:
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns)
        if key == self._seen:
            return
        started = time.monotonic()
        if not final and started < self._next_read:
            return  # see the module docstring: bounded CPU for large files
        with path.open("rb") as f:
            head = f.read(8)
        if not (head.startswith(NDA_MAGIC) or head.startswith(ZIP_MAGIC)) and len(head) >= 6:
            raise FormatError(f"{self.source}: not a Neware .nda/.ndax file (it starts with {head!r})")
        if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
            if final:
                self._report("truncated_record", "the .ndax is not a complete zip file")
            return  # being written: its directory comes last
        import NewareNDA  # here, not at the top: it loads pandas, which adds 0.5 s to every start

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = NewareNDA.read(str(path))
        except Exception as exc:  # NewareNDA raises many kinds on a file it cannot (yet) read
            if final:
                self._report("bad_structure", f"NewareNDA cannot read the file: {type(exc).__name__}: {exc}")
            else:
                log.debug("%s: not readable yet (%s); trying again when it changes", self.source, exc)
            return
        self._seen = key
        missing = _REQUIRED.difference(df.columns)
        if missing:
            self._report("bad_structure", f"NewareNDA gave no {', '.join(sorted(missing))} column")
            return
        self._next_read = started + self.reread_factor * (time.monotonic() - started)
        times = self._times(df["Timestamp"])
        index = df["Index"].tolist()
        if self.n_done and not self._same_run(index, times):
            log.warning("%s: the file now holds another run; reading it from the start", self.source)
            self.n_done, self.first_key, self.last_key = 0, None, None
        if len(df) < self.n_done:
            return  # fewer rows than already passed on: the same run, being rewritten
        if len(df) > self.n_done:
            sample_times = self._sub_second(df, times)
            self._pending, self._pending_times = df.iloc[self.n_done :], sample_times[self.n_done :]
            if self.first_key is None:
                self.first_key = [index[0], times[0]]
            self.last_key = [index[-1], times[-1]]
            self.n_done = len(df)
        self.offset = st.st_size

    def _same_run(self, index: list[int], times: list[float]) -> bool:
        if len(index) < self.n_done or self.first_key is None or self.last_key is None:
            return len(index) > 0 and [index[0], times[0]] == self.first_key
        k = self.n_done - 1
        return [index[0], times[0]] == self.first_key and [index[k], times[k]] == self.last_key

    @staticmethod
    def _sub_second(df: pd.DataFrame, times: list[float]) -> list[float]:
        """Older .nda files stamp records to the whole second while logging every 0.1-0.5 s, so
        several records share a time (and the validator would quarantine all but one). There
        the step time ``Time`` (which starts at 0 in each step) gives the fraction: within a
        step, time = the step's start + Time, the start being the latest ``Timestamp - Time``
        (a whole-second stamp is at most 1 s late, never early). Files stamped to the ms are
        left as they are. The checks of what was already read use the stamps themselves."""
        import numpy as np
        import pandas as pd

        t = np.asarray(times, dtype="float64")
        elapsed = df["Time"].to_numpy(dtype="float64")
        if len(t) == 0 or np.any(np.nan_to_num(t) % 1.0) or not np.any(elapsed % 1.0):
            return times
        start = pd.Series(t - elapsed).groupby(df["Step"].to_numpy()).transform("max").to_numpy()
        return (start + elapsed).tolist()  # type: ignore[no-any-return]

    def _times(self, ts: pd.Series) -> list[float]:
        import pandas as pd

        if ts.dt.tz is None:
            ts = ts.dt.tz_localize(self._zone, ambiguous="NaT", nonexistent="NaT")
        seconds = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.tolist()  # type: ignore[no-any-return]

    def _samples(self, df: pd.DataFrame, times: list[float]) -> list[Sample | Rejected]:
        def col(name: str, scale: float = 1.0) -> list[Any]:
            if name not in df:
                return [None] * len(df)
            return (df[name].astype("float64") * scale).tolist()  # type: ignore[no-any-return]

        volts, amps, temps = col("Voltage"), col("Current(mA)", 1e-3), col("T1")
        cycles = df["Cycle"].astype("int64").tolist()
        steps = df["Step_Index" if "Step_Index" in df else "Step"].astype("int64").tolist()
        states = df["Status"].astype(str).tolist()
        rules = {state: neware_state(state) for state in set(states)}
        cell = self.cell
        out: list[Sample | Rejected] = []
        for k, t in enumerate(times):
            if t != t:
                out.append(
                    Rejected(
                        self.source,
                        "missing_time",
                        f"Index={df['Index'].iat[k]}",
                        cell=self.cell,
                        detail="no timestamp (or one that does not exist in the configured zone)",
                    )
                )
                continue
            sign, mode = rules[states[k]]
            i = amps[k]
            if sign and i == i:
                i = sign * abs(i)
            out.append(Sample(t, cell, volts[k], i, None, temps[k], cycles[k], steps[k], mode))
        return out

    def _report(self, reason: str, detail: str) -> None:
        if detail != self._problem:
            self._problem = detail
            log.warning("%s: %s", self.source, detail)
            self._rows = [Rejected(self.source, reason, "", cell=self.cell, detail=detail)]
