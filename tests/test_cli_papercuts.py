"""What a new user hits first: flags in either place, typos named, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops.cli import main
from oasis_ops.trials.generate import generate_trials

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "trials.duckdb"
    generate_trials(path, n_trials=300, start=datetime(2025, 11, 20, 9, tzinfo=UTC), minutes=60, seed=3)
    return path


def test_config_works_before_and_after_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("port = 9123\n")
    for argv in (["--config", str(cfg), "settings", "--json"], ["settings", "--json", "--config", str(cfg)]):
        assert main(argv) == 0
        assert '"value": 9123' in capsys.readouterr().out


def test_unknown_run_or_model_is_named(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["timeline", "--db", str(db), "--run-id", "run-7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run 'run-7'" in err[0] and "runs: run-1" in err[0]
    assert main(["timeline", "--db", str(db), "--model", "llama9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model 'llama9'" in err[0] and "gemma4:e4b" in err[0]


def test_an_unusable_ollama_host_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "garbage::::")
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a usable URL" in err[0]


def test_a_closed_pipe_is_not_a_traceback(db: Path) -> None:
    """`oasis-ops timeline ... | head -1`: the reader leaves early."""
    cmd = f"{sys.executable} -m oasis_ops timeline --db {db} --format json | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "0"})  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0 and done.stdout.startswith("[")


def test_a_missing_trial_db_is_noted_and_a_missing_directory_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens: the sample says so
    typo = tmp_path / "trails.duckdb"
    assert main(["sample", "--db", str(typo), "--once"]) == 0
    err = capsys.readouterr().err
    assert f"trial database {typo} does not exist (yet)" in err
    assert main(["sample", "--db", str(tmp_path / "nowhere" / "trials.duckdb"), "--once"]) == 2
    assert "directory does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
