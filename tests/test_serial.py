"""Serial source: line splitting and parsing (unit and property tests), and a socat pty pair
with a device emulator: stream mode through an unplug/replug with 1 % garbage lines, poll
mode with a channel that never answers, a silent device."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from live_daemon import Daemon
from serial_emulator import Device, Socat
from shortwatch.model import Rejected, Sample
from shortwatch.sensors.serial_source import KGF_N, LineParser, LineSplitter
from shortwatch.settings import ConfigError, SerialSource, Settings, parse_settings

AREA = {"A1": 0.785, "B2": 1.0}


def cfg(**kw: Any) -> SerialSource:
    base: dict[str, Any] = {"type": "serial", "port": "/dev/null", "channels": {"1": "A1", "2": "B2"}}
    return SerialSource.model_validate({**base, **kw})


def parser(**kw: Any) -> LineParser:
    return LineParser(cfg(**kw), AREA.__getitem__, "ser")


def test_splitter_joins_partial_lines_and_cuts_runaway_garbage() -> None:
    sp = LineSplitter(max_bytes=16)
    assert sp.feed(b"1,39") == ([], [])
    assert sp.feed(b"2.7\r\n2,4") == ([b"1,392.7"], [])
    assert sp.feed(b"1\r\r\n\n") == ([b"2,41"], [])
    lines, long = sp.feed(b"x" * 40)
    assert lines == [] and long == [b"x" * 16, b"x" * 16] and sp.buf == b"x" * 8
    lines, long = sp.feed(b"y" * 20 + b"\n1,1\n")
    assert lines == [b"1,1"] and long == [b"x" * 8 + b"y" * 20]
    sp.feed(b"2,5")
    assert sp.reset() == b"2,5" and sp.buf == b""


def test_force_to_pressure_with_tare_factor_and_units() -> None:
    p = parser(
        channels={"1": {"cell": "A1", "tare": 2.0, "factor": 1.01}, "2": {"cell": "B2", "unit": "kgf"}},
        force_unit="N",
    )
    a = p.parse(b"1,394.7", 10.0)
    assert isinstance(a, Sample) and a.cell == "A1" and a.time == 10.0
    assert a.pressure_MPa == pytest.approx((394.7 - 2.0) * 1.01 / (100 * 0.785))
    b = p.parse(b" 2 , 51.0 ", 11.0)
    assert isinstance(b, Sample) and b.pressure_MPa == pytest.approx(51.0 * KGF_N / 100.0)
    assert b.voltage_V is None and b.current_A is None


def test_regex_pattern_single_channel_and_poll_replies() -> None:
    rx = parser(pattern=r"CH(?P<channel>\d):\s*(?P<force>[-+0-9.eE]+)\s*N")
    s = rx.parse(b"CH2: 100.0 N", 1.0)
    assert isinstance(s, Sample) and (s.cell, s.pressure_MPa) == ("B2", pytest.approx(1.0))
    single = parser(channels={"0": "A1"}, pattern=r"(?P<value>[-+0-9.]+)")
    assert single.parse(b"78.5", 1.0).cell == "A1"  # type: ignore[union-attr]
    poll = parser(pattern=r"(?P<force>[-+0-9.]+)")
    assert poll.parse(b"100", 1.0, channel="2").cell == "B2"  # type: ignore[union-attr]


def test_without_a_channel_map_the_line_names_the_cell() -> None:
    """DESIGN's serial example has no channel map: an amplifier printing ``A1,12.34`` in N."""
    p = LineParser(SerialSource.model_validate({"type": "serial", "port": "/dev/null"}), AREA.__getitem__, "ser")
    a = p.parse(b"A1,78.5", 3.0)
    assert isinstance(a, Sample) and a.cell == "A1" and a.pressure_MPa == pytest.approx(78.5 / (100 * 0.785))
    b = p.parse(b"B2,100", 4.0)
    assert isinstance(b, Sample) and (b.cell, b.pressure_MPa) == ("B2", pytest.approx(1.0))
    r = p.parse(b",100", 5.0)
    assert isinstance(r, Rejected) and r.reason == "unknown_channel" and "names no channel" in r.detail


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"garb\xffage", "bad_encoding"),
        (b"hello", "unparsed_line"),
        (b"1,2,3", "unparsed_line"),
        (b"9,100", "unknown_channel"),
        (b"1,abc", "bad_value"),
        (b"1,", "bad_value"),
    ],
)
def test_bad_lines_are_rejected_with_their_reason(line: bytes, reason: str) -> None:
    r = parser().parse(line, 5.0)
    assert isinstance(r, Rejected) and (r.reason, r.source, r.time) == (reason, "ser", 5.0)
    assert r.raw


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "sources": [
                    {"type": "serial", "port": "/dev/x", "channels": {}, "pattern": "(?P<ch>\\d+)", "mode": "burst"}
                ]
            }
        )
    text = "\n".join(exc.value.problems)
    assert "sources[0].mode" in text
    assert "sources[0].pattern: the pattern needs a named group (?P<force>...)" in text
    with pytest.raises(ConfigError, match=r"sources\[0\]: .*poll mode needs channels"):
        parse_settings({"sources": [{"type": "serial", "port": "/dev/x", "mode": "poll"}]})
    with pytest.raises(ConfigError, match=r"sources\[0\].poll_command: only \{channel\} may be filled in"):
        parse_settings(
            {"sources": [{"type": "serial", "port": "/dev/x", "channels": {"1": "A1"}, "poll_command": "R{ch}"}]}
        )


# ---------------------------------------------------------------- property tests

good_line = st.tuples(st.sampled_from(["1", "2"]), st.floats(0, 5000, allow_nan=False)).map(
    lambda cv: f"{cv[0]},{cv[1]:.3f}".encode()
)
garbage = st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_random_bytes_in_any_chunks_never_raise(data: bytes, chunk: int) -> None:
    sp, p = LineSplitter(64), parser()
    for i in range(0, len(data), chunk):
        lines, long = sp.feed(data[i : i + chunk])
        assert all(len(x) <= 64 for x in long)
        for line in lines:
            r = p.parse(line, 1.0)
            assert isinstance(r, Sample) or (isinstance(r, Rejected) and r.reason)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(good_line.map(lambda b: ("ok", b)), garbage.map(lambda b: ("junk", b))), max_size=30))
def test_good_lines_around_garbage_are_kept(lines: list[tuple[str, bytes]]) -> None:
    sp, p = LineSplitter(256), parser()
    got, _ = sp.feed(b"".join(b + b"\r\n" for _, b in lines))
    items = [p.parse(line, 1.0) for line in got]
    assert len(items) == len(lines)
    for (kind, line), item in zip(lines, items, strict=True):
        if kind == "ok":
            ch, force = line.decode().split(",")
            assert isinstance(item, Sample) and item.cell == {"1": "A1", "2": "B2"}[ch]
            assert item.pressure_MPa == pytest.approx(float(force) / (100 * AREA[item.cell]))
        elif isinstance(item, Rejected):
            assert item.reason in {"bad_encoding", "unparsed_line", "unknown_channel", "bad_value"}


# ---------------------------------------------------------------- socat + emulator


def serial_settings(tmp: Path, **source: Any) -> Settings:
    return parse_settings(
        {
            "daemon": {"station": "gb", "state_dir": str(tmp / "var")},
            "cells": {"A1": {"pressure_area_cm2": 0.785}, "B2": {"pressure_area_cm2": 1.0}},
            "sources": [
                {
                    "type": "serial",
                    "port": str(tmp / "dev"),
                    "channels": {"1": "A1", "2": "B2"},
                    "reopen_min_s": 0.05,
                    "reopen_max_s": 0.3,
                    **source,
                }
            ],
        }
    )


def device_lines(n: int, rng: random.Random, garbage_every: int = 100) -> tuple[list[bytes], int, int]:
    """n lines, 1 in ``garbage_every`` of them garbage; (lines, good count, bad count)."""
    out, good, bad = [], 0, 0
    for i in range(n):
        if i % garbage_every == garbage_every // 2:
            out.append(rng.choice([b"\xff\xfe\x00garbage", b"1,NaNx", b"#?!", b"7,12.5", b"1,2,3"]))
            bad += 1
        else:
            out.append(f"{1 + i % 2},{300 + rng.random() * 200:.2f}".encode())
            good += 1
    return out, good, bad


async def wait_for(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_stream_with_replug_and_garbage_stores_every_good_line(tmp_path: Path) -> None:
    rng = random.Random(7)
    socat = Socat(tmp_path).start()
    try:
        async with Daemon(serial_settings(tmp_path, silence_s=0.5)) as d:
            await d.wait_up()
            total_good = total_bad = 0
            for phase in range(2):
                if phase:  # unplug: the device path disappears, then comes back
                    socat.stop()
                    await wait_for(lambda: "cannot open" in d.sources[0].health.reason)
                    await asyncio.sleep(0.3)
                    socat.start()
                    await d.wait_up()
                dev = Device(socat).open()
                lines, good, bad = device_lines(400, rng)
                for i in range(0, len(lines), 20):  # in bursts, as a device printing at 50 Hz would
                    dev.write(b"".join(x + b"\r\n" for x in lines[i : i + 20]))
                    await asyncio.sleep(0.01)
                total_good += good
                total_bad += bad
                await wait_for(lambda: d.store.count("sample") >= total_good)  # noqa: B023
                await wait_for(lambda: d.store.count("quarantine") >= total_bad)  # noqa: B023
                if phase == 0:  # a silent device: the port stays open, health says it is quiet
                    await wait_for(lambda: not d.sources[0].health.up)
                    assert "no data" in d.sources[0].health.reason
                dev.close()
            await d.store.flush()
            assert d.store.count("sample") == total_good == 792
            reasons = sorted(r["reason"] for r in d.store.read_rejected())
            assert len(reasons) == total_bad == 8
            assert set(reasons) <= {"bad_encoding", "bad_value", "unparsed_line", "unknown_channel"}
            a1 = list(d.store.read_samples("A1"))
            assert all(300 / 78.5 <= s.pressure_MPa <= 500 / 78.5 for s in a1)  # N over 0.785 cm2
    finally:
        socat.stop()


async def test_poll_mode_asks_each_channel_and_survives_one_that_never_answers(tmp_path: Path) -> None:
    socat = Socat(tmp_path).start()
    stop = threading.Event()
    try:
        s = serial_settings(
            tmp_path,
            mode="poll",
            channels={"1": "A1", "2": {"cell": "B2", "unit": "kgf", "tare": 1.0}, "3": "C3"},
            pattern=r"(?P<force>[-+0-9.]+)",
            poll_interval_s=0.2,
            poll_timeout_s=0.15,
        )
        dev = Device(socat).open()
        asked: list[str] = []

        def reply(ch: str) -> bytes | None:
            asked.append(ch)
            return {"1": b"392.5\r\n", "2": b"11.2\r\n"}.get(ch)  # channel 3 is dead

        dev.answer(reply, stop)
        async with Daemon(s) as d:
            await wait_for(lambda: d.store.count("sample") >= 6)
            src = d.sources[0]
            assert src.health.up and src.timeouts >= 2
            await d.store.flush()
            a1 = list(d.store.read_samples("A1"))
            b2 = list(d.store.read_samples("B2"))
            assert a1[0].pressure_MPa == pytest.approx(392.5 / 78.5)
            assert b2[0].pressure_MPa == pytest.approx(10.2 * KGF_N / 100)
            assert list(d.store.read_samples("C3")) == []
        assert asked[:3] == ["1", "2", "3"]
    finally:
        stop.set()
        socat.stop()
