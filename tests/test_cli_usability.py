"""What a user meets at the command line: unknown cells, relative paths, a read-only state_dir,
Ctrl-C / SIGTERM during replay, unreadable files, and the demo's table at 100 columns."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_process import store_rows
from shortwatch.cli import main
from shortwatch.sensors.canonical_csv import write_csv
from shortwatch.sensors.simulator import SimulatedCell, default_spec

START = 1_767_600_000.0


def sim_csv(path: Path, cell: str, hours: float = 5.0) -> int:
    sim = SimulatedCell(cell, "sym_healthy", default_spec("sym_healthy"), seed=1, start=START, duration_h=hours)
    with open(path, "w", encoding="utf-8") as fh:
        return write_csv(sim.samples(), fh)


def stored(db: Path) -> int:
    """Samples in the store (a replay may be writing to it)."""
    return len(store_rows(db, "SELECT 1 FROM sample"))


def test_export_of_an_unknown_cell_names_the_stored_ones(tmp_path: Path, capsys) -> None:
    for cell in ("A1", "B2"):
        sim_csv(tmp_path / f"{cell}.csv", cell, hours=1)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[daemon]\nhttp = ""\nstate_dir = "state"\n')
    files = [str(tmp_path / "A1.csv"), str(tmp_path / "B2.csv")]
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), *files]) == 0
    capsys.readouterr()
    out = tmp_path / "out.csv"
    assert main(["export", "--config", str(cfg), "--cell", "Z9", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cell 'Z9' is not in the store" in err and "stored cells: A1, B2" in err
    assert "exported" not in err


def test_a_relative_state_dir_is_found_from_any_working_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    n = sim_csv(lab / "A1.csv", "A1", hours=1)
    (lab / "cfg.toml").write_text('[daemon]\nhttp = ""\nstate_dir = "var"\n')
    monkeypatch.chdir(lab)
    assert main(["replay", "--config", "cfg.toml", "--alerts-out", "a.jsonl", "A1.csv"]) == 0
    assert (lab / "var" / "shortwatch.sqlite").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["export", "--config", "../lab/cfg.toml", "out.csv"]) == 0
    assert f"exported {n} samples" in capsys.readouterr().err
    assert not (elsewhere / "var").exists()


# ---------------------------------------------------------------- a read-only state_dir

SETPRIV = shutil.which("setpriv")


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """pytest's tmp_path is private to root; the unprivileged process needs to read its config."""
    d = Path(tempfile.mkdtemp(prefix="shortwatch-ro-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI without root's power to ignore file modes (the suite runs as root in CI)."""
    cmd = [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m", "shortwatch.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, cwd="/")


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is needed to drop root's privileges")
def test_a_read_only_state_dir_is_a_clear_error_for_every_command(world_readable_dir: Path) -> None:
    if as_nobody("--version").returncode != 0:  # e.g. a checkout in a 0700 folder (mktemp -d)
        pytest.skip("the unprivileged user cannot import shortwatch from this checkout")
    d = world_readable_dir
    n = sim_csv(d / "A1.csv", "A1", hours=1)
    (d / "A1.csv").chmod(0o644)
    cfg = d / "cfg.toml"
    cfg.write_text(
        '[daemon]\nhttp = ""\nstate_dir = "state"\n[[sources]]\ntype = "file"\npaths = ["A1.csv"]\n'
        '[[sources]]\ntype = "simulator"\ncells = { S1 = "sym_healthy" }\nduration_h = 1\n'
    )
    cfg.chmod(0o644)
    # a store made by root, in a folder the unprivileged user may read but not write
    assert main(["replay", "--config", str(cfg), "--alerts-out", os.devnull, str(d / "A1.csv")]) == 0
    assert stored(d / "state" / "shortwatch.sqlite") == n
    for path in (d / "state", *(d / "state").iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    commands = {
        "run": ["run", "--config", str(cfg)],
        "replay": ["replay", "--config", str(cfg), "--no-progress", str(d / "A1.csv")],
        "export": ["export", "--config", str(cfg), "-"],
        "demo": ["demo", "--config", str(cfg), "--seconds", "1", "--out", str(d / "report")],
    }
    for name, args in commands.items():
        proc = as_nobody(*args)
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        assert f"{d / 'state'} is not writable" in proc.stderr, (name, proc.stderr)
    assert stored(d / "state" / "shortwatch.sqlite") == n  # nothing was harmed

    # a state_dir that does not exist yet, in a folder the user may not write
    cfg.write_text('[daemon]\nhttp = ""\nstate_dir = "new/state"\n')
    proc = as_nobody("replay", "--config", str(cfg), "--no-progress", str(d / "A1.csv"))
    assert proc.returncode == 2 and f"{d / 'new' / 'state'} is not writable" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- replay: signals and exit codes


def big_csv(path: Path, rows: int) -> None:
    """A symmetric cell cycling at +-1 mA in 1-h half-cycles, 10-s samples."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("time,cell,voltage_V,current_A\n")
        for k0 in range(0, rows, 10_000):
            fh.write(
                "".join(
                    f"{START + 10 * k:.0f},R1,{0.05 if (k // 360) % 2 == 0 else -0.05},"
                    f"{0.001 if (k // 360) % 2 == 0 else -0.001}\n"
                    for k in range(k0, min(rows, k0 + 10_000))
                )
            )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_replay_stops_on_a_signal_stores_what_it_read_and_says_so(tmp_path: Path, sig: signal.Signals) -> None:
    rows = 1_500_000
    big_csv(tmp_path / "R1.csv", rows)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[daemon]\nhttp = ""\nstate_dir = "state"\n')
    db = tmp_path / "state" / "shortwatch.sqlite"
    cmd = [sys.executable, "-m", "shortwatch.cli", "replay", "--config", str(cfg), "--no-progress"]
    proc = subprocess.Popen(
        [*cmd, "--alerts-out", str(tmp_path / "a.jsonl"), str(tmp_path / "R1.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while stored(db) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # reading has started once the first batch is committed
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig.value, err
    assert f"stopped by {sig.name}" in err, err
    summary = re.search(r"replayed (\d+) rows .* accepted (\d+);", err)
    assert summary is not None, err
    read, accepted = int(summary.group(1)), int(summary.group(2))
    assert 0 < read < rows  # it stopped reading early...
    assert stored(db) == accepted == read  # ...and stored every row it read


def test_replay_exits_1_naming_a_file_it_could_not_read(tmp_path: Path, capsys) -> None:
    n = sim_csv(tmp_path / "G1.csv", "G1")
    cr_only = tmp_path / "CR.csv"  # no line break the reader knows: unreadable as a whole
    cr_only.write_bytes(b"time,cell,voltage_V\r" + b"".join(b"%d,CR,0.05\r" % k for k in range(200_000)))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[daemon]\nhttp = ""\nstate_dir = "state"\n')
    files = [str(cr_only), str(tmp_path / "G1.csv")]
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), *files]) == 1
    err = capsys.readouterr().err
    assert f"could not read {cr_only}" in err and f"replayed {n} rows" in err
    # bad rows in a readable file are quarantined, and the run still succeeds
    bad = tmp_path / "B1.csv"
    bad.write_text("time,cell,voltage_V\n1767600000,B1,0.05\nnot-a-time,B1,0.05\n1767600010,B1,0.05\n")
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(tmp_path / "a.jsonl"), str(bad)]) == 0


# ---------------------------------------------------------------- the demo's live table


def snapshot(cell: str, v: float, i: float, status: str = "ok", firing: tuple[str, ...] = (), **cycle) -> dict:
    return {
        "cell": cell,
        "kind": "symmetric",
        "time": START + 86400,
        "voltage_V": v,
        "current_A": i,
        "pressure_MPa": 12.345,
        "temperature_C": 25.0,
        "cycle": 137,
        "step_kind": "discharge",
        "last_step": {},
        "last_cycle": cycle,
        "status": status,
        "firing": list(firing),
    }


def rendered(table, width: int) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text()


def test_the_live_table_fits_100_columns_without_cutting_names_or_numbers() -> None:
    from shortwatch.console import COLUMNS, CellTable

    snaps = [
        snapshot("gcpl.pr_182.1", -0.06123, -0.39281, asr_ohm_cm2=1234.5, dpq_MPa_g_per_Ah=-15.25, ce=0.9961),
        snapshot("A4", 0.00032, 0.0, "critical", ("hard_short", "overpotential_drop", "pressure_dpq_decline"), ce=0.95),
    ]
    for width in (100, 80):
        text = rendered(CellTable().render(snaps, width=width), width)
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= width
        for whole in ("gcpl.pr_182.1", "-0.0612", "-392.8100", "0.0003", "137", "critical", "hard_short"):
            assert whole in text, (width, whole, text)
        assert "overpotential_drop" in text.replace("\n", "")  # wrapped between names, never inside one
    text = rendered(CellTable().render(snaps, width=100), 100)
    for whole in ("12.35", "1234.5", "-15.2"):
        assert whole in text, (whole, text)
    assert "kind" not in text  # the lowest priority goes first
    wide = rendered(CellTable().render(snaps, width=200), 200)
    assert all(c.header in wide for c in COLUMNS) and "…" not in wide


def test_the_table_keeps_the_last_known_per_cycle_values() -> None:
    from shortwatch.console import CellTable

    table = CellTable()
    mid = [snapshot("B1", 3.9, -0.0005, asr_ohm_cm2=88.8, dpq_MPa_g_per_Ah=14.4, ce=0.996, cv_peak_A=0.00091)]
    assert "14.4" in rendered(table.render(mid, width=200), 200)
    end = [snapshot("B1", 3.9, 0.0)]  # the run's last cycle ended unfinished: no features
    text = rendered(table.render(end, width=200), 200)
    for value in ("88.8", "14.4", "0.996", "0.9100"):
        assert value in text
    assert "–" not in text


def test_the_live_tables_columns_do_not_flicker_as_values_change() -> None:
    from shortwatch.console import CellTable

    table = CellTable()
    wide = [snapshot("gcpl.pr_182.1", -10.0612, -1392.81, asr_ohm_cm2=1234.5, dpq_MPa_g_per_Ah=-15.25, ce=0.9961)]
    narrow = [snapshot("gcpl.pr_182.1", 0.06, 0.39, asr_ohm_cm2=1.5, dpq_MPa_g_per_Ah=1.25, ce=0.9961)]
    first = rendered(table.render(wide, width=100), 100).splitlines()[1]
    for _ in range(3):
        assert rendered(table.render(narrow, width=100), 100).splitlines()[1] == first
