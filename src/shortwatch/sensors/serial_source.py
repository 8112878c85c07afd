"""Serial source: a load-cell amplifier or meter on a serial port, force -> stack pressure.

Stream mode: the device prints lines (e.g. an HX711 board printing ``A1,12.34``). Poll mode:
a command per channel (``MEAS:FORC? 1``), one reply line each, with a timeout. A line is cut
into fields by a regex with named groups or by a CSV column map; the force of a channel is
``(raw - tare) * factor`` in N or kgf, and the pressure P[MPa] = F[N] / (100 * area[cm2])
over the cell's ``pressure_area_cm2``. Without a channel map (stream mode) the channel a line
names is the cell id, with no tare and a factor of 1. Devices give no timestamps: a sample's time is the
host's arrival time, kept strictly increasing (two lines in one read must not collide).

The splitter and parser are pure (bytes in, Sample/Rejected out); ranges, order and
duplicates are the shared gate's (daemon/validation.py). The port going away (unplug),
garbage and partial lines, and a silent device are all survived: the port is reopened with
backoff, bad lines are quarantined, silence shows in ``health``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from shortwatch.daemon.runner import Emit
from shortwatch.model import Rejected, Sample
from shortwatch.sensors.health import SourceHealth, reconnect_delay
from shortwatch.settings import CellSpec, SerialChannel, SerialSource

log = logging.getLogger(__name__)

KGF_N = 9.80665
_EOL = re.compile(rb"[\r\n]")


class LineSplitter:
    """Bytes as they come off the port -> complete lines. A run of ``max_bytes`` without an
    end of line (a baud-rate mismatch, noise) is cut off and handed back as garbage."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.buf = b""

    def feed(self, data: bytes) -> tuple[list[bytes], list[bytes]]:
        """(complete non-empty lines, overlong fragments)."""
        pieces = _EOL.split(self.buf + data)
        self.buf = pieces.pop()
        lines = [p for p in pieces if p]
        long = [p for p in lines if len(p) > self.max_bytes]
        if long:
            lines = [p for p in lines if len(p) <= self.max_bytes]
        while len(self.buf) > self.max_bytes:
            long.append(self.buf[: self.max_bytes])
            self.buf = self.buf[self.max_bytes :]
        return lines, long

    def reset(self) -> bytes:
        """Forget a partial line (the port went away mid-line); returns it."""
        rest, self.buf = self.buf, b""
        return rest


class LineParser:
    """One line of the device's protocol -> a pressure Sample, or a Rejected with the reason."""

    def __init__(self, cfg: SerialSource, area_of: Callable[[str], float], source: str):
        self.cfg = cfg
        self.source = source
        self.area_of = area_of
        self.rx = re.compile(cfg.pattern) if cfg.pattern else None
        self.channels: dict[str, SerialChannel] = cfg.channels
        self.only = next(iter(self.channels)) if len(self.channels) == 1 else None

    def fields(self, text: str) -> dict[str, str] | None:
        if self.rx is not None:
            m = self.rx.fullmatch(text)
            return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
        cols = [c.strip() for c in text.split(self.cfg.csv_delimiter)]
        if len(cols) != len(self.cfg.csv_columns):
            return None
        return dict(zip(self.cfg.csv_columns, cols, strict=True))

    def parse(self, line: bytes, t: float, channel: str | None = None) -> Sample | Rejected:
        """``channel``: the polled channel (poll mode), used when the reply does not name one."""
        raw = line.decode(self.cfg.encoding, "backslashreplace")[:500]
        try:
            text = line.decode(self.cfg.encoding).strip()
        except (UnicodeDecodeError, LookupError) as exc:
            return Rejected(self.source, "bad_encoding", raw, time=t, detail=str(exc)[:200])
        got = self.fields(text)
        if got is None:
            how = "the pattern" if self.rx is not None else f"{len(self.cfg.csv_columns)} CSV columns"
            return Rejected(self.source, "unparsed_line", raw, time=t, detail=f"does not match {how}")
        ch = got.get("channel", channel or self.only)
        spec = self.channels.get(ch) if ch is not None else None
        if spec is None and not self.channels and ch:  # no channel map: the line names the cell
            spec = SerialChannel(cell=ch)
        if spec is None:
            why = f"channel {ch!r} is not in channels" if self.channels else "the line names no channel (cell)"
            return Rejected(self.source, "unknown_channel", raw, time=t, detail=why)
        value = got.get("force", got.get("value"))
        try:
            reading = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return Rejected(self.source, "bad_value", raw, cell=spec.cell, time=t, detail=f"force {value!r}")
        force = (reading - spec.tare) * spec.factor
        if (spec.unit or self.cfg.force_unit) == "kgf":
            force *= KGF_N
        p = force / (100.0 * self.area_of(spec.cell)) if math.isfinite(force) else force
        return Sample(t, spec.cell, pressure_MPa=p)


class SerialSourceRunner:
    """Opens the port (again and again, with backoff) and streams or polls it."""

    def __init__(self, cfg: SerialSource, cell_spec: Callable[[str], CellSpec], *, name: str):
        self.cfg = cfg
        self.name = name
        self.parser = LineParser(cfg, lambda c: cell_spec(c).load_cell_area_cm2, name)
        self.splitter = LineSplitter(cfg.max_line_bytes)
        self.health = SourceHealth(reason="port not opened yet")
        self.last_t = 0.0
        self.timeouts = 0  # poll mode: requests with no reply in time

    def checkpoint(self) -> dict[str, Any]:
        return {}  # a device has no position to resume from: what it prints while we are down is gone

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def _now(self) -> float:
        t = time.time()
        self.last_t = t = t if t > self.last_t else self.last_t + 1e-6
        return t

    async def run(self, emit: Emit) -> None:
        import serial
        import serial_asyncio_fast

        cfg = self.cfg
        attempt = 0
        logged = ""
        while True:
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(url=cfg.port, baudrate=cfg.baudrate)
            except (OSError, serial.SerialException) as exc:
                reason = f"cannot open {cfg.port}: {exc}"
                if self.health.set(False, reason) or reason != logged:
                    log.warning("%s: %s (retrying with backoff)", self.name, reason)
                    logged = reason
                await asyncio.sleep(reconnect_delay(attempt, cfg.reopen_min_s, cfg.reopen_max_s))
                attempt += 1
                continue
            attempt, logged = 0, ""
            self.health.set(True, "open")
            log.info("%s: %s open (%d baud, %s mode)", self.name, cfg.port, cfg.baudrate, cfg.mode)
            try:
                if cfg.mode == "stream":
                    await self._stream(reader, emit)
                else:
                    await self._poll(reader, writer, emit)
                reason = "the port closed"
            except (OSError, serial.SerialException) as exc:
                reason = f"the port failed: {exc}"
            finally:
                writer.close()
            rest = self.splitter.reset()
            if rest:
                r = Rejected(self.name, "partial_line", rest.decode(cfg.encoding, "backslashreplace"), time=self._now())
                await emit([r], self.name)
            self.health.set(False, reason)
            log.warning("%s: %s: %s; reopening", self.name, cfg.port, reason)

    def _items(self, data: bytes, channel: str | None = None) -> list[Sample | Rejected]:
        lines, long = self.splitter.feed(data)
        items: list[Sample | Rejected] = [self.parser.parse(line, self._now(), channel) for line in lines]
        for frag in long:
            raw = frag.decode(self.cfg.encoding, "backslashreplace")
            items.append(
                Rejected(self.name, "line_too_long", raw, time=self._now(), detail=f"> {self.cfg.max_line_bytes} bytes")
            )
        return items

    def _silent(self, why: str) -> None:
        if self.health.set(False, why):
            log.warning("%s: %s", self.name, why)

    def _heard(self) -> None:
        if self.health.set(True, "open"):
            log.info("%s: %s: data again", self.name, self.cfg.port)

    async def _stream(self, reader: asyncio.StreamReader, emit: Emit) -> None:
        while True:
            try:
                async with asyncio.timeout(self.cfg.silence_s):  # not wait_for: see shortwatch.aio
                    data = await reader.read(4096)
            except TimeoutError:
                self._silent(f"{self.cfg.port} open, but no data for {self.cfg.silence_s:g} s")
                continue
            if not data:
                return
            self._heard()
            items = self._items(data)
            if items:
                await emit(items, self.name)

    async def _poll(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, emit: Emit) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            answered = 0
            items: list[Sample | Rejected] = []
            for ch in self.parser.channels:
                writer.write(cfg.poll_command.format(channel=ch).encode(cfg.encoding))
                await writer.drain()
                got = await self._reply(reader, ch)
                if got is None:
                    self.timeouts += 1
                    continue
                answered += 1
                items.extend(got)
            if items:
                await emit(items, self.name)
            if answered:
                self._heard()
            else:
                self._silent(f"{cfg.port}: no reply to polls within {cfg.poll_timeout_s:g} s")
            await asyncio.sleep(max(0.0, cfg.poll_interval_s - (loop.time() - started)))

    async def _reply(self, reader: asyncio.StreamReader, ch: str) -> list[Sample | Rejected] | None:
        """The items up to and including the reply line to one poll; None on a timeout."""
        deadline = asyncio.get_running_loop().time() + self.cfg.poll_timeout_s
        items: list[Sample | Rejected] = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return items or None
            try:
                async with asyncio.timeout(left):
                    data = await reader.read(4096)
            except TimeoutError:
                return items or None
            if not data:
                raise OSError("end of file")
            items.extend(self._items(data, ch))
            if any(isinstance(i, Sample) or i.reason != "line_too_long" for i in items):
                return items
