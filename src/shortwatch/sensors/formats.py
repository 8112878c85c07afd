"""The cycler file formats shortwatch reads: one registry entry per format, each with its sniffer.

Two small protocols cover every format:
- a text format gives a :class:`LineDecoder` (``feed(line) -> Sample | Rejected | None``,
  ``ready`` once its header is read, and optionally ``context_ready`` when resuming mid-file
  needs more than the header), driven by files.FileReader, which owns byte offsets;
- a binary format gives a :class:`RecordDecoder` (``poll(path, max, final)`` returning the
  records new since the last poll, ``state()``/``load()`` and ``offset``), driven by
  files.BinaryFileReader.

Detection is by content: every sniffer looks at the first bytes of the file; the extension
only breaks a tie between sniffers, or names the format when no sniffer recognises the
content (so that the format's own decoder can say what is wrong with the file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shortwatch.model import CSV_COLUMNS, Rejected, Sample
from shortwatch.sensors import arbin_csv, biologic_mpr, columns_map, maccor, neware_csv, neware_nda
from shortwatch.sensors.biologic import MAGIC as MPT_MAGIC
from shortwatch.sensors.biologic import BiologicMptDecoder
from shortwatch.sensors.canonical_csv import CanonicalCsvDecoder
from shortwatch.sensors.table import TableDecoder

Item = Sample | Rejected


class LineDecoder(Protocol):
    @property
    def ready(self) -> bool: ...

    def feed(self, line: str) -> Item | None: ...


class RecordDecoder(Protocol):
    offset: int

    def poll(self, path: Path, max_records: int = 5000, final: bool = False) -> list[Item]: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...


#: make(source, default cell, time zone, first bytes decoded, file source options) -> decoder
Maker = Callable[[str, str, str, str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Format:
    name: str
    binary: bool
    extensions: tuple[str, ...]
    sniff: Callable[[bytes, str], bool] | None  # (first bytes, as text) -> recognised; None: config only
    make: Maker
    encoding: str = "utf-8"
    skip: bool = False  # recognised, and deliberately not read (e.g. a metadata file beside the data)
    description: str = ""


class SkipDecoder:
    """A file that is not data (Arbin's _Metadata.csv): every line is ignored."""

    ready = True

    def feed(self, line: str) -> None:
        return None


def _canonical_csv(head: bytes, text: str) -> bool:
    first = text.split("\n", 1)[0].lstrip("\ufeff")
    names = {name.strip().strip('"') for name in first.split(",")}
    return "time" in names and bool(names & set(CSV_COLUMNS[2:]))


def _binary(fmt: Callable[[str, str, str], Any]) -> Maker:
    return lambda source, cell, tz, head, options: fmt(source, cell, tz)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "csv",
            False,
            (".csv",),
            _canonical_csv,
            lambda s, c, tz, h, o: CanonicalCsvDecoder(s, c, tz),
            description="canonical CSV: a header with 'time' and voltage_V, current_A or pressure_MPa",
        ),
        Format(
            "biologic-mpt",
            False,
            (".mpt",),
            lambda head, text: text.lstrip("\ufeff").startswith(MPT_MAGIC),
            lambda s, c, tz, h, o: BiologicMptDecoder(s, c, tz),
            encoding="latin-1",
            description="EC-Lab ASCII export (.mpt)",
        ),
        Format(
            "biologic-mpr",
            True,
            (".mpr",),
            lambda head, text: biologic_mpr.sniff(head),
            lambda source, cell, tz, head, options: biologic_mpr.MprDecoder(source, cell, tz, **options),
            description="EC-Lab binary file (.mpr), followed as it grows",
        ),
        Format(
            "neware-nda",
            True,
            (".nda", ".ndax"),
            lambda head, text: neware_nda.sniff_nda(head) or neware_nda.sniff_ndax(head),
            _binary(neware_nda.NewareDecoder),
            description="Neware BTS binary file (.nda, .ndax)",
        ),
        Format(
            "neware-csv",
            False,
            (".csv",),
            lambda head, text: neware_csv.sniff_flat(text) or neware_csv.sniff_nested(text),
            lambda s, c, tz, h, o: neware_csv.make_decoder(s, c, tz, h),
            encoding="latin-1",
            description="Neware BTS CSV export, flat or nested ('regular')",
        ),
        Format(
            "arbin-csv",
            False,
            (".csv",),
            lambda head, text: arbin_csv.sniff(text),
            lambda s, c, tz, h, o: TableDecoder(arbin_csv.LAYOUT, s, c, tz),
            encoding="latin-1",
            description="Arbin CSV export (Data_Point, Test_Time, ...)",
        ),
        Format(
            "arbin-metadata",
            False,
            (".csv",),
            lambda head, text: arbin_csv.sniff_metadata(text),
            lambda s, c, tz, h, o: SkipDecoder(),
            skip=True,
            description="Arbin's _Metadata.csv beside the data: recognised and skipped",
        ),
        Format(
            "maccor-txt",
            False,
            (".txt",),
            lambda head, text: maccor.sniff(text),
            lambda s, c, tz, h, o: maccor.make_decoder(s, c, tz, h),
            encoding="latin-1",
            description="Maccor text export (Rec# ... or Rec, Cycle P, Cycle C ... layouts)",
        ),
        Format(
            "columns",
            False,
            (),
            None,
            lambda s, c, tz, h, o: columns_map.make_decoder(s, c, tz, o),
            encoding="latin-1",
            description="any delimited export, mapped with the file source's 'columns'",
        ),
    )
}

#: what ``[[sources]] format`` accepts besides "auto" (arbin-metadata is found, never asked for)
CONFIG_FORMATS: tuple[str, ...] = tuple(name for name, f in FORMATS.items() if not f.skip)


_OWN_EXTENSIONS = frozenset({".mpt", ".mpr", ".nda", ".ndax"})


def head_text(head: bytes) -> str:
    """The first bytes as text for the text sniffers: Latin-1 (never fails), LF line ends."""
    return head.decode("latin-1").replace("\r\n", "\n")


def detect(head: bytes, path: Path) -> Format | None:
    """The format of a file from its first bytes; the extension breaks ties and fills gaps."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    text = head_text(head)
    found = [f for f in FORMATS.values() if f.sniff is not None and f.sniff(head, text)]
    suffix = path.suffix.lower()
    if len(found) > 1:
        found = [f for f in found if suffix in f.extensions] or found
    if found:
        return found[0]
    # Only extensions that belong to one format: a .csv or .txt tells nothing by itself.
    return next((f for f in FORMATS.values() if suffix in _OWN_EXTENSIONS and suffix in f.extensions), None)


def unknown_format_message(path: Path) -> str:
    names = "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values() if f.sniff is not None and not f.skip)
    return (
        f"{path}: unknown file format; supported: {names}. For another delimited export, "
        'set format = "columns" and map its columns in the config'
    )
