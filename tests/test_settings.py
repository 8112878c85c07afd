"""Config loading, check-config messages and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortwatch.cli import demo_settings, main
from shortwatch.settings import (
    ConfigError,
    DaemonSettings,
    load_settings,
    parse_settings,
    resolve_secret,
    toml_key,
    toml_path,
)

ROOT = Path(__file__).resolve().parents[1]


def test_example_configs_are_valid() -> None:
    for name in ("demo.toml", "lab.toml"):
        load_settings(ROOT / "config" / name)


def test_embedded_demo_config_is_config_demo_toml() -> None:
    embedded = (ROOT / "src" / "shortwatch" / "demo.toml").read_text()
    assert embedded == (ROOT / "config" / "demo.toml").read_text()
    assert len(demo_settings().sources[0].cells) == 8


def test_check_config_lists_every_problem_with_its_key_path(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[daemon]\ntimezone = "Mars/Base"\n[cells.X]\nkind = "symetric"\narea_cm2 = -1\n'
        '[[sources]]\ntype = "mqt"\n[storage]\ntoken = "abc"\n[detectors.hard_short]\nconfirm = 3\n'
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for expected in (
        "storage.token: secrets are not allowed",
        "daemon.timezone: unknown time zone 'Mars/Base'",
        "cells.X.kind: Input should be 'symmetric', 'full' or 'anode-free' (got 'symetric')",
        "cells.X.area_cm2: Input should be greater than 0",
        "sources[0]: Input tag 'mqt'",
    ):
        assert expected in err
    bad.write_text("[detectors.hard_short]\nconfirm = 3\n")
    assert main(["check-config", str(bad)]) == 2
    assert "detectors.hard_short.confirm: unknown parameter" in capsys.readouterr().err


def test_check_config_reports_toml_syntax_and_missing_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[daemon\n")
    assert main(["check-config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_secrets_come_from_env_or_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SW_TEST_TOKEN", "s3cret")
    assert resolve_secret("SW_TEST_TOKEN", None) == "s3cret"
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert resolve_secret(None, f) == "from-file"
    assert resolve_secret(None, None) is None
    with pytest.raises(ConfigError, match="SW_UNSET_VAR is not set"):
        resolve_secret("SW_UNSET_VAR", None)


def test_detectors_command_lists_every_parameter_default(capsys) -> None:
    from shortwatch.detectors.registry import DETECTORS

    assert main(["detectors"]) == 0
    out = capsys.readouterr().out
    for name, cls in DETECTORS.items():
        assert name in out
        for key, (default, meaning) in cls.params.items():
            assert f"{key} = {default!r}" in out and meaning in out


def test_check_config_reports_schema_and_detector_problems_together(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[cells.A1]\nkind = "ful"\narea_cm = 1.0\n'
        "[detectors.overpotential_dorp]\nthreshold = 1\n[cells.A1.detectors.hard_shrt]\n"
        "[detectors.hard_short]\nconfirm = 3\n"
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "5 problem(s)" in err
    for expected in (
        "cells.A1.kind: Input should be 'symmetric', 'full' or 'anode-free' (got 'ful')",
        "cells.A1.area_cm: unknown key 'area_cm', did you mean 'area_cm2'?",
        "detectors.overpotential_dorp: unknown detector 'overpotential_dorp', did you mean 'overpotential_drop'?",
        "cells.A1.detectors.hard_shrt: unknown detector 'hard_shrt', did you mean 'hard_short'?",
        "detectors.hard_short.confirm: unknown parameter 'confirm', did you mean 'confirm_samples'?",
    ):
        assert expected in err
    assert "Extra inputs are not permitted" not in err


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings({"daemon": {"zzz": 1}, "sources": [{"type": "file", "paths": ["x"], "pathz": 1}]})
    assert exc.value.problems == [
        "daemon.zzz: unknown key 'zzz'; allowed: " + ", ".join(DaemonSettings.model_fields),
        "sources[0].pathz: unknown key 'pathz', did you mean 'paths'?",
    ]


def test_secret_values_are_never_printed_and_cell_names_are_not_secrets(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[daemon]\ninflux_token = "SECRET-1"\n[storage]\nauth_token = "SECRET-2"\npasswd = "SECRET-3"\n'
        'token = "SECRET-4"\n'
        '[alerts]\nwebhook_urll = "https://hooks.example/SECRET-6"\n'
    )
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "SECRET" not in err
    for key in ("daemon.influx_token", "storage.auth_token", "storage.passwd", "alerts.webhook_urll"):
        assert f"{key}: unknown key" in err
    assert "storage.token: secrets are not allowed" in err
    # a non-secret key's bad value is still shown, it helps
    cfg.write_text('[storage]\nmax_pending_batches = "many"\n')
    assert main(["check-config", str(cfg)]) == 2
    assert "(got 'many')" in capsys.readouterr().err
    # user-chosen names (cell ids, scenario map keys, detector tables) are never inline secrets
    settings = parse_settings(
        {
            "cells": {"secret": {"kind": "full"}, "token": {}},
            "sources": [{"type": "simulator", "cells": {"password": "sym_healthy"}}],
        }
    )
    assert set(settings.cells) == {"secret", "token"}
    assert settings.sources[0].cells == {"password": "sym_healthy"}


def test_toml_key_quotes_only_what_needs_it() -> None:
    import tomllib

    assert toml_key("A1") == "A1" and toml_key("cell-2_b") == "cell-2_b"
    for name in ("gcpl.pr_182.1", "has space", 'q"uote', "back\\slash", "ctl\x01\x7f", "Zelle-ä", ""):
        table = toml_path(["cells", name])
        assert tomllib.loads(f"[{table}]\nkind = 'full'\n") == {"cells": {name: {"kind": "full"}}}
    assert toml_path(["sources", 0, "paths"]) == "sources[0].paths"


def test_cell_config_advice_names_a_table_that_parses() -> None:
    import re
    import tomllib

    from shortwatch.daemon.pipeline import Pipeline
    from shortwatch.model import RecordBatch, Sample

    cell = "gcpl.pr_182.1"
    p = Pipeline(parse_settings({}))
    out = RecordBatch()
    p.process([Sample(1.7e9 + 10 * k, cell, 3.5, 1e-3, mode="cc") for k in range(5)], "f", out)
    p.process([Sample(1.7e9 + 50 + 10 * k, cell, 2.3, 0.0, mode="rest") for k in range(10)], "f", out)
    (alert,) = [a for a in out.alerts if a.detector == "cell_config"]
    table = re.search(r"in \[(.+)\] of the config", alert.advice).group(1)
    assert table == 'cells."gcpl.pr_182.1"'
    assert tomllib.loads(f'[{table}]\nkind = "full"\n') == {"cells": {cell: {"kind": "full"}}}


def test_relative_paths_are_resolved_against_the_config_files_folder(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "lab.toml").write_text(
        '[daemon]\nstate_dir = "var"\n[storage]\npath = "db/s.sqlite"\n[alerts]\njsonl_path = "out/a.jsonl"\n'
        '[[sources]]\ntype = "file"\npaths = ["data/*.csv", "/abs/x.csv"]\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings("../conf/lab.toml")
    assert s.daemon.state_dir == conf.parent / "elsewhere" / ".." / "conf" / "var"
    assert s.daemon.state_dir.resolve() == conf / "var"
    assert s.storage.path.resolve() == conf / "db" / "s.sqlite"
    assert s.alerts.jsonl_path.resolve() == conf / "out" / "a.jsonl"
    assert [str(Path(x).resolve()) for x in s.sources[0].paths] == [str(conf / "data" / "*.csv"), "/abs/x.csv"]
    # the default state_dir, too; the embedded demo config (no file) stays relative
    (conf / "min.toml").write_text("")
    assert load_settings(conf / "min.toml").store_path.resolve() == conf / "var" / "shortwatch.sqlite"
    assert not demo_settings().daemon.state_dir.is_absolute()
