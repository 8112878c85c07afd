"""Config loading, check-config messages and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortwatch.cli import demo_settings, main
from shortwatch.settings import ConfigError, load_settings, resolve_secret

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
