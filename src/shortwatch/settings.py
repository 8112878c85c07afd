"""The config schema (pydantic v2) and the TOML loader.

Every key a user may write is declared here with its default, so `check-config` can name
the exact key path that is wrong and what is allowed. Secrets never live in the TOML:
a setting that needs one takes ``<name>_env`` (an environment variable) or
``<name>_file`` (a file holding it), resolved by :func:`resolve_secret`.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
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

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Europe/Berlin'") from exc
        return v


class PressureWindow(Strict):
    """Safe stack-pressure window (DOMAIN.md: <1-3 MPa voids, >=10 MPa Li creep)."""

    min_MPa: float = Field(1.0, ge=0)
    max_MPa: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PressureWindow:
        if self.min_MPa >= self.max_MPa:
            raise ValueError("min_MPa must be below max_MPa")
        return self


class CellSpec(Strict):
    """Metadata a cell's features need (DESIGN.md "Cells")."""

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


class Settings(Strict):
    daemon: DaemonSettings = DaemonSettings()
    cells: dict[str, CellSpec] = Field(default_factory=dict)
    sources: list[Source] = Field(default_factory=list)
    storage: StorageSettings = StorageSettings()
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="detector parameter defaults for every cell"
    )
    alerts: AlertSettings = AlertSettings()

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


def _pop_secrets(data: Any, prefix: str = "") -> list[str]:
    """Remove inline secrets from the raw config (in place); one problem line for each."""
    found: list[str] = []
    if isinstance(data, dict):
        for k in list(data):
            path = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(k, str) and k.lower() in _SECRET_KEYS:
                del data[k]
                found.append(
                    f"{path}: secrets are not allowed in the config file; "
                    f"set {k}_env (an environment variable) or {k}_file (a file holding it) instead"
                )
            else:
                found.extend(_pop_secrets(data[k], path))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found.extend(_pop_secrets(v, f"{prefix}[{i}]"))
    return found


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


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("simulator", "file") and out.endswith("]"):
            continue  # the discriminator tag pydantic inserts into union paths
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_settings(data: dict[str, Any]) -> Settings:
    """Validate a raw config; raises ConfigError listing every problem with its key path."""
    data = copy.deepcopy(data)
    problems = _pop_secrets(data)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _format_loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            problems.append(f"{loc}: {msg}{shown}")
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    from shortwatch.detectors.registry import check_detector_params  # here: registry imports this module

    check_detector_params(settings)
    return settings


def load_settings(path: str | Path) -> Settings:
    """Load and validate a TOML config; raises ConfigError with one line per problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read config file: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: not valid TOML: {exc}"]) from None
    return parse_settings(data)
