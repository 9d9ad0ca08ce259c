"""Foundation checks: the core stays UI-free, every SQL file loads, settings are documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import duckdb
import pytest

from oasis_ops import sqlfiles
from oasis_ops.cli import main
from oasis_ops.errors import ConfigError
from oasis_ops.settings import SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_library_never_imports_streamlit() -> None:
    offenders = []
    for path in (ROOT / "oasis_ops").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_library_never_exits_the_process() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "oasis_ops").rglob("*.py")
        if re.search(r"\bsys\.exit\(", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_every_sql_file_parses() -> None:
    """Each named statement prepares against an empty in-memory DB, or fails only at binding."""
    names = sqlfiles.sql_names()
    assert names, "sql/ is empty"
    con = duckdb.connect()
    for name in names:
        text = sqlfiles.sql(name)
        assert text.strip(), f"{name}.sql is empty"
        try:
            con.extract_statements(text)
        except duckdb.ParserException as exc:  # pragma: no cover - the assertion reports it
            pytest.fail(f"sql/{name}.sql does not parse: {exc}")


def test_sql_never_formatted_in_python() -> None:
    """No f-string or %-formatting is passed to execute(); identifiers go in as parameters."""
    pattern = re.compile(r"\.(execute|sql|query)\(\s*(f\"|f'|\".*\"\s*%|'.*'\s*%)")
    offenders = []
    for path in list((ROOT / "oasis_ops").rglob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert offenders == []


def test_every_setting_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme or f"`{s.env}`" not in readme]
    assert missing == [], f"settings missing from README.md: {missing}"


def test_settings_layers(tmp_path: Path) -> None:
    cfg = tmp_path / "oasis-ops.toml"
    cfg.write_text('port = 9000\nhost = "127.0.0.2"\nok_words = ["ok", "success"]\n')
    env = {"OASIS_OPS_PORT": "9100", "OLLAMA_HOST": "http://127.0.0.1:12345"}
    s = load_settings(cfg, env=env, flags={"host": None, "bucket": "5m"})
    assert s.port == 9100 and s.origins["port"] == "OASIS_OPS_PORT"
    assert s.host == "127.0.0.2" and s.origins["host"] == str(cfg)
    assert s.ok_words == ["ok", "success"]
    assert s.ollama_host == "http://127.0.0.1:12345"
    assert s.bucket == "5m" and s.origins["bucket"] == "command line"
    assert load_settings(None, env={}).host == "127.0.0.1"


def test_settings_reject_bad_input(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'nonsense'"):
        load_settings(cfg, env={})
    cfg.write_text("port = 'eighty'\n")
    with pytest.raises(ConfigError, match="port"):
        load_settings(cfg, env={})
    cfg.write_text("port = [\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = 'x'\n")
    assert main(["--config", str(cfg), "settings"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oasis-ops: setting port")


def test_readme_settings_table_is_current() -> None:
    from oasis_ops import docs

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.render(text) == text, "README settings table is stale: run `make docs`"
