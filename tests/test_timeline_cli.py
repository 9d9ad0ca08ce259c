"""`oasis-ops timeline`: json / csv / table output, ranges and filters, exit codes."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from helpers_trials import T0, independent_rollup, read_rows

from oasis_ops.cli import main
from oasis_ops.trials.generate import generate_trials

KEYS = ["minute", "trials", "ok", "timeouts", "errors", "failure_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
QUERY = "SELECT started_at, latency_ms, status, run_id, model FROM trials"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "trials.duckdb"
    generate_trials(path, n_trials=600, start=T0, minutes=30, seed=1,
                    failure_windows=[(T0 + timedelta(minutes=10), T0 + timedelta(minutes=13))])
    generate_trials(path, n_trials=300, start=T0 + timedelta(minutes=40), minutes=20, seed=2,
                    run_id="run-2", model="qwen3:8b")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["timeline", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_defaults_to_latest_run(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--db", str(db), "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    assert list(records[0]) == KEYS
    assert records[0]["minute"] == "2025-11-20T18:20:00Z" and len(records) == 20  # run-2 only
    expected = independent_rollup(read_rows(db, QUERY), T0 + timedelta(minutes=40), T0 + timedelta(minutes=60), run_id="run-2")
    assert [r["trials"] for r in records] == [e["trials"] for e in expected]
    assert records[3]["p95_ms"] == pytest.approx(expected[3]["p95_ms"])


def test_json_run_filter_nulls_and_failure_window(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "--run-id", "run-1", "--format", "json",
                        "--from", "2025-11-20T17:40:00Z", "--to", "2025-11-20T18:20:00Z")
    assert code == 0
    records = json.loads(out)
    assert len(records) == 40
    empty = [r for r in records if r["trials"] == 0]
    assert len(empty) == 10 and all(r["failure_rate"] is None and r["p50_ms"] is None for r in empty)
    window = [r for r in records if "17:50" <= r["minute"][11:16] < "17:53"]
    assert all(r["failure_rate"] > 0.8 for r in window)


def test_csv_with_last_and_model(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "--model", "gemma4:e4b", "--last", "10m", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == KEYS and len(rows) == 10
    # --last counts back from the newest trial of that model (run-1 ends at 18:10)
    assert rows[-1]["minute"] == "2025-11-20T18:09:00Z" and int(rows[-1]["trials"]) > 0


def test_table_is_aligned(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--db", str(db), "--last", "5m", "--bucket", "1m")
    assert code == 0
    lines = out.splitlines()
    assert str(db) in lines[0] and "bucket 1m" in lines[0]
    assert lines[1].split()[:3] == ["minute", "(UTC)", "trials"] and len(lines) == 2 + 5
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


@pytest.mark.parametrize("argv", [["--last", "6x"], ["--bucket", "0.5s"], ["--from", "yesterday-ish"],
                                  ["--last", "1h", "--from", "2025-11-20T17:00:00Z"]])
def test_bad_usage_exits_2_with_one_line(db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = _run(capsys, "--db", str(db), *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("oasis-ops: ")


def test_missing_database_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--db", str(tmp_path / "missing.duckdb"))
    assert code == 1 and err.strip().splitlines() == [f"oasis-ops: trial database not found: {tmp_path / 'missing.duckdb'}"]
