"""Trial tables as users have them, and a trial DB in a read-only directory, through the CLI:
a correct answer or one line naming the column, its type and the setting (exit 1); never a
traceback. The read-only directory is a real one: a tmpfs the test mounts and remounts
read-only (root ignores permission bits, a read-only file system it cannot)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from oasis_ops.cli import main as cli_main

FIXTURE_LOG = Path(__file__).parent / "fixtures" / "ollama" / "server.log"
TRIALS = 30


def make(path: Path, columns: str, select: str) -> Path:
    """A trials table of TRIALS rows, one a minute from 2025-11-20 17:00 UTC (i = 0..29)."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE trials ({columns})")
        con.execute(f"INSERT INTO trials SELECT {select} FROM range({TRIALS}) t(i)")
    return path


CANONICAL = ("trial_id INTEGER, run_id VARCHAR, model VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, "
             "latency_ms DOUBLE, status VARCHAR")  # fmt: skip
CANONICAL_ROW = ("i, 'r1', 'm', TIMESTAMP '2025-11-20 17:00:00' + i * INTERVAL 1 MINUTE, "
                 "TIMESTAMP '2025-11-20 17:00:04' + i * INTERVAL 1 MINUTE, 4000.0 + i, 'ok'")  # fmt: skip


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_two_hundred_extra_columns_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ", ".join(f"x{n} DOUBLE" for n in range(200))
    db = make(tmp_path / "wide.duckdb", f"{CANONICAL}, {extra}", f"{CANONICAL_ROW}, " + ", ".join(f"i * {n}" for n in range(200)))
    code, out, _ = run(["timeline", "--db", str(db), "--format", "json"], capsys)
    buckets = json.loads(out)
    assert code == 0 and sum(b["trials"] for b in buckets) == TRIALS
    assert [b["p50_ms"] for b in buckets] == [4000.0 + i for i in range(TRIALS)]


def test_odd_types_that_still_mean_the_same_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # trial id as DOUBLE, run id as INTEGER, latency as text digits, a TIMESTAMPTZ written in +05:30
    db = make(tmp_path / "typed.duckdb",
              "trial_id DOUBLE, run_id INTEGER, model VARCHAR, started_at TIMESTAMPTZ, latency_ms VARCHAR, status VARCHAR",
              "i::DOUBLE, 7, 'm', TIMESTAMPTZ '2025-11-20 22:30:00+05:30' + i * INTERVAL 1 MINUTE, (4000 + i)::VARCHAR, 'ok'")  # fmt: skip
    code, out, _ = run(["timeline", "--db", str(db), "--from", "2025-11-20T17:00:00Z", "--to", "2025-11-20T17:30:00Z",
                        "--format", "json"], capsys)  # fmt: skip
    buckets = json.loads(out)
    assert code == 0 and len(buckets) == TRIALS and buckets[0]["minute"] == "2025-11-20T17:00:00Z"
    assert [b["p50_ms"] for b in buckets] == [4000.0 + i for i in range(TRIALS)]


@pytest.mark.parametrize(
    ("columns", "select", "message"),
    [
        ("trial_id INTEGER, started_at VARCHAR, latency_ms DOUBLE, status VARCHAR",
         "i, '2025-11-20T17:00:00Z', 4000.0, 'ok'",
         "time column 'started_at' of table 'trials' in {db} is VARCHAR, not TIMESTAMP or TIMESTAMPTZ (setting time_column)"),
        ("trial_id INTEGER, started_at BIGINT, latency_ms DOUBLE, status VARCHAR",
         "i, 1763658000 + 60 * i, 4000.0, 'ok'",
         "time column 'started_at' of table 'trials' in {db} is BIGINT, not TIMESTAMP or TIMESTAMPTZ (setting time_column)"),
        ("trial_id INTEGER, run_id VARCHAR, started_at TIMESTAMP, status VARCHAR",
         "i, 'r1', TIMESTAMP '2025-11-20 17:00:00', 'ok'",
         "table 'trials' in {db} has neither a latency column 'latency_ms' nor a finished column 'finished_at' "
         "(settings latency_column, finished_column); columns: trial_id, run_id, started_at, status"),
        ("trial_id INTEGER, latency_ms DOUBLE, status VARCHAR", "i, 4000.0, 'ok'",
         "table 'trials' in {db} has no time column 'started_at' (setting time_column); columns: trial_id, latency_ms, status"),
    ],
    ids=["time as text", "time as epoch seconds", "no latency nor end", "no time"],
)  # fmt: skip
def test_unusable_columns_are_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], columns: str, select: str, message: str
) -> None:
    db = make(tmp_path / "odd.duckdb", columns, select)
    for args in (["timeline", "--db", str(db)], ["incidents", "--db", str(db), "--json"]):
        code, out, err = run(args, capsys)
        assert code == 1 and out == "" and err.strip() == f"oasis-ops: {message.format(db=db)}", err


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    except OSError as exc:  # no mount(8) at all
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        make(mount_point / "trials.duckdb", CANONICAL, CANONICAL_ROW)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], capture_output=True, text=True, check=False)
        assert remount.returncode == 0, remount.stderr
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_trial_db_in_a_read_only_directory(read_only_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = read_only_dir / "trials.duckdb"
    code, out, _ = run(["timeline", "--db", str(db), "--format", "json"], capsys)
    assert code == 0 and sum(b["trials"] for b in json.loads(out)) == TRIALS  # reading needs no write
    code, out, _ = run(["incidents", "--db", str(db), "--json"], capsys)
    assert code == 0 and json.loads(out) == []
    # the sidecar beside it cannot be made: one line naming it and why
    code, _, err = run(["ingest-logs", "--db", str(db), "--server-log", str(FIXTURE_LOG)], capsys)
    sidecar = read_only_dir / "trials.ops.duckdb"
    assert code == 1 and err.startswith(f"oasis-ops: {sidecar}: Read-only file system") and len(err.strip().splitlines()) == 1
    code, _, err = run(["sample", "--db", str(db), "--once"], capsys)
    assert code == 1 and "Read-only file system" in err and len(err.strip().splitlines()) == 1
    # elsewhere it works
    code, _, err = run(["ingest-logs", "--db", str(db), "--sidecar", str(tmp_path / "s.ops.duckdb"), "--server-log", str(FIXTURE_LOG)], capsys)
    assert code == 0, err
    report = tmp_path / "report.md"
    code, _, err = run(["report", "--db", str(db), "--sidecar", str(tmp_path / "s.ops.duckdb"), "--out", str(report)], capsys)
    assert code == 0 and report.read_text().startswith("#"), err


def test_column_mapping_rules(tmp_path: Path) -> None:
    """Aliases only while a setting is at its default; names case-insensitively; the default
    table name in another schema (when only one has it); each refusal names what exists."""
    from oasis_ops.errors import SchemaError
    from oasis_ops.settings import load_settings
    from oasis_ops.trials.mapping import TrialMapping

    def resolve(ddl: str, **flags: object) -> TrialMapping:
        with duckdb.connect(":memory:") as con:
            for statement in ddl.split(";"):
                con.execute(statement)
            return TrialMapping.resolve(con, load_settings(env={}, flags=flags), where="db")

    aliased = resolve("CREATE TABLE trials (ID INT, Start_Time TIMESTAMP, Ended_At TIMESTAMP, Outcome VARCHAR, Run VARCHAR, "
                      "Model_Name VARCHAR, Err VARCHAR)")  # fmt: skip
    assert (aliased.time_column, aliased.finished_column, aliased.latency_column, aliased.status_column, aliased.run_id_column,
            aliased.model_column, aliased.trial_id_column, aliased.error_column) == (
        "Start_Time", "Ended_At", None, "Outcome", "Run", "Model_Name", "ID", "Err")  # fmt: skip
    assert not aliased.time_is_tz and aliased.has_run_id and aliased.has_model
    # a setting changed from its default is taken as given: no alias hunt
    with pytest.raises(SchemaError) as info:
        resolve("CREATE TABLE trials (started_at TIMESTAMP, latency_ms DOUBLE, outcome VARCHAR)", status_column="verdict")
    assert str(info.value) == "table 'trials' in db has no status column 'verdict' (setting status_column); columns: started_at, latency_ms, outcome"
    tz = resolve("CREATE SCHEMA evals; CREATE TABLE evals.trials (started_at TIMESTAMPTZ, latency_ms DOUBLE, status VARCHAR)")
    assert tz.table == "evals.trials" and tz.time_is_tz and not tz.has_run_id and not tz.has_model
    with pytest.raises(SchemaError) as info:
        resolve("CREATE SCHEMA a; CREATE SCHEMA b; CREATE TABLE a.trials (x INT); CREATE TABLE b.trials (x INT)")
    assert str(info.value) == "no table 'trials' in db (setting table); tables: a.trials, b.trials"
    with pytest.raises(SchemaError, match=r"no table 'runs' in db \(setting table\); tables: none \(the database is empty\)"):
        resolve("SELECT 1", table="runs")
    with pytest.raises(SchemaError) as info:
        resolve("CREATE TABLE trials (started_at TIMESTAMP, finished_at VARCHAR, status VARCHAR)")
    assert str(info.value) == "finished column 'finished_at' of table 'trials' in db is VARCHAR, not a timestamp"
