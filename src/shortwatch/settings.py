"""The config schema (pydantic v2) and the TOML loader.

Every key a user may write is declared here with its default, so `check-config` can name
the exact key path that is wrong and what is allowed. Secrets never live in the TOML:
a setting that needs one takes ``<name>_env`` (an environment variable) or
``<name>_file`` (a file holding it), resolved by :func:`resolve_secret`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Keys that would put a secret into the config file itself.
_SECRET_KEYS = {"token", "password", "secret", "api_key", "webhook_url", "apikey"}


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class DaemonSettings(Strict):
    station: str = Field("lab", description="tag written on every point")
    state_dir: Path = Field(Path("var"), description="embedded store, checkpoints, quarantine")
    timezone: str = Field("UTC", description="zone for formats that give local times")
    queue_batches: int = Field(
        16, ge=2, description="batches (up to 5000 samples each) buffered between sources and the pipeline"
    )
    checkpoint_interval_s: float = Field(30.0, gt=0, description="wall seconds between checkpoints")
    source_down_after_s: float = Field(
        60.0, gt=0, description="a source (MQTT broker, serial port) down this long raises a source_down data alert"
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="on stop, how long a store that cannot write (a full disk) gets before the run gives up"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    accept_unknown_cells: bool = Field(
        True, description="monitor cells with no [cells] section using defaults (false: quarantine them)"
    )
    http: str = Field("127.0.0.1:9108", description='host:port serving /healthz and Prometheus /metrics; "" = off')
    health_no_data_s: float = Field(
        900.0, ge=0, description="/healthz fails when no source delivered anything for this long; 0 = never"
    )
    health_backlog_s: float = Field(
        3600.0, gt=0, description="/healthz fails when a reader's oldest unsent row is older than this"
    )

    @field_validator("http")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'expected host:port such as 127.0.0.1:9108, or "" for off (got {v!r})')
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Europe/Berlin'") from exc
        return v


class PressureWindow(Strict):
    """Safe stack-pressure window: below 1-3 MPa stripping voids form, at 10 MPa or more Li creeps."""

    min_MPa: float = Field(1.0, ge=0)
    max_MPa: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PressureWindow:
        if self.min_MPa >= self.max_MPa:
            raise ValueError("min_MPa must be below max_MPa")
        return self


class CellSpec(Strict):
    """Metadata a cell's features need: its kind, areas, cathode mass and fixture."""

    kind: Literal["symmetric", "full", "anode-free"] = "symmetric"
    area_cm2: float = Field(0.785, gt=0, description="electrode area, for current density and ASR")
    pressure_area_cm2: float | None = Field(None, gt=0, description="pellet area under the load cell")
    cathode_mass_g: float | None = Field(None, gt=0, description="cathode active mass, full cells")
    fixture: Literal["fixed-gap", "constant-pressure"] = "fixed-gap"
    nominal_pressure_MPa: float | None = Field(None, ge=0)
    temperature_C: float | None = None
    rest_current_A: float | None = Field(
        None, ge=0, description="|I| at or below this is rest; default: 1 % of the largest |I| seen"
    )
    pressure_window: PressureWindow = PressureWindow()
    owners: list[str] = Field(
        default_factory=list, description="named in this cell's alerts: email addresses (mailed) or Slack mentions"
    )
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-detector parameter overrides for this cell"
    )

    @property
    def load_cell_area_cm2(self) -> float:
        return self.pressure_area_cm2 or self.area_cm2


class SimulatorSource(Strict):
    """Simulated cells (sensors/simulator.py): the demo's data and the tests'."""

    type: Literal["simulator"]
    cells: dict[str, str] = Field(description="cell id -> scenario name")
    seed: int = 0
    speedup: float = Field(0.0, ge=0, description="data seconds per wall second; 0 = as fast as possible")
    period_s: float = Field(10.0, gt=0, description="seconds between samples of one cell")
    duration_h: float | None = Field(None, gt=0, description="simulated hours, then the source ends")
    start: str = Field("2026-01-05T09:00:00+00:00", description="data time of the first sample")


ColumnField = Literal["time", "voltage_V", "current_A", "pressure_MPa", "temperature_C", "cycle", "step"]


class ColumnMap(Strict):
    """One column of a ``format = "columns"`` export: the canonical field it feeds, and its unit or scale."""

    field: ColumnField
    unit: str | None = Field(None, description="V, mV, A, mA, uA, MPa, kPa, bar, C; s, min, h for elapsed time")
    scale: float = Field(1.0, description="multiplies the value (after the unit); -1 flips a current's sign")

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str | None) -> str | None:
        from shortwatch.sensors.columns_map import UNITS  # here: settings must not load sensors at import

        if v is not None and v not in UNITS:
            raise ValueError(f"unknown unit {v!r}; use one of {', '.join(UNITS)}")
        return v


class FileSource(Strict):
    """Cycler export files, read from the start and followed as they grow."""

    type: Literal["file"]
    paths: list[str] = Field(min_length=1, description="file paths or glob patterns")
    format: Literal[
        "auto",
        "csv",
        "biologic-mpt",
        "biologic-mpr",
        "neware-nda",
        "neware-csv",
        "arbin-csv",
        "maccor-txt",
        "columns",
    ] = "auto"
    columns: dict[str, ColumnField | ColumnMap] | None = Field(
        None, description='format = "columns": column name -> canonical field, or {field, unit, scale}'
    )
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="columns: default tab, ; or ,")
    time_format: str = Field(
        "auto", description='columns: "auto" (Unix s or ISO-8601), "elapsed" (s or [d] h:m:s), or a strptime pattern'
    )
    cell: str | None = Field(None, description="cell id for files with no cell column (default: file stem)")
    follow: bool = Field(True, description="keep reading as the files grow")
    poll_s: float = Field(2.0, gt=0)
    retire_after_s: float = Field(
        3600.0, gt=0, description="a followed file that has not grown this long is only checked every 30 s"
    )

    @model_validator(mode="after")
    def _columns_for_columns_format(self) -> FileSource:
        if self.format != "columns":
            if self.columns is not None:
                raise ValueError('columns is only read with format = "columns"')
            return self
        targets = [c if isinstance(c, str) else c.field for c in (self.columns or {}).values()]
        if "time" not in targets or not {"voltage_V", "current_A", "pressure_MPa"} & set(targets):
            raise ValueError(
                'format = "columns" needs a columns map with a column for "time" and one for voltage_V, '
                "current_A or pressure_MPa"
            )
        if len(set(targets)) != len(targets):
            raise ValueError("columns: two columns feed the same field")
        return self

    def format_options(self) -> dict[str, Any]:
        """What the file readers need besides the format's name (the columns map and its options)."""
        if self.columns is None:
            return {}
        columns = {k: v if isinstance(v, str) else v.model_dump(exclude_none=True) for k, v in self.columns.items()}
        return {"columns": columns, "delimiter": self.delimiter, "time_format": self.time_format}


def _short_form(table: Any, key: str) -> Any:
    """A map whose values may be a bare string, short for ``{key = "..."}``."""
    if not isinstance(table, dict):
        return table
    return {k: {key: x} if isinstance(x, str) else x for k, x in table.items()}


class FieldSpec(Strict):
    """A payload key mapped to a canonical field, with a unit scale (canonical = value * scale)."""

    field: str = Field(description="canonical name: time, cell, voltage_V, current_A, pressure_MPa, ...")
    scale: float = Field(1.0, description="multiplier to the canonical unit, e.g. 0.001 for mA -> A")


class TlsSettings(Strict):
    ca_file: Path | None = Field(None, description="CA certificate(s) that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key (mutual TLS)")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class ShardSettings(Strict):
    """This daemon keeps the cells whose CRC-32 of the id, modulo ``count``, is ``index``."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _in_range(self) -> ShardSettings:
        if self.index >= self.count:
            raise ValueError("index must be below count")
        return self


class MqttSource(Strict):
    """Samples published on an MQTT broker (sensors/mqtt.py)."""

    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    topics: list[str] = Field(
        default_factory=lambda: ["lab/{station}/{cell}/telemetry"],
        min_length=1,
        description="templates: {station} is daemon.station, {cell} the cell, {field} a channel (payload value)",
    )
    payload: Literal["json", "value"] = Field(
        "json", description="json: a sample object or a list of them; value: one channel per topic ({field})"
    )
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict, description="payload key (or {field} topic part) -> canonical name, or {field, scale}"
    )
    join_fields: list[str] = Field(
        default_factory=lambda: ["voltage_V", "current_A"],
        description="payload = value: a sample is complete once these channels of one cell and time arrived",
    )
    join_window_s: float = Field(2.0, gt=0, description="payload = value: an incomplete sample waits this long")
    arrival_time: bool = Field(
        False, description="samples without a time take the arrival time (a redelivery then repeats them)"
    )
    settle_s: float = Field(
        3.0, ge=0, description="after each connect, samples are held this long and passed on in time order"
    )
    qos: Literal[0, 1] = 1
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="3.1.1 costs half the CPU per message; the broker then sets the in-flight window"
    )
    client_id: str | None = Field(None, description="default: shortwatch-<station>-<source index>[-shard]")
    clean_start: bool = Field(False, description="false: a persistent session (queued while the daemon is down)")
    session_expiry_s: int = Field(7 * 86400, ge=0, description="how long the broker keeps the session offline")
    max_inflight: int = Field(1000, ge=1, le=65535, description="unacknowledged messages the broker may send")
    keepalive_s: int = Field(30, ge=5)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls: TlsSettings | None = None
    shard: ShardSettings | None = None
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)

    @field_validator("fields", mode="before")
    @classmethod
    def _short_fields(cls, v: Any) -> Any:
        """``U = "voltage_V"`` is short for ``U = { field = "voltage_V" }``."""
        return _short_form(v, "field")

    @field_validator("fields")
    @classmethod
    def _canonical(cls, v: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        from shortwatch.model import CSV_COLUMNS

        for key, spec in v.items():
            name = spec.field
            if name not in CSV_COLUMNS:
                raise ValueError(f"{name!r} (key {key}) is not a canonical field; use one of {', '.join(CSV_COLUMNS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttSource:
        for t in self.topics:
            if self.payload == "value" and "{field}" not in t:
                raise ValueError(f"topic {t!r}: payload = 'value' needs a {{field}} part in every topic")
        return self


class SerialChannel(Strict):
    cell: str
    tare: float = Field(0.0, description="raw reading at zero load, in the device unit (subtracted first)")
    factor: float = Field(1.0, description="calibration factor applied after the tare")
    unit: Literal["N", "kgf"] | None = Field(None, description="default: the source's force_unit")


class SerialSource(Strict):
    """A load-cell amplifier or meter on a serial port (sensors/serial_source.py)."""

    type: Literal["serial"]
    port: str = Field(description="device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(9600, gt=0)
    mode: Literal["stream", "poll"] = "stream"
    pattern: str | None = Field(
        None, description="regex with named groups force (or value) and channel; default: CSV by csv_columns"
    )
    csv_columns: list[str] = Field(
        default_factory=lambda: ["channel", "force"], description="names of the comma-separated columns"
    )
    csv_delimiter: str = Field(",", min_length=1, max_length=1)
    channels: dict[str, SerialChannel] = Field(
        default_factory=dict,
        description="device channel -> cell (with tare, factor, unit); none in stream mode: "
        "the channel a line names is the cell id (e.g. an amplifier printing A1,12.34)",
    )
    force_unit: Literal["N", "kgf"] = "N"
    poll_command: str = Field("MEAS:FORC? {channel}\n", description="poll mode: sent per channel")
    poll_interval_s: float = Field(1.0, gt=0, description="poll mode: seconds between rounds")
    poll_timeout_s: float = Field(0.5, gt=0, description="poll mode: wait this long for a reply")
    encoding: str = "ascii"
    max_line_bytes: int = Field(256, ge=16, description="longer lines (no newline: garbage) are cut and rejected")
    silence_s: float = Field(30.0, gt=0, description="port open but no line this long: health says so")
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)

    @field_validator("channels", mode="before")
    @classmethod
    def _short_channels(cls, v: Any) -> Any:
        """``"1" = "A1"`` is short for ``"1" = { cell = "A1" }``."""
        return _short_form(v, "cell")

    @model_validator(mode="after")
    def _poll_needs_channels(self) -> SerialSource:
        if self.mode == "poll" and not self.channels:
            raise ValueError("poll mode needs channels: the channels to ask for, and their cells")
        return self

    @field_validator("poll_command")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(channel="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{channel}} may be filled in (write {{{{ and }}}} for braces): {exc!r}") from None
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        import re

        if v is None:
            return v
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if not ({"force", "value"} & set(rx.groupindex)):
            raise ValueError("the pattern needs a named group (?P<force>...) or (?P<value>...)")
        return v


Source = Annotated[SimulatorSource | FileSource | MqttSource | SerialSource, Field(discriminator="type")]


class StorageSettings(Strict):
    backend: Literal["sqlite", "influxdb"] = Field(
        "sqlite", description="sqlite: local only; influxdb: the SQLite log is kept and also sent to InfluxDB"
    )
    path: Path | None = Field(None, description="SQLite file; default <state_dir>/shortwatch.sqlite")
    max_pending_batches: int = Field(8, ge=1, description="batches waiting for the writer before sources wait")
    retention_days: float | None = Field(
        None, gt=0, description="remove local rows older than this (data time) that every reader has passed; none: keep"
    )
    quarantine_rows_per_reason: int = Field(
        10_000, ge=1, description="raw rejected inputs kept per reason; beyond it only a count"
    )
    # --- InfluxDB (backend = "influxdb"); docs/influxdb.md
    url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    api: Literal["v2", "v1"] = Field("v2", description="v2: org, bucket, token; v1: database, retention_policy")
    org: str | None = Field(None, description="v2: organization name or id")
    bucket: str | None = Field(None, description="v2: bucket")
    token_env: str | None = None
    token_file: Path | None = None
    database: str | None = Field(None, description="v1: database")
    retention_policy: str | None = Field(None, description="v1: retention policy (default: the database's)")
    username: str | None = Field(None, description="v1: user (with password_env / password_file)")
    password_env: str | None = None
    password_file: Path | None = None
    precision: Literal["s", "ms", "us", "ns"] = Field(
        "us", description="timestamp precision sent; us keeps every distinct stored sample time distinct"
    )
    batch_rows: int = Field(5000, ge=1, le=100_000, description="most points per write request")
    flush_interval_s: float = Field(1.0, gt=0, description="a smaller batch waits at most this long for more points")
    gzip: bool = Field(True, description="gzip request bodies")
    timeout_s: float = Field(30.0, gt=0, description="one write request's timeout")
    retry_max_s: float = Field(30.0, gt=0, description="longest wait between retries of a failed write")
    backlog_alert_age_s: float = Field(
        900.0, gt=0, description="raise a data alert `influx_backlog` when the oldest unsent row is older than this"
    )
    health_interval_s: float = Field(10.0, gt=0, description="seconds between the daemon's `daemon` health points")
    influx_retention_days: float | None = Field(
        None, gt=0, description="`shortwatch influx setup`: retention of the database/bucket it creates (none: forever)"
    )

    @model_validator(mode="after")
    def _influx_complete(self) -> StorageSettings:
        if self.backend != "influxdb":
            return self
        missing = (
            [k for k in ("org", "bucket") if not getattr(self, k)]
            if self.api == "v2"
            else ([] if self.database else ["database"])
        )
        if missing:
            raise ValueError(f"backend 'influxdb' with api '{self.api}' needs {' and '.join(missing)}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {self.url!r})")
        return self


class NotifierBase(Strict):
    """What every notifier has: a name (its durable cursor) and its routing."""

    name: str = Field("", description="default: the type; names the cursor and the dead-letter log")
    min_severity: Literal["info", "warning", "critical"] = "warning"
    cells: list[str] = Field(default_factory=lambda: ["*"], description="cell glob patterns ('_station': no cell)")
    detectors: list[str] = Field(default_factory=lambda: ["*"], description="detector glob patterns")
    kinds: list[Literal["cell", "data"]] = Field(default_factory=lambda: ["cell", "data"])
    timeout_s: float = Field(20.0, gt=0, description="one delivery attempt gives up after this")

    @model_validator(mode="after")
    def _default_name(self) -> NotifierBase:
        if not self.name:
            self.name = self.type  # type: ignore[attr-defined]
        return self


class EmailNotifier(NotifierBase):
    type: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    sender: str
    to: list[str] = Field(min_length=1)


class SlackNotifier(NotifierBase):
    type: Literal["slack"]
    webhook_url_env: str | None = None
    webhook_url_file: Path | None = None

    @model_validator(mode="after")
    def _has_url(self) -> SlackNotifier:
        if not (self.webhook_url_env or self.webhook_url_file):
            raise ValueError("set webhook_url_env or webhook_url_file (the incoming-webhook URL is a secret)")
        return self


class WebhookNotifier(NotifierBase):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", description="POST of the event JSON")
    secret_env: str | None = None
    secret_file: Path | None = None


class MqttNotifier(NotifierBase):
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("shortwatch", min_length=1)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    client_id: str | None = Field(None, description="default: shortwatch-<station>-<name>")
    commands: bool = Field(True, description="accept silence/ack commands on {prefix}/command")


class AlertmanagerNotifier(NotifierBase):
    type: Literal["alertmanager"]
    url: str = Field("http://127.0.0.1:9093", pattern=r"^https?://")


Notifier = Annotated[
    EmailNotifier | SlackNotifier | WebhookNotifier | MqttNotifier | AlertmanagerNotifier,
    Field(discriminator="type"),
]


class AlertTiming(Strict):
    """The state machine's timing for one detector (overrides the [alerts] values)."""

    pending_s: float | None = Field(None, ge=0)
    keep_firing_s: float | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0, lt=1)


class AlertSettings(Strict):
    jsonl_path: Path | None = Field(None, description="append every alert transition here as JSON lines")
    jsonl_max_mb: float = Field(64.0, gt=0, description="rotate the JSONL file at this size (alerts.jsonl.1, ...)")
    jsonl_keep: int = Field(5, ge=0, description="rotated JSONL files kept")
    group_wait_s: float = Field(30.0, ge=0, description="warnings of one detector within this go out as one")
    repeat_critical_s: float = Field(3600.0, ge=0, description="remind of a still-firing critical; 0 = never")
    quiet_hours: str | None = Field(None, description='"HH:MM-HH:MM" in daemon.timezone: warnings wait')
    pending_s: float = Field(0.0, ge=0, description="data seconds a warning must persist before it fires")
    keep_firing_s: float = Field(0.0, ge=0, description="data seconds an alert stays firing after it clears")
    hysteresis: float = Field(
        0.0, ge=0, lt=1, description="a clear within this fraction of the threshold holds max(2 x keep_firing_s, 1 h)"
    )
    detectors: dict[str, AlertTiming] = Field(
        default_factory=dict, description="per-detector pending_s / keep_firing_s / hysteresis"
    )
    console: bool = Field(True, description="log every transition as one line (WARNING or above) in `run`")
    notifiers: list[Notifier] = Field(default_factory=list)

    @field_validator("quiet_hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            parse_quiet_hours(v)
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> AlertSettings:
        names = [n.name for n in self.notifiers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"notifier names must be unique (set name = ...): {', '.join(dup)}")
        return self


def parse_quiet_hours(text: str) -> tuple[int, int]:
    """ "22:00-07:00" -> (start, end) in minutes after midnight; the span may wrap midnight."""
    try:
        a, b = text.split("-")
        (ha, ma), (hb, mb) = (map(int, x.strip().split(":")) for x in (a, b))
        if not (0 <= ha < 24 and 0 <= hb < 24 and 0 <= ma < 60 and 0 <= mb < 60):
            raise ValueError
    except ValueError:
        raise ValueError(f"quiet_hours {text!r}: use HH:MM-HH:MM, e.g. 22:00-07:00") from None
    return ha * 60 + ma, hb * 60 + mb


class GrafanaSettings(Strict):
    """Where `shortwatch dashboards push` puts the dashboards (the provisioning files need none of it)."""

    url: str | None = Field(None, description="Grafana base URL, e.g. http://127.0.0.1:3000")
    token_env: str | None = Field(None, description="environment variable holding a service-account token")
    token_file: Path | None = Field(None, description="file holding a service-account token")
    folder: str = Field("shortwatch", description="dashboard folder (created when missing)")
    datasource_uid: str = Field("shortwatch-influxdb", description="uid of the InfluxDB (InfluxQL) data source")
    timeout_s: float = Field(10.0, gt=0)


class Settings(Strict):
    daemon: DaemonSettings = DaemonSettings()
    cells: dict[str, CellSpec] = Field(default_factory=dict)
    sources: list[Source] = Field(default_factory=list)
    storage: StorageSettings = StorageSettings()
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="detector parameter defaults for every cell"
    )
    alerts: AlertSettings = AlertSettings()
    grafana: GrafanaSettings = GrafanaSettings()

    def cell_spec(self, cell: str) -> CellSpec:
        """The cell's config section, or the defaults for a cell that has none (one shared
        instance: building a CellSpec per unknown cell dominated replays of 100k cells)."""
        spec = self.cells.get(cell)
        return spec if spec is not None else _default_spec()

    @property
    def store_path(self) -> Path:
        return self.storage.path or self.daemon.state_dir / "shortwatch.sqlite"


@functools.cache
def _default_spec() -> CellSpec:
    return CellSpec()


def resolve_secret(env: str | None, file: str | Path | None) -> str | None:
    """Read a secret from an environment variable or a file; None when neither is set."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([f"environment variable {env} is not set"])
        return value
    if file:
        return Path(file).read_text().strip()
    return None


class ConfigError(Exception):
    """The config is invalid; ``problems`` holds one line per error, with its key path."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- loading and validation
#
# The helpers below walk the raw TOML and pydantic's error locations alongside the schema's
# types, so that they know, at every level, whether a key is a settings key (a field of a
# section) or a name the user chose (a cell id, a detector name): only the former can be an
# inline secret, get a "did you mean", or be a path to resolve. They read the types of
# whatever sections are declared above, so new sections need nothing here.

#: Words that make a key look like it holds a secret: its value is never printed.
_SECRET_WORDS = ("token", "password", "passwd", "pwd", "secret", "key", "webhook", "credential", "auth", "cookie")
#: Settings keys whose values are paths, resolved against the config file's folder.
_PATH_KEYS = {"state_dir", "path", "paths", "jsonl_path"}
_PATH_SUFFIXES = ("_file", "_path", "_dir")


def toml_key(name: str) -> str:
    """``name`` as a TOML key: bare when it may be, else a quoted basic string."""
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    out = []
    for c in name:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """A key path for messages and advice: ``cells."gcpl.pr_182.1".kind``, ``sources[0].paths``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + toml_key(part)
    return out or "(top level)"


def looks_secret(key: str) -> bool:
    """A key whose value may be a secret (also near misses such as ``influx_token``)."""
    k = key.lower()
    return any(w in k for w in _SECRET_WORDS)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that says what comes next."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType) and sum(a is not type(None) for a in get_args(tp)) == 1:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_models(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) not in (Union, UnionType):
        return []
    return [a for a in (_unwrap(a) for a in get_args(tp)) if _is_model(a)]


def _tag_values(model: type[BaseModel]) -> dict[str, tuple[Any, ...]]:
    """The Literal-typed fields of a union member (its discriminator candidates)."""
    return {
        name: get_args(_unwrap(f.annotation))
        for name, f in model.model_fields.items()
        if get_origin(_unwrap(f.annotation)) is Literal
    }


def _member_for_data(members: list[type[BaseModel]], data: dict[str, Any]) -> type[BaseModel] | None:
    """The union member a raw table selects by its tag (e.g. ``type = "file"``)."""
    for m in members:
        tags = _tag_values(m)
        if tags and any(k in data and data[k] in v for k, v in tags.items()):
            return m
    return None


def _member_for_loc(members: list[type[BaseModel]], part: Any) -> type[BaseModel] | None:
    """The union member pydantic names in an error location (its tag or class name)."""
    for m in members:
        if part == m.__name__ or any(part in v for v in _tag_values(m).values()):
            return m
    return None


def _is_inline_secret(key: str, model: type[BaseModel]) -> bool:
    return key.lower() in _SECRET_KEYS or f"{key}_env" in model.model_fields or f"{key}_file" in model.model_fields


def _pop_secrets(data: Any, tp: Any = None, path: tuple[str | int, ...] = ()) -> list[str]:
    """Remove inline secrets from the raw config (in place); one problem line for each."""
    tp = _unwrap(Settings if tp is None else tp)
    found: list[str] = []
    members = _union_models(tp)
    if members and isinstance(data, dict):
        member = _member_for_data(members, data)
        return _pop_secrets(data, member, path) if member else found
    if _is_model(tp) and isinstance(data, dict):
        for k in list(data):
            if _is_inline_secret(k, tp):
                del data[k]
                found.append(
                    f"{toml_path((*path, k))}: secrets are not allowed in the config file; "
                    f"set {k}_env (an environment variable) or {k}_file (a file holding it) instead"
                )
            elif k in tp.model_fields:
                found.extend(_pop_secrets(data[k], tp.model_fields[k].annotation, (*path, k)))
    elif get_origin(tp) is dict and isinstance(data, dict):
        for k, v in data.items():  # user-named keys (cell ids, detector names): never secrets
            found.extend(_pop_secrets(v, get_args(tp)[1], (*path, k)))
    elif get_origin(tp) is list and isinstance(data, list):
        for i, v in enumerate(data):
            found.extend(_pop_secrets(v, get_args(tp)[0], (*path, i)))
    return found


def _walk_loc(loc: tuple[Any, ...]) -> tuple[list[str | int], Any]:
    """A pydantic error location as a key path (union tags dropped), and the type found there."""
    tp: Any = Settings
    parts: list[str | int] = []
    for part in loc:
        tp = _unwrap(tp)
        members = _union_models(tp)
        if members:
            member = _member_for_loc(members, part)
            if member is not None:
                tp = member  # the tag pydantic inserts into union paths is not a key
                continue
        parts.append(part)
        if _is_model(tp):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            tp = field.annotation if field else None
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            tp = None
    return parts, _unwrap(tp)


def _unknown_key(key: str, model: Any) -> str:
    allowed = list(model.model_fields) if _is_model(model) else []
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}, did you mean {close[0]!r}?"
    return f"unknown key {key!r}; allowed: {', '.join(allowed)}" if allowed else f"unknown key {key!r}"


def _schema_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        parts, _ = _walk_loc(err["loc"])
        key = next((p for p in reversed(parts) if isinstance(p, str)), "")
        if err["type"] == "extra_forbidden":
            _, parent = _walk_loc(err["loc"][:-1])
            problems.append(f"{toml_path(parts)}: {_unknown_key(str(err['loc'][-1]), parent)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        hidden = isinstance(got, dict | list) or got is None or looks_secret(key)
        problems.append(f"{toml_path(parts)}: {msg}" + ("" if hidden else f" (got {got!r})"))
    return problems


def _detector_sections(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The raw [detectors] and [cells.X.detectors] tables, read even when other keys are wrong."""
    sections: list[tuple[str, Any]] = [("detectors", data.get("detectors"))]
    cells = data.get("cells")
    if isinstance(cells, dict):
        sections += [
            (toml_path(["cells", c, "detectors"]), spec.get("detectors"))
            for c, spec in cells.items()
            if isinstance(spec, dict)
        ]
    return [(path, table) for path, table in sections if isinstance(table, dict)]


def _rebase(value: Any, base: Path) -> Any:
    if isinstance(value, list | tuple):
        return type(value)(_rebase(v, base) for v in value)
    if isinstance(value, Path | str) and not (isinstance(value, str) and "://" in value):
        p = Path(value).expanduser()
        if not p.is_absolute():
            return type(value)(base / p)
    return value


def _resolve_paths(obj: Any, base: Path) -> None:
    """Make every relative path setting (state_dir, paths, *_file, ...) relative to ``base``."""
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            if name in _PATH_KEYS or name.endswith(_PATH_SUFFIXES):
                setattr(obj, name, _rebase(value, base))
            else:
                _resolve_paths(value, base)
    elif isinstance(obj, dict):
        for v in obj.values():
            _resolve_paths(v, base)
    elif isinstance(obj, list):
        for v in obj:
            _resolve_paths(v, base)


def parse_settings(data: dict[str, Any], base_dir: Path | None = None) -> Settings:
    """Validate a raw config; raises ConfigError listing every problem with its key path.

    ``base_dir``: the folder relative paths are resolved against (the config file's); None
    leaves them relative to the working directory (the embedded demo config has no file).
    """
    from shortwatch.detectors.registry import detector_problems  # here: registry imports this module

    data = copy.deepcopy(data)
    problems = _pop_secrets(data)
    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _schema_problems(exc)
    problems += detector_problems(_detector_sections(data))
    if problems or settings is None:
        raise ConfigError(problems)
    if base_dir is not None:
        _resolve_paths(settings, base_dir)
    return settings


def load_settings(path: str | Path) -> Settings:
    """Load and validate a TOML config; raises ConfigError with one line per problem.
    Relative paths in it are resolved against the folder of the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read config file: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: not valid TOML: {exc}"]) from None
    return parse_settings(data, base_dir=p.absolute().parent)
