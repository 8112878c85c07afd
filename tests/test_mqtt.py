"""MQTT source: payload parsing (unit and property tests), and a real mosquitto: password auth,
TLS with a CA made here, a broker restart mid-stream, and acknowledgement only after commit."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from daemon_process import store_rows
from live_daemon import Daemon
from mosquitto_broker import Broker, make_ca
from shortwatch.model import Rejected, Sample
from shortwatch.sensors.mqtt import (
    AckWindow,
    Joiner,
    TopicTemplate,
    field_table,
    parse_json_payload,
    parse_value_payload,
    shard_of,
)
from shortwatch.settings import ConfigError, FieldSpec, MqttSource, Settings, parse_settings
from shortwatch.storage.sqlite import SqliteStore

TABLE = field_table({})
PARTS = {"cell": "A1"}


# ---------------------------------------------------------------- parsing


def test_topic_template_fills_station_and_captures_parts() -> None:
    t = TopicTemplate("lab/{station}/{cell}/telemetry", "gb-1")
    assert t.filter == "lab/gb-1/+/telemetry"
    assert t.match("lab/gb-1/A 1.x/telemetry") == {"cell": "A 1.x"}
    assert t.match("lab/gb-2/A1/telemetry") is None
    assert t.match("lab/gb-1/A1/telemetry/extra") is None
    tail = TopicTemplate("lab/{cell}/{field}/#", "s")
    assert tail.filter == "lab/+/+/#"
    assert tail.match("lab/B3/voltage/raw/x") == {"cell": "B3", "field": "voltage"}
    with pytest.raises(ValueError, match="a level is either"):
        TopicTemplate("lab/x{cell}/t", "s")


def test_json_object_and_list_with_mapped_fields_and_scales() -> None:
    spec = MqttSource.model_validate(
        {"type": "mqtt", "fields": {"ts": "time", "U": "voltage_V", "I_mA": {"field": "current_A", "scale": 0.001}}}
    )
    table = field_table(spec.fields)
    one = parse_json_payload(b'{"ts": 10, "U": 0.05, "I_mA": 0.5, "seq": 7}', PARTS, table, "m")
    assert one == [Sample(10.0, "A1", voltage_V=0.05, current_A=0.0005)]
    batch = json.dumps(
        [
            {"time": "2026-03-01T12:00:00+00:00", "voltage_V": 0.1, "pressure_MPa": 5, "cycle": 3, "mode": "cc"},
            {"time": 11, "voltage_V": "0.2"},
        ]
    ).encode()
    a, b = parse_json_payload(batch, PARTS, TABLE, "m")
    assert a == Sample(1772366400.0, "A1", voltage_V=0.1, pressure_MPa=5.0, cycle=3, mode="cc")
    assert b == Sample(11.0, "A1", voltage_V=0.2)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[]", "empty_payload"),
        (b"3.5", "bad_payload"),
        (b'{"voltage_V": 0.1}', "missing_time"),
        (b'{"time": 1}', "empty_sample"),
        (b'{"time": true, "voltage_V": 1}', "bad_value"),
        (b'{"time": "2026-01-01T00:00:00", "voltage_V": 1}', "bad_value"),
        (b'{"time": 1, "voltage_V": [1]}', "bad_value"),
        (b'{"time": 1, "voltage_V": 1, "cycle": 1.5}', "bad_value"),
        (b'{"time": 1, "voltage_V": 1, "mode": "charge"}', "bad_value"),
        (b'{"time": 1, "voltage_V": 1, "cell": "B1"}', "cell_mismatch"),
    ],
)
def test_bad_json_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    (r,) = parse_json_payload(payload, PARTS, TABLE, "m")
    assert isinstance(r, Rejected), r
    assert (r.reason, r.source) == (reason, "m")
    assert r.raw


def test_a_bad_cell_in_the_topic_rejects_the_payload() -> None:
    for cell in ("", "x" * 129, "a\x07b"):
        (r,) = parse_json_payload(b'{"time": 1, "voltage_V": 1}', {"cell": cell}, TABLE, "m")
        assert isinstance(r, Rejected) and r.reason == "bad_cell"


def test_cell_from_the_object_when_the_topic_has_none() -> None:
    got = parse_json_payload(
        b'[{"time": 1, "cell": "B2", "current_A": 0.001}, {"time": 1, "cell": "a/b"}]', {}, TABLE, "m"
    )
    assert got[0] == Sample(1.0, "B2", current_A=0.001)
    assert isinstance(got[1], Rejected) and got[1].reason == "bad_cell"


def test_value_payloads_join_by_cell_and_time() -> None:
    table = field_table({"voltage": FieldSpec(field="voltage_V"), "current": FieldSpec(field="current_A")})
    j = Joiner(["voltage_V", "current_A"], window_s=2.0)
    v = parse_value_payload(b'{"time": 5, "value": 0.04}', "voltage", PARTS, table, "m", None)
    assert v == ("A1", 5.0, "voltage_V", 0.04)
    assert j.add(*v, "tok-v", now=0.0) == []
    older = parse_value_payload(b'{"time": 4, "value": 0.03}', "voltage", PARTS, table, "m", None)
    assert j.add(*older, "tok-old", now=0.0) == []
    i = parse_value_payload(b'{"time": 5, "value": 0.001}', "current", PARTS, table, "m", None)
    # the complete sample at t=5 releases the incomplete older one first: time order per cell
    assert j.add(*i, "tok-i", now=0.1) == [
        (Sample(4.0, "A1", voltage_V=0.03), ["tok-old"]),
        (Sample(5.0, "A1", voltage_V=0.04, current_A=0.001), ["tok-v", "tok-i"]),
    ]
    p = parse_value_payload(b"7.5", "pressure_MPa", PARTS, table, "m", 6.0)  # bare number: arrival time
    assert j.add(*p, None, now=1.0) == []
    assert j.expired(now=2.5) == []
    assert j.expired(now=3.0) == [(Sample(6.0, "A1", pressure_MPa=7.5), [None])]
    assert len(j) == 0
    bad = parse_value_payload(b"7.5", "pressure_MPa", PARTS, table, "m", None)
    assert isinstance(bad, Rejected) and bad.reason == "missing_time"
    unk = parse_value_payload(b"1", "humidity", PARTS, table, "m", 1.0)
    assert isinstance(unk, Rejected) and unk.reason == "unknown_field"


def test_acks_go_out_in_arrival_order_once_done() -> None:
    sent: list[int] = []
    w = AckWindow(lambda mid, qos: sent.append(mid))
    a, b, c = (w.add(m, 1) for m in (1, 2, 3))
    w.done([b, c])
    assert sent == []  # 1 is still being committed
    w.done([a])
    assert sent == [1, 2, 3]
    d = w.add(4, 1)
    w.alive = False  # its connection is gone: the broker will send it again
    w.done([d])
    assert sent == [1, 2, 3]


def test_shards_split_cells_stably() -> None:
    """crc32, not hash(): two daemons (two processes) must agree on the split."""
    cells = [f"C{i}" for i in range(200)]
    parts = [shard_of(c, 3) for c in cells]
    assert set(parts) == {0, 1, 2}
    assert all(p == zlib.crc32(c.encode()) % 3 for c, p in zip(cells, parts, strict=True))


def test_config_keys_and_their_errors() -> None:
    s = parse_settings(
        {
            "sources": [
                {
                    "type": "mqtt",
                    "topics": ["lab/{station}/{cell}/{field}"],
                    "payload": "value",
                    "username": "u",
                    "password_env": "P",
                    "tls": {"ca_file": "ca.crt"},
                    "shard": {"index": 1, "count": 2},
                    "fields": {"v": "voltage_V", "i": {"field": "current_A", "scale": 0.001}},
                }
            ]
        }
    )
    assert s.sources[0].type == "mqtt"
    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "sources": [
                    {"type": "mqtt", "payload": "value", "password": "x", "shard": {"index": 2, "count": 2}},
                ]
            }
        )
    text = "\n".join(exc.value.problems)
    assert "sources[0].password: secrets are not allowed" in text
    assert "sources[0].shard: index must be below count" in text
    for bad, why in [
        ({"payload": "value"}, "needs a {field} part"),
        ({"fields": {"U": "volts"}}, "sources[0].fields: 'volts' (key U) is not a canonical field"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            parse_settings({"sources": [{"type": "mqtt", **bad}]})


# ---------------------------------------------------------------- property tests

sample_obj = st.fixed_dictionaries(
    {"time": st.floats(1e9, 2e9), "voltage_V": st.floats(-5, 5), "current_A": st.floats(-0.01, 0.01)}
)
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["time", "voltage_V", "cell", "x"]), c),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(payload: bytes) -> None:
    for r in parse_json_payload(payload, PARTS, TABLE, "m"):
        assert isinstance(r, Sample | Rejected)
        if isinstance(r, Rejected):
            assert r.reason and r.source == "m"
    got = parse_value_payload(payload, "voltage_V", PARTS, TABLE, "m", None)
    assert isinstance(got, tuple | Rejected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(sample_obj.map(lambda o: ("ok", o)), junk.map(lambda o: ("junk", o))), min_size=1))
def test_a_batch_keeps_its_valid_samples_around_malformed_ones(objs: list[tuple[str, Any]]) -> None:
    payload = json.dumps([o for _, o in objs]).encode()
    got = parse_json_payload(payload, PARTS, TABLE, "m")
    assert len(got) == len(objs)  # one item per object, in order
    for (kind, obj), r in zip(objs, got, strict=True):
        if kind == "ok":
            assert r == Sample(obj["time"], "A1", voltage_V=obj["voltage_V"], current_A=obj["current_A"])
        elif isinstance(r, Rejected):
            assert r.reason in {
                "bad_payload",
                "bad_value",
                "missing_time",
                "empty_sample",
                "bad_cell",
                "cell_mismatch",
            }
        else:  # junk that happens to be a valid sample must be one
            assert isinstance(r, Sample) and math.isfinite(r.time)


# ---------------------------------------------------------------- a real broker


class Publisher:
    """A QoS 1 publisher with a persistent session: it resends what the broker did not acknowledge."""

    def __init__(self, port: int, *, tls_ca: Path | None = None, auth: tuple[str, str] | None = None):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{port}", clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.1, 0.5)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        if auth:
            self.client.username_pw_set(*auth)
        self.acked: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.mids: list[int] = []

    def publish(self, topic: str, payload: Any) -> None:
        """Queued and resent by paho while the broker is away (rc then says 'not connected')."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.mids.append(self.client.publish(topic, data, qos=1).mid)

    def wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.acked.issuperset(self.mids):
            assert time.monotonic() < deadline, "the broker did not acknowledge every publish"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_settings(tmp: Path, port: int, **source: Any) -> Settings:
    return parse_settings(
        {
            "daemon": {"station": "gb", "state_dir": str(tmp / "var"), "checkpoint_interval_s": 1},
            "cells": {f"C{i}": {"kind": "symmetric"} for i in range(4)},
            "sources": [{"type": "mqtt", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **source}],
        }
    )


def sample(t: float, cell: str = "C0") -> dict[str, Any]:
    return {"time": t, "cell": cell, "voltage_V": 0.05, "current_A": 0.0004}


async def test_password_auth_stores_samples_and_a_wrong_password_is_reported(tmp_path: Path, monkeypatch) -> None:
    with Broker(tmp_path / "broker", password=("sw", "s3cret")) as broker:
        monkeypatch.setenv("MQTT_PW", "wrong")
        bad = mqtt_settings(tmp_path / "bad", broker.port, username="sw", password_env="MQTT_PW")
        async with Daemon(bad) as d:
            await asyncio.sleep(1.0)
            health = d.sources[0].health
            assert not health.up and "refused" in health.reason and "authori" in health.reason.lower()

        (tmp_path / "pw").write_text("s3cret\n")
        good = mqtt_settings(tmp_path / "good", broker.port, username="sw", password_file=str(tmp_path / "pw"))
        async with Daemon(good) as d:
            await d.wait_up()
            pub = Publisher(broker.port, auth=("sw", "s3cret"))
            pub.publish("lab/gb/C1/telemetry", [sample(t, "C1") for t in range(1, 11)])
            pub.publish("lab/gb/C1/telemetry", b"{broken")
            pub.wait()
            assert await d.wait_samples(10) == 10
            rejected = d.store.read_rejected()
            assert [r["reason"] for r in rejected] == ["bad_json"]
            assert list(d.store.read_samples("C1"))[3] == Sample(4.0, "C1", voltage_V=0.05, current_A=0.0004)
            pub.close()


async def test_tls_with_a_ca_made_here(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path)
    with Broker(tmp_path / "broker", tls=(ca, cert, key)) as broker:
        s = mqtt_settings(tmp_path, broker.port, tls={"ca_file": str(ca)})
        async with Daemon(s) as d:
            await d.wait_up()
            pub = Publisher(broker.port, tls_ca=ca)
            for t in range(1, 6):
                pub.publish("lab/gb/C2/telemetry", sample(t, "C2"))
            pub.wait()
            assert await d.wait_samples(5) == 5
            pub.close()
        # without the CA the broker's certificate is not trusted: the source says so and stays down
        s2 = mqtt_settings(tmp_path / "noca", broker.port, tls={})
        async with Daemon(s2) as d:
            await asyncio.sleep(1.0)
            assert not d.sources[0].health.up and "certificate" in d.sources[0].health.reason.lower()


async def test_two_daemons_split_the_cells_by_shard(tmp_path: Path) -> None:
    cells = [f"C{i}" for i in range(12)]
    with Broker(tmp_path / "broker") as broker:
        a = mqtt_settings(tmp_path / "a", broker.port, shard={"index": 0, "count": 2})
        b = mqtt_settings(tmp_path / "b", broker.port, shard={"index": 1, "count": 2})
        async with Daemon(a) as da, Daemon(b) as db:
            await da.wait_up()
            await db.wait_up()
            assert da.sources[0].client_id != db.sources[0].client_id  # two sessions on one broker
            pub = Publisher(broker.port)
            for c in cells:
                pub.publish(f"lab/gb/{c}/telemetry", [sample(t, c) for t in range(1, 4)])
            pub.publish("lab/gb/C0/telemetry", [sample(9, "C1")])  # the object's cell must match the topic's
            pub.wait()
            await wait_total([da, db], 3 * len(cells))
            got = {d: set(d.store.cells()) for d in (da, db)}
            assert got[da] | got[db] == set(cells) and not got[da] & got[db]
            assert got[da] == {c for c in cells if zlib.crc32(c.encode()) % 2 == 0}
            rejected = da.store.read_rejected() + db.store.read_rejected()
            assert [r["reason"] for r in rejected] == ["cell_mismatch"]
            pub.close()


async def test_one_value_per_topic_is_joined_into_samples(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker") as broker:
        s = mqtt_settings(
            tmp_path,
            broker.port,
            topics=["lab/{station}/{cell}/{field}"],
            payload="value",
            fields={"voltage": "voltage_V", "current": {"field": "current_A", "scale": 0.001}},
            join_window_s=0.5,
        )
        async with Daemon(s) as d:
            await d.wait_up()
            pub = Publisher(broker.port)
            for t in range(1, 6):
                pub.publish("lab/gb/C2/voltage", {"time": t, "value": 0.05})
                pub.publish("lab/gb/C2/current", {"time": t, "value": 0.4})
            pub.publish("lab/gb/C2/voltage", {"time": 6, "value": 0.05})  # its current never comes
            pub.publish("lab/gb/C2/humidity", b"40")
            pub.wait()
            assert await d.wait_samples(6) == 6
            got = list(d.store.read_samples("C2"))
            assert got[0] == Sample(1.0, "C2", voltage_V=0.05, current_A=0.0004)
            assert got[5] == Sample(6.0, "C2", voltage_V=0.05)  # released after the join window
            assert [r["reason"] for r in d.store.read_rejected()] == ["unknown_field"]
            pub.close()


async def wait_total(daemons: list[Daemon], n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(d.store.count("sample") for d in daemons) < n:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    for d in daemons:
        await d.store.flush()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, protocol: str) -> None:
    n = 400
    with Broker(tmp_path / "broker") as broker:
        s = mqtt_settings(tmp_path, broker.port, protocol=protocol)
        async with Daemon(s) as d:
            await d.wait_up()
            pub = Publisher(broker.port)
            stop = threading.Event()

            def publish_all() -> None:
                for t in range(1, n + 1):
                    pub.publish("lab/gb/C3/telemetry", sample(t, "C3"))
                    time.sleep(0.004)
                stop.set()

            th = threading.Thread(target=publish_all)
            th.start()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(broker.restart)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(broker.restart)
            await asyncio.to_thread(th.join)
            await asyncio.to_thread(pub.wait)
            assert await d.wait_samples(n) == n
            times = [x.time for x in d.store.read_samples("C3")]
            assert times == [float(t) for t in range(1, n + 1)]
            # the broker's redeliveries are recognised by the source; a repeat can still come from the
            # publisher resending to the restarted broker (QoS 1 is at least once): quarantined as such
            assert {r["reason"] for r in d.store.read_rejected()} <= {"duplicate"}
            pub.close()


# ---------------------------------------------------------------- kill -9 of the daemon


class DaemonProcess:
    """`shortwatch run` as a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shortwatch.cli", "run", "--config", str(self.config)], stderr=fh
            )

    def wait_connected(self, times: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_text().count("MQTT connected") < times:
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(30)


def log_tail(tmp: Path) -> str:
    return "\n".join((tmp / "daemon.log").read_text().splitlines()[-40:])


def count_samples(db: Path) -> int:
    return len(store_rows(db, "SELECT 1 FROM sample"))


@pytest.mark.slow
def test_kill_9_of_the_daemon_and_broker_restarts_lose_and_repeat_nothing(tmp_path: Path) -> None:
    n, m = 400, 4  # samples per cell, cells
    cells = [f"C{i}" for i in range(m)]
    with Broker(tmp_path / "broker") as broker:
        var = tmp_path / "var"
        cfg = tmp_path / "daemon.toml"
        cfg.write_text(
            f'[daemon]\nhttp = ""\nstation = "gb"\nstate_dir = "{var}"\ncheckpoint_interval_s = 1\n'
            + "".join(f'[cells.{c}]\nkind = "symmetric"\n' for c in cells)
            + f'[[sources]]\ntype = "mqtt"\nport = {broker.port}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n'
        )
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
        daemon.start()
        daemon.wait_connected(1)  # the persistent session exists: from now on the broker keeps what we miss
        pub = Publisher(broker.port)
        done = threading.Event()

        def publish_all() -> None:
            t = 0
            while t < n:
                for c in cells:  # single samples and gateway batches of 5, interleaved
                    if t % 10 < 5:
                        pub.publish(f"lab/gb/{c}/telemetry", sample(1e9 + t, c))
                    else:
                        pub.publish(f"lab/gb/{c}/telemetry", [sample(1e9 + t + k, c) for k in range(5)])
                t += 1 if t % 10 < 5 else 5
                time.sleep(0.02)
            done.set()

        th = threading.Thread(target=publish_all)
        th.start()
        connected = 1
        for action in ("kill", "broker", "kill", "broker", "kill"):
            time.sleep(0.7)
            if action == "kill":
                daemon.kill9()
                time.sleep(0.3)
                daemon.start()
                connected += 1
                daemon.wait_connected(connected)
            else:
                broker.restart()
                connected += 1
                daemon.wait_connected(connected)
        th.join()
        assert done.is_set()
        pub.wait()
        pub.close()
        db = var / "shortwatch.sqlite"
        deadline = time.monotonic() + 60
        while count_samples(db) < n * m and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon.terminate() == 0
    store = SqliteStore(db, station="gb").open()
    try:
        for c in cells:
            times = [s.time for s in store.read_samples(c)]
            missing = sorted({1e9 + t for t in range(n)} - set(times))
            assert times == [1e9 + t for t in range(n)], (c, [x - 1e9 for x in missing], log_tail(tmp_path))
        assert store.count("sample") == n * m
    finally:
        store.close()
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("MQTT connected") == connected


@pytest.mark.slow
def test_a_message_is_acknowledged_only_once_its_samples_are_committed(tmp_path: Path) -> None:
    """The store is held locked while samples arrive, then the daemon is killed: the broker had
    no PUBACK for them, so it hands them to the restarted daemon (acknowledging on receipt
    would lose them here)."""
    with Broker(tmp_path / "broker") as broker:
        var = tmp_path / "var"
        cfg = tmp_path / "daemon.toml"
        cfg.write_text(
            f'[daemon]\nhttp = ""\nstation = "gb"\nstate_dir = "{var}"\n'
            f'[[sources]]\ntype = "mqtt"\nport = {broker.port}\n'
        )
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
        daemon.start()
        daemon.wait_connected(1)
        pub = Publisher(broker.port)
        pub.publish("lab/gb/C0/telemetry", [sample(1e9 + t) for t in range(50)])
        pub.wait()
        db = var / "shortwatch.sqlite"
        deadline = time.monotonic() + 20
        while count_samples(db) < 50:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for t in range(50, 100):
                pub.publish("lab/gb/C0/telemetry", sample(1e9 + t))
            pub.wait()
            while "database is locked" not in daemon.log.read_text():  # received, not committed
                assert time.monotonic() < deadline + 20
                time.sleep(0.05)
            daemon.kill9()
        finally:
            blocker.rollback()
            blocker.close()
        assert count_samples(db) == 50
        daemon.start()
        deadline = time.monotonic() + 20
        while count_samples(db) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.terminate() == 0
        pub.close()
    assert count_samples(db) == 100


@pytest.mark.slow
def test_a_broker_that_stays_down_is_a_source_down_alert_naming_its_cells(tmp_path: Path) -> None:
    """The broker goes away for longer than daemon.source_down_after_s: one `source_down` data
    alert (cell null, the source named, the cells behind it in its evidence), resolved in the
    same episode when the broker is back; a restart of the daemon repeats neither."""
    with Broker(tmp_path / "broker") as broker:
        var, jsonl = tmp_path / "var", tmp_path / "alerts.jsonl"
        cfg = tmp_path / "daemon.toml"
        cfg.write_text(
            f'[daemon]\nhttp = ""\nstation = "gb"\nstate_dir = "{var}"\nsource_down_after_s = 1\n'
            f'[alerts]\njsonl_path = "{jsonl}"\nconsole = false\n'
            + "".join(f'[cells.{c}]\nkind = "symmetric"\n' for c in ("C0", "C1"))
            + f'[[sources]]\ntype = "mqtt"\nport = {broker.port}\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n'
        )
        daemon = DaemonProcess(cfg, tmp_path / "daemon.log")
        daemon.start()
        daemon.wait_connected(1)
        pub = Publisher(broker.port)
        for c in ("C0", "C1"):
            pub.publish(f"lab/gb/{c}/telemetry", sample(1e9, c))
        pub.wait()
        pub.close()
        deadline = time.monotonic() + 20
        while _stored(var) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        broker.stop()
        down = _wait_alerts(jsonl, 1)
        broker.start()
        events = _wait_alerts(jsonl, 2)
        assert daemon.terminate() == 0
        daemon.start()  # a restart with the broker up: nothing to repeat
        daemon.wait_connected(3)
        time.sleep(6)
        assert daemon.terminate() == 0
    events = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [(e["detector"], e["state"]) for e in events] == [("source_down", "firing"), ("source_down", "resolved")]
    first = down[0]
    assert first["cell"] is None and first["source"] == "mqtt-0" and first["kind"] == "data"
    assert first["evidence"]["cells"] == ["C0", "C1"] and "C0, C1" in first["summary"]
    assert events[1]["episode"] == first["episode"] and events[1]["id"] != first["id"]


def _stored(var: Path) -> int:
    return count_samples(var / "shortwatch.sqlite")


def _wait_alerts(jsonl: Path, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = jsonl.read_text().splitlines() if jsonl.exists() else []
        if len(lines) >= n:
            return [json.loads(x) for x in lines]
        assert time.monotonic() < deadline, f"{len(lines)} alert lines, waiting for {n}"
        time.sleep(0.1)
