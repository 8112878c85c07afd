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
    health_point_s: float = Field(60.0, gt=0, description="wall seconds between two `daemon` health records")

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


class FileSource(Strict):
    """Cycler export files, read from the start and followed as they grow."""

    type: Literal["file"]
    paths: list[str] = Field(min_length=1, description="file paths or glob patterns")
    format: Literal["auto", "csv", "biologic-mpt"] = "auto"
    cell: str | None = Field(None, description="cell id for files with no cell column (default: file stem)")
    follow: bool = Field(True, description="keep reading as the files grow")
    poll_s: float = Field(2.0, gt=0)
    retire_after_s: float = Field(
        3600.0, gt=0, description="a followed file that has not grown this long is only checked every 30 s"
    )


Source = Annotated[SimulatorSource | FileSource, Field(discriminator="type")]


class StorageSettings(Strict):
    backend: Literal["sqlite"] = "sqlite"
    path: Path | None = Field(None, description="SQLite file; default <state_dir>/shortwatch.sqlite")
    max_pending_batches: int = Field(8, ge=1, description="batches waiting for the writer before sources wait")
    retention_days: float | None = Field(
        None, gt=0, description="remove local rows older than this (data time) that every reader has passed; none: keep"
    )
    quarantine_rows_per_reason: int = Field(
        10_000, ge=1, description="raw rejected inputs kept per reason; beyond it only a count"
    )


class AlertSettings(Strict):
    jsonl_path: Path | None = Field(None, description="append every alert transition here as JSON lines")
    jsonl_max_mb: float = Field(64.0, gt=0, description="rotate the JSONL file at this size (alerts.jsonl.1, ...)")
    jsonl_keep: int = Field(5, ge=0, description="rotated JSONL files kept")


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
