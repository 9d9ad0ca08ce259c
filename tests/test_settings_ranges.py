"""Every number a user can set has a checked range: settings (file, environment, flags) and the
CLI's own numeric flags refuse NaN, infinities, negatives and absurd values with one line."""

from __future__ import annotations

import pytest

from oasis_ops.cli import main as cli_main
from oasis_ops.errors import ConfigError
from oasis_ops.settings import CHOICES, RANGES, SETTINGS, load_settings


def test_every_numeric_setting_has_a_range_and_its_default_is_in_it() -> None:
    numeric = {s.name for s in SETTINGS if s.type in (int, float)}
    assert numeric == set(RANGES)
    for s in SETTINGS:
        if s.name in RANGES:
            low, high = RANGES[s.name]
            assert low <= s.default <= high, s.name
        if s.name in CHOICES:
            assert s.default in CHOICES[s.name]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "1e400", "99999999"])
def test_out_of_range_values_are_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="setting evict_grace_s from OASIS_OPS_EVICT_GRACE_S"):
        load_settings(env={"OASIS_OPS_EVICT_GRACE_S": value})


def test_ranges_and_choices_hold_for_files_and_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "oasis-ops.toml"
    config.write_text("port = 70000\n")
    with pytest.raises(ConfigError, match="70000 is outside 1..65535"):
        load_settings(config, env={})
    with pytest.raises(ConfigError, match="not one of concurrency, pause"):
        load_settings(env={"OASIS_OPS_WATCHDOG_GUARD_ACTION": "reboot"})
    assert load_settings(env={"OASIS_OPS_INCIDENT_MIN_FAILURE_RATE": "1"}).incident_min_failure_rate == 1.0


@pytest.mark.parametrize(("argv", "flag"), [
    (["evict", "m", "--grace", "inf"], "--grace"),
    (["evict", "m", "--grace", "nan"], "--grace"),
    (["recover", "m", "--grace", "-5"], "--grace"),
    (["sample", "--interval", "0"], "--interval"),
    (["dashboard", "--port", "0"], "--port"),
    (["preflight", "--min-free-gb", "-1"], "--min-free-gb"),
    (["kill-runner", "m", "--pid", "-3"], "--pid"),
])  # fmt: skip
def test_numeric_flags_refuse_nonsense(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_a_malformed_settings_file_is_one_line_naming_it(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    cases = {"syntax.toml": ("port = [\n", "cannot read config"), "type.toml": ('port = "abc"\n', "setting port from"),
             "table.toml": ("[server]\nport = 1\n", "unknown setting 'server'")}  # fmt: skip
    for name, (text, said) in cases.items():
        (tmp_path / name).write_text(text)
        assert cli_main(["--config", str(tmp_path / name), "settings"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err and name in err
