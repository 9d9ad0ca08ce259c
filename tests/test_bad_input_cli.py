"""Bad input through the CLI: one clear line and exit 1 or 2, never a traceback; JSON output is
always valid JSON (no bare NaN/Infinity). Cases from the adversarial sweep of issue 13."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from oasis_ops.cli import main as cli_main
from oasis_ops.fmt import json_text


def _table(path: Path, select: str) -> Path:
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE trials AS {select}")
    con.close()
    return path


@pytest.fixture
def trials_db(tmp_path: Path) -> Path:
    return _table(tmp_path / "trials.duckdb", "SELECT i AS trial_id, 'run-1' AS run_id, 'm' AS model, "
                  "TIMESTAMP '2025-11-20 10:00:00' + INTERVAL (i) SECOND AS started_at, 1000.0 + i AS latency_ms, "
                  "'ok' AS status FROM range(600) t(i)")  # fmt: skip


@pytest.mark.parametrize(("args", "said"), [
    (["--last", "3000000d"], "duration too long"),
    (["--from", "999999999d"], "duration too long"),
    (["--bucket", "99999999999999999999d"], "duration too long"),
    (["--to", "9999-12-31T23:59:59Z", "--last", "1h"], "end of year 9999"),
    (["--from", "0001-01-01", "--to", "2100-01-01"], "too close to the year 1"),
    (["--from", "2025-13-01"], "not a time"),
])  # fmt: skip
def test_extreme_times_are_one_line_and_exit_2(args: list[str], said: str, trials_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["timeline", "--db", str(trials_db), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err


def test_year_one_and_the_far_future_print_four_digit_years(trials_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["timeline", "--db", str(trials_db), "--from", "0001-01-01", "--to", "0001-01-01T00:03:00", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("0001-01-01T00:00:00Z,0,")


@pytest.mark.parametrize("command", [["timeline"], ["incidents", "--json"], ["report", "--out", "{tmp}/r.md"]])
def test_trials_without_any_start_time_are_said_not_drawn_as_an_empty_hour(command: list[str], tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = _table(tmp_path / "t.duckdb", "SELECT i AS trial_id, 'run-1' AS run_id, NULL::TIMESTAMP AS started_at, "
                "1000.0 AS latency_ms, 'ok' AS status FROM range(100) t(i)")  # fmt: skip
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    assert cli_main([*argv, "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none of the 100 trials" in err and "started_at is NULL" in err


def test_some_untimed_trials_are_counted_in_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _table(tmp_path / "t.duckdb", "SELECT i AS trial_id, 'run-1' AS run_id, CASE WHEN i % 10 = 0 THEN NULL "
                "ELSE TIMESTAMP '2025-11-20 10:00:00' + INTERVAL (i) SECOND END AS started_at, 1000.0 AS latency_ms, "
                "'ok' AS status FROM range(100) t(i)")  # fmt: skip
    assert cli_main(["timeline", "--db", str(db), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "10 of 100 trials have no start time" in captured.err
    assert sum(int(line.split(",")[1]) for line in captured.out.splitlines()[1:]) == 90


def test_newest_trials_without_a_run_id_show_every_trial_labelled_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _table(tmp_path / "t.duckdb", "SELECT i AS trial_id, CASE WHEN i < 200 THEN 'run-1' END AS run_id, "
                "TIMESTAMP '2025-11-20 10:00:00' + INTERVAL (i) SECOND AS started_at, 1000.0 AS latency_ms, "
                "'ok' AS status FROM range(300) t(i)")  # fmt: skip
    assert cli_main(["timeline", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "all trials: 2025-11-20 10:00:00 → 10:05:00 UTC" in out.splitlines()[0]
    assert sum(int(line.split()[2]) for line in out.splitlines()[2:]) == 300


def test_json_output_never_has_bare_nan_or_infinity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON output"))

    db = _table(tmp_path / "t.duckdb", "SELECT i AS trial_id, 'run-1' AS run_id, TIMESTAMP '2025-11-20 10:00:00' + "
                "INTERVAL (i) SECOND AS started_at, CASE i % 4 WHEN 0 THEN 'NaN'::DOUBLE WHEN 1 THEN 'Infinity'::DOUBLE "
                "WHEN 2 THEN 1e308 ELSE -5 END AS latency_ms, 'ok' AS status FROM range(400) t(i)")  # fmt: skip
    for argv in (["timeline", "--format", "json"], ["incidents", "--json"]):
        assert cli_main([*argv, "--db", str(db)]) == 0
        strict(capsys.readouterr().out)
    assert strict(json_text({"a": float("nan"), "b": [float("inf"), 1.5], "c": (float("-inf"),)})) == {"a": None, "b": [None, 1.5], "c": [None]}


def test_a_fifo_or_a_device_as_the_server_log_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    fifo = tmp_path / "server.log"
    os.mkfifo(fifo)  # opening it would block until a writer came; /dev/zero would never end
    for path, said in ((fifo, "is a FIFO"), (Path("/dev/zero"), "is a device"), (tmp_path, "is a directory")):
        assert cli_main(["ingest-logs", "--sidecar", str(tmp_path / "s.ops.duckdb"), "--server-log", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err


def test_an_unusable_snapshot_directory_is_one_line(trials_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(blocker))
    assert cli_main(["timeline", "--db", str(trials_db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot use the snapshot directory" in err


def test_a_trial_table_in_another_schema_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA evals")
    con.execute("CREATE TABLE evals.trials AS SELECT i AS trial_id, TIMESTAMP '2025-11-20 10:00:00' + INTERVAL (i) SECOND "
                "AS started_at, 100.0::DECIMAL(9, 1) AS latency_ms, 'ok' AS status FROM range(90) t(i)")  # fmt: skip
    con.close()
    assert cli_main(["timeline", "--db", str(db), "--format", "csv"]) == 0
    assert sum(int(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]) == 90


def test_compressed_or_utf16_logs_are_said_not_counted_as_junk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    line = b"[GIN] 2025/11/20 - 08:58:15 | 200 |      130.011\xc2\xb5s |       127.0.0.1 | GET      \"/api/ps\"\n"
    cases = {
        "server.log.gz": (gzip.compress(line), "is gzip-compressed"),
        "server-ps.log": (line.decode().encode("utf-16"), "is UTF-16 text"),
    }
    for name, (data, said) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert cli_main(["ingest-logs", "--sidecar", str(tmp_path / "s.ops.duckdb"), "--server-log", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err


def test_paths_with_spaces_and_non_ascii(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "eval runs" / "données ✓"
    where.mkdir(parents=True)
    db = _table(where / "trials 1.duckdb", "SELECT i AS trial_id, 'run-1' AS run_id, TIMESTAMP '2025-11-20 10:00:00' + "
                "INTERVAL (i) SECOND AS started_at, 1000.0 AS latency_ms, 'ok' AS status FROM range(120) t(i)")  # fmt: skip
    log = where / "server ü.log"
    log.write_text('[GIN] 2025/11/20 - 10:00:01 | 200 |    1.000000s |       127.0.0.1 | POST     "/api/chat"\n', encoding="utf-8")
    assert cli_main(["timeline", "--db", str(db), "--format", "csv"]) == 0
    assert sum(int(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]) == 120
    assert cli_main(["ingest-logs", "--db", str(db), "--server-log", str(log), "--utc-offset", "Z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["requests"] == 1
    assert (where / "trials 1.ops.duckdb").is_file()
