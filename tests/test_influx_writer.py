"""The InfluxDB writer: v1 into a real influxd 1.6, v2 into a real victoria-metrics, and what
goes over the wire (token, org, bucket, precision, gzip, retries) on a recording HTTP server."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest

from influx_servers import Influxd, Recorder, VictoriaMetrics, free_port
from shortwatch.storage.influx import InfluxWriter, V1Transport, V2Transport, error_message, retry_after_s

T0_US = 1_767_600_000_000_000


@pytest.fixture
def influxd(tmp_path: Path):
    if not Influxd.available():
        pytest.skip("influxd is not installed (apt-get install influxdb)")
    server = Influxd(tmp_path / "influxd").start()
    server.query("CREATE DATABASE sw")
    yield server
    server.stop()


@pytest.fixture
def recorder():
    rec = Recorder().start()
    yield rec
    rec.stop()


def _lines(n: int, measurement: str = "sample", cell: str = "A1") -> list[str]:
    return [f"{measurement},cell={cell},station=s voltage_V={0.01 * k} {T0_US + k * 10_000_000}" for k in range(n)]


async def _write_all(transport, batches: list[list[str]], **kw):
    writer = InfluxWriter(transport, **kw)
    try:
        return await asyncio.gather(*(writer.write(b) for b in batches)), writer
    finally:
        await writer.close()


async def test_v1_writes_into_influxd_with_gzip(influxd: Influxd) -> None:
    transport = V1Transport(influxd.url, "sw", precision="us", gzip_body=True)
    results, writer = await _write_all(transport, [_lines(1200), _lines(7, "step", "B2")], batch_lines=500)
    assert results == [[], []]
    assert influxd.count("sw", "sample", "voltage_V") == 1200
    assert influxd.count("sw", "step", "voltage_V") == 7
    assert writer.stats["points"] == 1207 and writer.stats["errors"] == 0
    assert writer.stats["requests"] == 3  # 500, 500, then 200 + the 7 of the other caller


async def test_v1_a_bad_point_is_refused_with_the_servers_message_and_the_rest_stored(influxd: Influxd) -> None:
    transport = V1Transport(influxd.url, "sw", precision="us")
    good = _lines(300)
    # the same field as an integer, then as a string: the string is a field type conflict
    first = [f"sample,cell=Z,station=s cycle=1i {T0_US}"]
    bad = f'sample,cell=Z,station=s cycle="one" {T0_US + 10_000_000}'
    batch = [*good[:150], bad, *good[150:]]
    (r1, refused), _ = await _write_all(transport, [first, batch], flush_interval_s=0.01)
    assert r1 == []
    assert [r.line for r in refused] == [bad]
    assert refused[0].status == 400
    assert "field type conflict" in refused[0].message and '"cycle"' in refused[0].message
    assert influxd.count("sw", "sample", "voltage_V") == 300
    assert influxd.count("sw", "sample", "cycle") == 1


async def test_v1_wire_format_auth_precision_and_retention_policy(recorder: Recorder) -> None:
    transport = V1Transport(
        recorder.url,
        "lab db",
        retention_policy="autogen",
        precision="ns",
        username="sw",
        password="p@ss",
        gzip_body=True,
    )
    await _write_all(transport, [_lines(3)])
    (req,) = recorder.requests
    assert req.path == "/write"
    assert req.query == {"db": ["lab db"], "precision": ["n"], "rp": ["autogen"]}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"sw:p@ss").decode()
    assert req.headers["content-encoding"] == "gzip"
    assert req.text.splitlines() == _lines(3)


async def test_v2_wire_format_token_org_bucket_precision_gzip(recorder: Recorder) -> None:
    transport = V2Transport(recorder.url, "lab", "shortwatch", "s3cret", precision="ms", gzip_body=True)
    await _write_all(transport, [_lines(4)])
    (req,) = recorder.requests
    assert req.path == "/api/v2/write"
    assert req.query["org"] == ["lab"] and req.query["bucket"] == ["shortwatch"] and req.query["precision"] == ["ms"]
    assert req.headers["authorization"] == "Token s3cret"
    assert req.headers["content-encoding"] == "gzip"
    assert req.text.splitlines() == _lines(4)


async def test_v2_writes_into_victoria_metrics(tmp_path: Path) -> None:
    if not VictoriaMetrics.available():
        pytest.skip("victoria-metrics is not installed")
    vm = VictoriaMetrics(tmp_path / "vm").start()
    try:
        transport = V2Transport(vm.url, "lab", "shortwatch", "t", precision="us", gzip_body=True)
        (res,), writer = await _write_all(transport, [_lines(250)], batch_lines=100)
        assert res == [] and writer.stats["requests"] == 3
        series = vm.export('{__name__="sample_voltage_V"}')
        assert len(series) == 1 and series[0]["metric"]["cell"] == "A1"
        assert len(series[0]["values"]) == 250
        assert series[0]["timestamps"][0] == T0_US // 1000  # victoria-metrics keeps milliseconds
    finally:
        vm.stop()


async def test_retries_5xx_and_429_honouring_retry_after(recorder: Recorder) -> None:
    recorder.script = [
        (503, {}, b'{"error":"engine: cache maximum memory size exceeded"}'),
        (429, {"Retry-After": "1"}, b'{"code":"too many requests","message":"slow down"}'),
    ]
    transport = V1Transport(recorder.url, "sw", gzip_body=False)
    stamps: list[float] = []
    recorder.answer = lambda rec: stamps.append(time.monotonic())
    (res,), writer = await _write_all(transport, [_lines(5)], retry_first_s=0.05)
    assert res == []
    assert len(recorder.requests) == 3
    assert all(r.text == recorder.requests[0].text for r in recorder.requests)  # the same batch again
    assert stamps[2] - stamps[1] >= 0.9  # waited as told
    assert writer.stats["errors"] == 2 and "slow down" in writer.stats["last_error"]


async def test_network_errors_are_retried_until_the_server_is_there() -> None:
    port = free_port()
    transport = V1Transport(f"http://127.0.0.1:{port}", "sw", gzip_body=False, timeout_s=2)
    writer = InfluxWriter(transport, flush_interval_s=0.01, retry_first_s=0.05, retry_max_s=0.2)
    task = asyncio.create_task(writer.write(_lines(2)))
    await asyncio.sleep(0.5)
    assert not task.done() and writer.stats["errors"] >= 2 and writer.stats["failing"]
    rec = Recorder(port=port).start()
    try:
        assert await asyncio.wait_for(task, 10) == []
        assert rec.requests[-1].text.splitlines() == _lines(2)
        assert not writer.stats["failing"]
    finally:
        await writer.close()
        rec.stop()


async def test_small_batches_wait_for_company_large_ones_go_at_once(recorder: Recorder) -> None:
    transport = V1Transport(recorder.url, "sw", gzip_body=False)
    writer = InfluxWriter(transport, batch_lines=10, flush_interval_s=0.5)
    try:
        t0 = time.monotonic()
        a = asyncio.create_task(writer.write(_lines(2, cell="a")))
        await asyncio.sleep(0.1)
        b = asyncio.create_task(writer.write(_lines(3, cell="b")))
        await asyncio.gather(a, b)
        assert time.monotonic() - t0 >= 0.45
        assert len(recorder.requests) == 1 and len(recorder.requests[0].text.splitlines()) == 5
        t1 = time.monotonic()
        await writer.write(_lines(25, cell="c"))
        assert time.monotonic() - t1 < 0.45  # full batches do not wait
        assert [len(r.text.splitlines()) for r in recorder.requests[1:]] == [10, 10, 5]
    finally:
        await writer.close()


async def test_auth_errors_are_retried_not_quarantined(recorder: Recorder) -> None:
    recorder.script = [(401, {}, b'{"code":"unauthorized","message":"unauthorized access"}')] * 2
    transport = V2Transport(recorder.url, "lab", "b", "wrong", gzip_body=False)
    (res,), writer = await _write_all(transport, [_lines(2)], retry_first_s=0.05)
    assert res == [] and len(recorder.requests) == 3
    assert "unauthorized access" in writer.stats["last_error"]


async def test_every_point_dropped_is_refused_without_bisecting(recorder: Recorder) -> None:
    msg = b'{"error":"partial write: points beyond retention policy dropped=64"}'
    recorder.script = [(400, {}, msg)]
    transport = V1Transport(recorder.url, "sw", gzip_body=False)
    (res,), _ = await _write_all(transport, [_lines(64)])
    assert len(res) == 64 and len(recorder.requests) == 1
    assert res[0].message == "partial write: points beyond retention policy dropped=64"


def test_error_message_and_retry_after_parsing() -> None:
    assert error_message(b'{"error":"database not found: \\"x\\""}') == 'database not found: "x"'
    assert error_message(b'{"code":"invalid","message":"failed to parse line protocol"}') == (
        "failed to parse line protocol"
    )
    assert error_message(b"", {"X-Influxdb-Error": "timeout"}) == "timeout"
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None


async def test_backlog_alert_fires_survives_a_restart_and_resolves_when_drained(tmp_path: Path) -> None:
    """The backlog figures and the `influx_backlog` alert, on a real store (InfluxDB never asked)."""
    from shortwatch.model import RecordBatch, Sample
    from shortwatch.settings import parse_settings
    from shortwatch.storage.influx import InfluxSink
    from shortwatch.storage.sqlite import SqliteStore

    storage = parse_settings(
        {"storage": {"backend": "influxdb", "api": "v1", "database": "sw", "backlog_alert_age_s": 60}}
    ).storage
    store = SqliteStore(tmp_path / "s.sqlite", station="g1").open()
    try:
        store.write_sync(RecordBatch(samples=[Sample(1_767_600_000.0 + k, "A1", 0.01, 0.001) for k in range(50)]))
        committed = time.time()
        sink = InfluxSink(storage, "g1", store, transport=V1Transport("http://127.0.0.1:9", "sw"))
        f = sink.figures(now=committed + 30)
        assert f["influx_backlog_rows_sample"] == 50 and f["influx_backlog_rows"] == 50
        assert 29 <= f["influx_backlog_age_s"] <= 31
        assert sink.check_backlog(now=committed + 30) is None  # younger than the limit
        fired = sink.check_backlog(now=committed + 90)
        assert fired is not None and fired.state == "firing" and fired.cell is None
        assert fired.detector == "influx_backlog" and fired.kind == "data" and fired.source == "influxdb"
        assert fired.evidence["rows_pending"] == 50 and "50 rows wait" in fired.summary
        assert sink.check_backlog(now=committed + 120) is None  # no repeat while it stands
        store.write_sync(RecordBatch(alerts=[fired]))

        restarted = InfluxSink(storage, "g1", store, transport=V1Transport("http://127.0.0.1:9", "sw"))
        restarted.restore_alert(store.read_alerts())
        assert restarted.check_backlog(now=committed + 150) is None  # still firing: not again
        store.ack("influx:sample", "sample", store.log_position("sample"))  # InfluxDB confirmed
        store.ack("influx:alert", "alert", store.log_position("alert"))
        resolved = restarted.check_backlog(now=committed + 160)
        assert resolved is not None and resolved.state == "resolved" and resolved.episode == fired.episode
        assert restarted.figures()["influx_backlog_rows"] == 0
        await sink.close()
        await restarted.close()
    finally:
        store.close()


async def test_a_writer_that_dies_of_a_bug_fails_its_callers_and_starts_again(recorder: Recorder) -> None:
    class Broken(V1Transport):
        calls = 0

        def send(self, body: bytes) -> None:
            Broken.calls += 1
            if Broken.calls == 1:
                raise KeyError("a bug, not a server answer")
            super().send(body)

    writer = InfluxWriter(Broken(recorder.url, "sw", gzip_body=False), flush_interval_s=0.01)
    try:
        with pytest.raises(RuntimeError, match="writer stopped"):
            await asyncio.wait_for(writer.write(_lines(2)), 5)
        assert await asyncio.wait_for(writer.write(_lines(3)), 5) == []  # the reader's retry goes through
        assert len(recorder.requests) == 1 and len(recorder.requests[0].text.splitlines()) == 3
    finally:
        await writer.close()


async def test_v2_422_is_bisected_to_the_bad_lines_and_413_splits_without_refusing(recorder: Recorder) -> None:
    """InfluxDB 2.x answers a field type conflict with 422 and a body too large with 413."""
    lines = _lines(40)
    bad = {lines[7], lines[31]}

    def answer(rec):
        sent = set(rec.text.splitlines())
        if len(sent) > 16:
            return 413, {}, b'{"code":"request too large","message":"unable to read data: request too large"}'
        if sent & bad:
            msg = b'{"code":"unprocessable entity","message":"failure writing points to database: field type conflict"}'
            return 422, {}, msg
        return 204, {}, b""

    recorder.answer = answer
    transport = V2Transport(recorder.url, "lab", "b", "t", gzip_body=True)
    (refused,), writer = await _write_all(transport, [lines], batch_lines=100)
    assert sorted(r.line for r in refused) == sorted(bad)
    assert {r.status for r in refused} == {422} and "field type conflict" in refused[0].message
    delivered = [ln for r in recorder.requests if r.answer_status == 204 for ln in r.text.splitlines()]
    assert sorted(delivered) == sorted(set(lines) - bad)  # every good line once
    assert writer.stats["refused"] == 2


async def test_every_precision_lands_on_the_same_instant(influxd: Influxd) -> None:
    from shortwatch.storage.influx_line import LineEncoder

    t = 1_767_600_000.123456
    for precision in ("s", "ms", "us", "ns"):
        line = LineEncoder(precision).sample({"cell": precision, "station": "s", "time": t, "voltage_V": 1.5})
        await _write_all(V1Transport(influxd.url, "sw", precision=precision), [[line]], flush_interval_s=0.01)
    series = influxd.query('SELECT "voltage_V" FROM "sample" GROUP BY "cell"', "sw")
    got = {s["tags"]["cell"]: s["values"][0][0] for s in series}  # epoch=us
    assert got == {
        "s": 1_767_600_000_000_000,
        "ms": 1_767_600_000_123_000,
        "us": 1_767_600_000_123_456,
        "ns": 1_767_600_000_123_456,
    }
