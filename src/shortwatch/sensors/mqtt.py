"""MQTT source: samples published by gateways and lab software, acknowledged once stored.

A QoS 1 message is acknowledged (PUBACK) only after the samples it carried are committed to
the SQLite store, so a kill -9 of the daemon loses nothing the broker handed over: the
broker keeps the persistent session (clean start off, a stable client id) and sends
unacknowledged messages again. A repeat that was already stored is dropped by the store's
key (and counted by the shared validation as a duplicate).

aiomqtt (2.5) acknowledges on receipt and has no public way to defer it (its issue #345), so
this module drives paho-mqtt 2.x directly with ``manual_ack=True``, its socket watched by the
event loop (paho's socket callbacks, the way aiomqtt does it; only the blocking connect runs
in a worker thread), and calls ``Client.ack`` in the order the messages came.

The payload parsers below are pure functions (bytes in, Sample/Rejected out); validation
beyond parsing (ranges, order, duplicates) is the shared gate's, daemon/validation.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import re
import select
import ssl
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from shortwatch.aio import wait_event
from shortwatch.daemon.runner import Emit
from shortwatch.model import CSV_COLUMNS, MODES, Rejected, Sample
from shortwatch.sensors.health import SourceHealth, reconnect_delay
from shortwatch.settings import ConfigError, FieldSpec, MqttSource, resolve_secret

log = logging.getLogger(__name__)

BATCH_MAX = 5000  # samples handed to the pipeline in one emit
READ_BURST = 256  # packets read per wake-up of the socket before other tasks get a turn
RAW_MAX = 2000  # characters of a rejected payload kept in quarantine
FLOAT_FIELDS = frozenset({"voltage_V", "current_A", "pressure_MPa", "temperature_C"})
INT_FIELDS = frozenset({"cycle", "step"})
_CELL_BAD = re.compile(r"[/+#\x00-\x1f\x7f]")

#: payload key -> (canonical field, scale)
FieldTable = dict[str, tuple[str, float]]


def field_table(fields: dict[str, FieldSpec]) -> FieldTable:
    """Canonical names map to themselves; ``[sources.fields]`` adds or overrides keys."""
    table: FieldTable = {name: (name, 1.0) for name in CSV_COLUMNS}
    table.update({key: (spec.field, spec.scale) for key, spec in fields.items()})
    return table


# ---------------------------------------------------------------- topics


class TopicTemplate:
    """``lab/{station}/{cell}/telemetry``: {station} is the daemon's station, other named parts
    are single-level wildcards whose values are captured; ``+`` and a final ``#`` also work."""

    _PART = re.compile(r"^\{(\w+)\}$")

    def __init__(self, template: str, station: str):
        self.template = template
        self.levels: list[str | None] = []  # literal level, or None for a wildcard
        self.names: list[str | None] = []  # captured name of each level
        self.tail = False  # ends in "#"
        levels = template.split("/")
        for i, level in enumerate(levels):
            m = self._PART.match(level)
            if level == "#" and i == len(levels) - 1:
                self.tail = True
            elif m and m.group(1) == "station":
                self.levels.append(station)
                self.names.append(None)
            elif m or level == "+":
                self.levels.append(None)
                self.names.append(m.group(1) if m else None)
            elif any(c in level for c in "{}+#"):
                raise ValueError(f"topic {template!r}: a level is either literal, '+', '#' or one {{name}}")
            else:
                self.levels.append(level)
                self.names.append(None)

    @property
    def filter(self) -> str:
        out = "/".join("+" if lv is None else lv for lv in self.levels)
        return f"{out}/#" if self.tail and out else ("#" if self.tail else out)

    def match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split("/")
        n = len(self.levels)
        if len(parts) < n or (len(parts) > n and not self.tail):
            return None
        out: dict[str, str] = {}
        for level, name, got in zip(self.levels, self.names, parts, strict=False):
            if level is not None and level != got:
                return None
            if name is not None:
                out[name] = got
        return out


def shard_of(cell: str, count: int) -> int:
    """Stable across processes and machines (unlike hash()), so daemons agree on the split."""
    return zlib.crc32(cell.encode("utf-8", "surrogatepass")) % count


def cell_problem(cell: Any) -> str | None:
    """Why ``cell`` is not a valid cell id (DESIGN.md: 1-128 printable, no / + #), or None."""
    if not isinstance(cell, str):
        return f"cell must be a string, got {type(cell).__name__}"
    if not 1 <= len(cell) <= 128:
        return f"cell id must be 1-128 characters, got {len(cell)}"
    if _CELL_BAD.search(cell) or not cell.isprintable():
        return f"cell id {cell!r} has a control character, '/', '+' or '#'"
    return None


# ---------------------------------------------------------------- payloads


def _raw(payload: bytes | str) -> str:
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "backslashreplace")
    return text[:RAW_MAX]


def parse_time(v: Any) -> float:
    """Unix seconds (number or numeric string) or ISO-8601 with an offset; ValueError otherwise."""
    if type(v) is float or type(v) is int:
        t = float(v)
    elif isinstance(v, bool):
        raise ValueError("time is a boolean")
    elif isinstance(v, int | float):
        t = float(v)
    elif isinstance(v, str):
        try:
            t = float(v)
        except ValueError:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                raise ValueError(f"time {v!r} has no UTC offset") from None
            t = dt.timestamp()
    else:
        raise ValueError(f"time must be a number or an ISO-8601 string, got {type(v).__name__}")
    if not math.isfinite(t):
        raise ValueError(f"time {v!r} is not finite")
    return t


def _number(v: Any, scale: float) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"expected a number, got {type(v).__name__}")
    return float(v) * scale  # NaN/inf pass here: the shared gate quarantines them with the sample


def _integer(v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError("expected an integer, got a boolean")
    x = float(v) if isinstance(v, str | int | float) else math.nan
    if not (math.isfinite(x) and x == int(x)):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(x)


def sample_from_object(
    obj: Any, parts: dict[str, str], table: FieldTable, source: str, arrival: float | None = None
) -> Sample | Rejected:
    """One JSON object (already decoded) to a Sample; the topic's parts give the cell unless
    the object names it. ``arrival`` is the time for objects without one (None: rejected).
    Problems are judged in one order whatever the key order: the cell, then the time, then the
    values; of two keys mapped to one field, the last counts. Plain floats are taken as they
    are, with no checks of their type: this runs per sample, the hot path of a batched gateway."""
    topic_cell = parts.get("cell")
    if type(obj) is not dict:
        return _reject_object(obj, source, "bad_payload", "expected a JSON object per sample", topic_cell)
    vals: dict[str, tuple[Any, float]] = {}  # field -> (value, scale); of two keys for one field, the last
    for key, v in obj.items():
        m = table.get(key)
        if m is not None:  # other keys (sequence numbers, gateway ids) are not ours: ignored
            vals[m[0]] = (v, m[1])
    s = Sample(math.nan, topic_cell)  # type: ignore[arg-type]  # its cell and time are checked below
    time_value = vals.pop("time", None)
    bad_value: str | None = None
    for name, (v, scale) in vals.items():
        try:
            if name in FLOAT_FIELDS:
                setattr(s, name, v * scale if type(v) is float else _number(v, scale))
            elif name == "cell":
                if v is not None:
                    s.cell = v
            elif name in INT_FIELDS:
                setattr(s, name, _integer(v))
            elif name == "mode":
                if v not in (None, "", *MODES):
                    raise ValueError(f"mode {v!r} is not one of {', '.join(MODES)}")
                s.mode = v or None
        except (ValueError, OverflowError, TypeError) as exc:
            bad_value = bad_value or str(exc)
    cell = s.cell
    if cell is None:
        return _reject_object(obj, source, "missing_cell", "no cell in the topic or the object", None)
    if cell is not topic_cell:  # the topic's cell is checked once per payload
        why = cell_problem(cell)
        if why:
            return _reject_object(obj, source, "bad_cell", why, None)
        if topic_cell is not None and cell != topic_cell:
            return _reject_object(obj, source, "cell_mismatch", f"object says {cell!r}", topic_cell)
    if time_value is not None:
        try:
            s.time = parse_time(time_value[0]) * time_value[1]
        except (ValueError, OverflowError, TypeError) as exc:
            bad_value = str(exc)
    elif arrival is not None:
        s.time = arrival
    else:
        return _reject_object(obj, source, "missing_time", "no time in the object", cell)
    if bad_value is not None:
        return _reject_object(obj, source, "bad_value", bad_value, cell)
    if s.voltage_V is None and s.current_A is None and s.pressure_MPa is None and s.temperature_C is None:
        return _reject_object(obj, source, "empty_sample", "no channel value", cell, s.time)
    return s


def _reject_object(
    obj: Any, source: str, reason: str, detail: str, cell: str | None, t: float | None = None
) -> Rejected:
    raw = _raw(obj) if isinstance(obj, str) else _raw(json.dumps(obj, default=str))
    return Rejected(source, reason, raw, cell=cell, time=t, detail=detail)


def parse_json_payload(
    payload: bytes, parts: dict[str, str], table: FieldTable, source: str, arrival: float | None = None
) -> list[Sample | Rejected]:
    """A JSON sample object or a list of them (gateways batch); one item per object, so the
    valid samples around a bad one are kept."""
    topic_cell = parts.get("cell")
    if topic_cell is not None and (why := cell_problem(topic_cell)):
        return [Rejected(source, "bad_cell", _raw(payload), detail=f"topic: {why}")]
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return [Rejected(source, "bad_json", _raw(payload), cell=topic_cell, detail=str(exc)[:200])]
    if isinstance(doc, list):
        if not doc:
            return [Rejected(source, "empty_payload", _raw(payload), cell=parts.get("cell"), detail="empty list")]
        return [sample_from_object(o, parts, table, source, arrival) for o in doc]
    return [sample_from_object(doc, parts, table, source, arrival)]


def parse_value_payload(
    payload: bytes, field_name: str, parts: dict[str, str], table: FieldTable, source: str, arrival: float | None
) -> tuple[str, float, str, float | None] | Rejected:
    """One channel of one cell (topic ``.../{cell}/{field}``): a bare number, or a JSON object
    with ``time`` and ``value``. Returns (cell, time, canonical field, value) or a Rejected."""
    raw = _raw(payload)
    cell = parts.get("cell")
    if cell is None:
        return Rejected(source, "missing_cell", raw, detail="payload = value needs {cell} in the topic")
    why = cell_problem(cell)
    if why:
        return Rejected(source, "bad_cell", raw, detail=why)
    m = table.get(field_name)
    if m is None or m[0] not in FLOAT_FIELDS:
        return Rejected(source, "unknown_field", raw, cell=cell, detail=f"topic field {field_name!r} is not mapped")
    name, scale = m
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return Rejected(source, "bad_json", raw, cell=cell, detail=str(exc)[:200])
    try:
        if isinstance(doc, dict):
            if "value" not in doc:
                raise ValueError("the object has no 'value'")
            value = _number(doc["value"], scale)
            time_key = next((k for k in doc if table.get(k, ("",))[0] == "time"), None)
            t = parse_time(doc[time_key]) if time_key is not None else arrival
        else:
            value, t = _number(doc, scale), arrival
    except (ValueError, OverflowError, TypeError) as exc:
        return Rejected(source, "bad_value", raw, cell=cell, detail=str(exc))
    if t is None:
        return Rejected(source, "missing_time", raw, cell=cell, detail="no time (set arrival_time = true to use it)")
    if value is None:
        return Rejected(source, "empty_sample", raw, cell=cell, time=t, detail="value is null")
    return cell, t, name, value


@dataclass(slots=True)
class _Group:
    born: float  # monotonic time its first part arrived
    values: dict[str, float] = field(default_factory=dict)
    tokens: list[Any] = field(default_factory=list)


class Joiner:
    """Joins one-value-per-topic parts into samples by cell and time.

    A sample is released when it has every ``complete`` channel, or ``window_s`` after its
    first part arrived with what it has. A cell's samples are released in time order: a
    complete sample releases the older incomplete ones of its cell first. Each released
    sample carries the ack tokens of the messages it was made of.
    """

    def __init__(self, complete: Iterable[str], window_s: float):
        self.complete = frozenset(complete)
        self.window_s = window_s
        self.groups: dict[str, dict[float, _Group]] = {}

    def add(self, cell: str, t: float, name: str, value: float, token: Any, now: float) -> list[tuple[Sample, list]]:
        groups = self.groups.setdefault(cell, {})
        g = groups.get(t)
        if g is None:
            g = groups[t] = _Group(now)
        g.values[name] = value
        g.tokens.append(token)
        if self.complete <= g.values.keys():
            return self._release(cell, t)
        return []

    def expired(self, now: float) -> list[tuple[Sample, list]]:
        out: list[tuple[Sample, list]] = []
        for cell in list(self.groups):
            old = [t for t, g in self.groups[cell].items() if now - g.born >= self.window_s]
            if old:
                out.extend(self._release(cell, max(old)))
        return out

    def _release(self, cell: str, upto: float) -> list[tuple[Sample, list]]:
        groups = self.groups[cell]
        out = []
        for t in sorted(t for t in groups if t <= upto):
            g = groups.pop(t)
            out.append((Sample(t, cell, **g.values), g.tokens))
        if not groups:
            del self.groups[cell]
        return out

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())


class AckWindow:
    """PUBACKs go out in the order the PUBLISHes came (MQTT 3.1.1 and 5.0, 4.6.0-2), each
    once its message is done; one window per connection, dead with it (the broker resends)."""

    def __init__(self, send: Callable[[int, int], Any]):
        self._send = send
        self._q: collections.deque[list[Any]] = collections.deque()
        self.alive = True

    def add(self, mid: int, qos: int) -> list[Any]:
        entry = [mid, qos, False]
        self._q.append(entry)
        return entry

    def done(self, tokens: Iterable[Any]) -> None:
        for tok in tokens:
            if tok is not None:
                tok[2] = True
        q = self._q
        while q and q[0][2]:
            mid, qos, _ = q.popleft()
            if self.alive:
                self._send(mid, qos)

    def __len__(self) -> int:
        return len(self._q)


# ---------------------------------------------------------------- the source


@dataclass(slots=True)
class _Conn:
    client: Any
    window: AckWindow
    connected: asyncio.Future[Any]
    ended: asyncio.Future[str]


class MqttSourceRunner:
    """Subscribes to the configured topic templates and emits what the payloads carry."""

    def __init__(self, cfg: MqttSource, *, station: str, name: str):
        self.cfg = cfg
        self.name = name
        self.templates = [TopicTemplate(t, station) for t in cfg.topics]
        self.table = field_table(cfg.fields)
        self.joiner = Joiner(cfg.join_fields, cfg.join_window_s)
        shard = f"-s{cfg.shard.index}of{cfg.shard.count}" if cfg.shard else ""
        self.client_id = cfg.client_id or f"shortwatch-{station}-{name}{shard}"
        self.health = SourceHealth(reason="not connected yet")
        self.counts: collections.Counter[str] = collections.Counter()  # messages, other_shard, ...
        self._inbox: collections.deque[tuple[_Conn, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Conn | None = None
        self._settle_until = 0.0  # loop time until which samples are held and sorted after a connect
        # recent messages (hash of topic and payload), to recognise the broker's redeliveries
        self._recent: set[int] = set()
        self._recent_order: collections.deque[int] = collections.deque()

    # -- the runner's protocol

    def checkpoint(self) -> dict[str, Any]:
        return {}  # the broker's persistent session is the position

    def restore(self, state: dict[str, Any]) -> None:
        pass

    async def run(self, emit: Emit) -> None:
        self._loop = asyncio.get_running_loop()
        consumer = asyncio.create_task(self._consume(emit), name=f"{self.name}:consume")
        attempt = 0
        down_logged = ""
        try:
            while True:
                if consumer.done():
                    consumer.result()  # raise what stopped it
                reason, was_up = await self._connection()
                if was_up:
                    attempt = 0
                if self.health.set(False, reason) or reason != down_logged:
                    log.warning("%s: MQTT %s:%d down: %s", self.name, self.cfg.host, self.cfg.port, reason)
                    down_logged = reason
                delay = reconnect_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
                attempt += 1
                log.debug("%s: reconnecting in %.1f s (attempt %d)", self.name, delay, attempt)
                await asyncio.sleep(delay)
        finally:
            consumer.cancel()
            conn = self._conn
            if conn is not None:
                asyncio.get_running_loop().create_task(self._linger(conn), name=f"{self.name}:linger")

    # -- connection

    def _new_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311,
            clean_session=None if cfg.protocol == "5" else cfg.clean_start,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, resolve_secret(cfg.password_env, cfg.password_file))
        if cfg.tls is not None:
            t = cfg.tls
            client.tls_set(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
            )
        return client

    async def _connection(self) -> tuple[str, bool]:
        """Connect, subscribe and receive until the connection ends; (why it ended, was it up)."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        loop = self._loop
        assert loop is not None
        cfg = self.cfg
        try:
            client = self._new_client()
        except (ConfigError, OSError, ValueError) as exc:  # a bad CA file, a missing secret: say so, retry later
            return f"cannot set up the client: {exc}", False
        conn = _Conn(client, AckWindow(client.ack), loop.create_future(), loop.create_future())

        def resolve(fut: asyncio.Future[Any], value: Any) -> None:
            if not fut.done():
                fut.set_result(value)

        def on_connect(c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                resolve(conn.ended, f"broker refused the connection: {rc}")
                c.disconnect()
                return
            if cfg.protocol == "5":  # retained messages only for a new subscription, not at every reconnect
                opts: Any = SubscribeOptions(qos=cfg.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            else:
                opts = cfg.qos
            c.subscribe([(t.filter, opts) for t in self.templates])
            resolve(conn.connected, flags.session_present)

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            why = "connection lost" if rc.is_failure and str(rc) == "Unspecified error" else str(rc)
            resolve(conn.ended, f"disconnected: {why}")

        # paho's network I/O runs in this event loop (its socket callbacks, as aiomqtt does), not in
        # paho's own thread: that thread would wait for the GIL behind the pipeline for every packet
        def on_socket_open(_c: Any, _u: Any, sock: Any) -> None:  # called in connect(), a worker thread
            _in_loop(loop, loop.add_reader, sock, self._readable, conn)

        def on_socket_close(_c: Any, _u: Any, sock: Any) -> None:
            fd = sock.fileno()
            if fd >= 0:
                _in_loop(loop, _unwatch, loop, fd)

        def on_register_write(c: Any, _u: Any, sock: Any) -> None:
            _in_loop(loop, loop.add_writer, sock, c.loop_write)

        def on_unregister_write(_c: Any, _u: Any, sock: Any) -> None:
            fd = sock.fileno()
            if fd >= 0:
                _in_loop(loop, loop.remove_writer, fd)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = partial(self._incoming, conn)
        client.on_socket_open = on_socket_open
        client.on_socket_close = on_socket_close
        client.on_socket_register_write = on_register_write
        client.on_socket_unregister_write = on_unregister_write
        extra: dict[str, Any] = {}
        if cfg.protocol == "5":  # 3.1.1 has neither: the session lasts, the broker sets the in-flight window
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = cfg.session_expiry_s
            props.ReceiveMaximum = cfg.max_inflight
            extra = {"clean_start": cfg.clean_start, "properties": props}
        try:
            await asyncio.to_thread(client.connect, cfg.host, cfg.port, cfg.keepalive_s, **extra)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
            return f"cannot connect: {exc}", False
        self._conn = conn
        misc = asyncio.create_task(self._keepalive(client), name=f"{self.name}:keepalive")
        was_up = False
        try:
            await asyncio.wait([conn.connected, conn.ended], return_when=asyncio.FIRST_COMPLETED)
            if conn.connected.done() and not conn.ended.done():
                was_up = True
                present = conn.connected.result()
                if self.health.set(True, "connected"):
                    log.info(
                        "%s: MQTT connected to %s:%d as %s (session %s), topics %s",
                        self.name,
                        cfg.host,
                        cfg.port,
                        self.client_id,
                        "resumed" if present else "new",
                        ", ".join(t.filter for t in self.templates),
                    )
            if was_up and present:  # a resumed session: its backlog may come out of order
                self._settle_until = loop.time() + cfg.settle_s
            reason = await conn.ended
        except asyncio.CancelledError:
            misc.cancel()
            raise  # shutting down: the linger task acks what is still being committed, then closes
        misc.cancel()
        conn.window.alive = False  # acks of this connection's messages would reach no one
        self._conn = None
        client.disconnect()
        return reason, was_up

    def _readable(self, conn: _Conn) -> None:
        """Read what the socket holds, a burst of packets per wake-up (loop_read takes one)."""
        client = conn.client
        for _ in range(READ_BURST):
            if client.loop_read() != 0:
                return  # paho handled the error (on_disconnect)
            sock = client.socket()
            if sock is None:
                return
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0  # TLS keeps decrypted bytes
            if not pending and not select.select([sock], [], [], 0)[0]:
                return
        self._loop.call_soon(self._readable, conn)  # type: ignore[union-attr]  # let others run, then go on

    async def _keepalive(self, client: Any) -> None:
        while client.loop_misc() == 0:
            await asyncio.sleep(1.0)

    async def _linger(self, conn: _Conn, timeout_s: float = 5.0) -> None:
        """At shutdown: send the acks of what the runner still commits, then disconnect."""
        try:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while len(conn.window) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            conn.window.alive = False
            conn.client.disconnect()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.1)  # the event loop writes the last acks and DISCONNECT

    def _incoming(self, conn: _Conn, _client: Any, _userdata: Any, msg: Any) -> None:
        """Hand the message to the consumer; wake it once per burst, not per message."""
        self._inbox.append((conn, msg))
        if not self._wake_pending:
            self._wake_pending = True
            self._wake.set()

    # -- consuming

    async def _consume(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        tick = min(self.cfg.join_window_s / 4, 0.25)
        held: list[Sample | Rejected] = []  # settling after a (re)connect
        held_done: list[Any] = []
        while True:
            if not self._inbox:
                timeout = tick if len(self.joiner) or held else None
                if timeout is None:
                    await self._wake.wait()
                else:  # the join window's and the settling's tick
                    await wait_event(self._wake, timeout)
            self._wake.clear()
            self._wake_pending = False
            items: list[Sample | Rejected] = []
            done: list[Any] = []
            now = loop.time()
            while self._inbox and len(items) < BATCH_MAX:
                conn, msg = self._inbox.popleft()
                self._handle(conn, msg, items, done, now)
            for s, tokens in self.joiner.expired(now):
                items.append(s)
                done.extend(tokens)
            if now < self._settle_until and len(held) < BATCH_MAX:
                held.extend(items)
                held_done.extend(done)
                continue
            if held:
                items, done = held + items, held_done + done
                held, held_done = [], []
            # in time order: QoS 1 redelivery after a broker restart can put a message behind later
            # ones, and the shared gate quarantines a cell's samples that come late
            items.sort(key=_time_key)
            if items:
                await emit(items, on_commit=partial(_ack_all, done))
            elif done:
                _ack_all(done)

    def _mine(self, cell: str) -> bool:
        sh = self.cfg.shard
        return sh is None or shard_of(cell, sh.count) == sh.index

    def _handle(self, conn: _Conn, msg: Any, items: list, done: list, now: float) -> None:
        self.counts["messages"] += 1
        token = (conn.window, conn.window.add(msg.mid, msg.qos)) if msg.qos else None
        topic = msg.topic
        key = hash((topic, msg.payload))
        if msg.dup and key in self._recent:
            # the broker resends what it had sent to the last connection and saw no PUBACK for; this
            # copy's samples are already on their way to the store, and are acknowledged after them
            self.counts["redelivered"] += 1
            if token:
                done.append(token)
            return
        self._recent_order.append(key)
        self._recent.add(key)
        if len(self._recent_order) > 4 * self.cfg.max_inflight:
            self._recent.discard(self._recent_order.popleft())
        parts = next((p for p in (t.match(topic) for t in self.templates) if p is not None), None)
        arrival = time.time() if self.cfg.arrival_time else None
        if parts is None:
            items.append(Rejected(self.name, "unexpected_topic", _raw(msg.payload), detail=f"topic {topic!r}"))
        elif "cell" in parts and not self._mine(parts["cell"]):
            self.counts["other_shard"] += 1
            if token:
                _ack_all([token])
            return
        elif self.cfg.payload == "json":
            for r in parse_json_payload(msg.payload, parts, self.table, self.name, arrival):
                if type(r) is Sample and not self._mine(r.cell):
                    self.counts["other_shard"] += 1
                else:
                    items.append(r)
        else:
            got = parse_value_payload(msg.payload, parts["field"], parts, self.table, self.name, arrival)
            if isinstance(got, Rejected):
                items.append(got)
            else:
                for s, tokens in self.joiner.add(*got, token, now):
                    items.append(s)
                    done.extend(tokens)
                return  # its ack waits for the sample it is part of
        if token:
            done.append(token)


def _time_key(item: Sample | Rejected) -> float:
    return item.time if type(item) is Sample else -math.inf


def _in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` now when called in ``loop``'s thread, else hand it to the loop."""
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def _unwatch(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    loop.remove_reader(fd)
    loop.remove_writer(fd)


def _ack_all(tokens: list[tuple[AckWindow, list[Any]] | None]) -> None:
    """Mark messages done, window by window (a batch may span a reconnect)."""
    by_window: dict[int, tuple[AckWindow, list[Any]]] = {}
    for tok in tokens:
        if tok is not None:
            w, entry = tok
            by_window.setdefault(id(w), (w, []))[1].append(entry)
    for w, entries in by_window.values():
        w.done(entries)
