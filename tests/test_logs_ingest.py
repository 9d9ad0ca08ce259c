"""Ingestion into a real sidecar: incremental runs, appends, rotation, truncation, junk, the
follower, concurrent ingesters and the `ingest-logs` CLI end to end."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_logs import gin_line, slog_line, timing_block, write_server_log
from test_logs_parse import make_junk_log

from oasis_ops.cli import main
from oasis_ops.logs.ingest import ConcurrentIngest, LogStore, ingest_logs
from oasis_ops.logs.parse import LocalClock
from oasis_ops.logs.tail import LogFollower

OLLAMA = Path(__file__).resolve().parent / "fixtures" / "ollama"
T0 = datetime(2025, 11, 20, 9, 0, 0)


def query(sidecar: Path, text: str) -> list[tuple]:
    con = duckdb.connect(str(sidecar), read_only=True)
    try:
        return con.execute(text).fetchall()
    finally:
        con.close()


def count(sidecar: Path, table: str) -> int:
    return query(sidecar, f"SELECT count(*) FROM {table}")[0][0]  # test-only SQL on a fixed name


def gin_lines(n: int, start: int = 0) -> str:
    return "".join(gin_line(T0 + timedelta(seconds=start + i), 200, 1000.0 + i) + "\n" for i in range(n))


def assert_lines_once(sidecar: Path, source: Path, expected: int) -> None:
    """Every request line of `source` is stored exactly once, numbered 1..n without gaps."""
    got = [r[0] for r in query(sidecar, f"SELECT line_no FROM log_requests WHERE source_file = '{source.resolve()}' ORDER BY line_no")]
    assert got == list(range(1, expected + 1))


def test_fixtures_ingest_then_second_run_adds_nothing(tmp_path: Path) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    logs = [OLLAMA / "server.log", OLLAMA / "server_llama_server.log"]
    first = ingest_logs(sidecar, server_logs=logs, runner_log=OLLAMA / "runner.log", utc_offset="+01:00")
    total = first.counts
    assert total.requests == 16 and total.timings == 2 and total.junk == 0
    assert total.events["server_config"] == 1 and total.harness == {"evict": 1, "ok": 3, "timeout": 4}
    assert [f.start for f in first.files] == ["new", "new", "new"]
    tables = ("log_requests", "log_events", "log_timings", "harness_log")
    before = {t: count(sidecar, t) for t in tables}
    assert before == {"log_requests": 16, "log_events": 12, "log_timings": 2, "harness_log": 8}
    offsets_before = query(sidecar, "SELECT path, inode, size, offset_bytes, head_hash FROM log_offsets ORDER BY path")

    second = ingest_logs(sidecar, server_logs=logs, runner_log=OLLAMA / "runner.log", utc_offset="+01:00")
    assert [f.start for f in second.files] == ["resume"] * 3
    assert second.counts.lines == 0
    assert {t: count(sidecar, t) for t in tables} == before
    assert query(sidecar, "SELECT path, inode, size, offset_bytes, head_hash FROM log_offsets ORDER BY path") == offsets_before

    (ts, latency), = query(sidecar, "SELECT ts, latency_ms FROM log_requests WHERE line_no = 17 AND source_file LIKE '%/server.log'")
    assert ts == datetime(2025, 11, 20, 17, 4, 12, tzinfo=UTC) and latency == 248239.102
    (fa,) = query(sidecar, "SELECT detail->>'$.flash_attention' FROM log_events WHERE kind = 'load_request'")[0]
    assert fa == "true"


def test_append_with_a_partial_last_line(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    log.write_text(gin_lines(50))
    assert ingest_logs(sidecar, server_logs=[log], utc_offset="Z").counts.requests == 50
    tail = gin_lines(10, start=50)
    with log.open("a") as f:
        f.write(tail[:-20])  # nine whole lines and most of the tenth
    r = ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    assert r.counts.requests == 9 and r.counts.junk == 0 and r.files[0].start == "resume"
    with log.open("a") as f:
        f.write(tail[-20:])
    assert ingest_logs(sidecar, server_logs=[log], utc_offset="Z").counts.requests == 1
    assert_lines_once(sidecar, log, 60)


def test_rotation_finishes_the_rotated_file_and_starts_the_new_one(tmp_path: Path) -> None:
    sidecar, log, rotated = tmp_path / "s.ops.duckdb", tmp_path / "server.log", tmp_path / "server-1.log"
    log.write_text(gin_lines(30))
    ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    with log.open("a") as f:  # written after our run, before the rotation
        f.write(gin_lines(5, start=30))
    os.rename(log, rotated)
    log.write_text(gin_lines(7, start=100))
    r = ingest_logs(sidecar, server_logs=[rotated, log], utc_offset="Z")
    assert [f.start for f in r.files] == ["continued", "rotated"]
    assert r.files[0].continued_from == str(log.resolve()) and r.files[0].counts.requests == 5
    assert r.files[1].counts.requests == 7
    assert count(sidecar, "log_requests") == 42
    assert ingest_logs(sidecar, server_logs=[rotated, log], utc_offset="Z").counts.lines == 0


def test_rotation_detected_by_head_hash_with_the_same_inode(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    log.write_text(gin_lines(20))
    ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    with log.open("r+") as f:  # rewritten in place, longer than before: only the head tells
        f.write(gin_lines(40, start=1000))
    r = ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    assert r.files[0].start == "rotated" and r.counts.requests == 40


def test_truncation_restarts_from_zero(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    log.write_text(gin_lines(20))
    ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    with log.open("r+") as f:
        f.truncate(0)
    log.write_text(gin_lines(3, start=500))
    r = ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    assert r.files[0].start == "truncated" and r.counts.requests == 3
    assert count(sidecar, "log_requests") == 23


def test_junk_file_ingests_every_good_line(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    data, expected = make_junk_log(seed=11, good=2000)
    # An over-long line with no newline yet at the end: dropped without being held in memory.
    log.write_bytes(data + b"B" * (3 << 20))
    r = ingest_logs(sidecar, server_logs=[log], utc_offset="Z", chunk_bytes=64 << 10)
    assert r.counts.requests == expected["requests"] == count(sidecar, "log_requests")
    assert r.counts.junk == expected["junk"] + 1
    assert r.counts.unrecognized == expected["unrecognized"]
    with log.open("ab") as f:
        f.write(b"BBB\n" + gin_line(T0, 200, 1.0).encode() + b"\n")
    r2 = ingest_logs(sidecar, server_logs=[log], utc_offset="Z")
    assert r2.counts.requests == 1 and r2.counts.junk == 0  # the long line's end is skipped, not re-counted


def test_follower_ties_a_waiting_timing_block_to_the_next_gin_line(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    log.write_text(slog_line(T0, "llama-server started in 3.51 seconds", offset="Z") + "\n")
    follower = LogFollower(LogStore.at(sidecar), log, clock=LocalClock("Z"))
    assert follower.poll().counts.events == {"runner_started": 1}  # type: ignore[union-attr]
    with log.open("a") as f:
        f.write("\n".join(timing_block(0, 402.16, 312, 3671.9, 148, encode_ms=17, decode_ms=41)) + "\n")
    follower.poll()
    assert count(sidecar, "log_timings") == 0  # waiting in memory for its Gin line
    with log.open("a") as f:
        f.write(gin_line(T0 + timedelta(seconds=8), 200, 7622.090112) + "\n")
    follower.poll()
    assert query(sidecar, "SELECT ts, task_id, image_encode_ms FROM log_timings") == [
        (datetime(2025, 11, 20, 9, 0, 8, tzinfo=UTC), 0, 17.0)
    ]
    unchanged = follower.poll()
    assert unchanged is not None and unchanged.bytes_read == 0

    # Rotation under the follower: the rest of the old file is read from server-1.log first.
    with log.open("a") as f:
        f.write(gin_lines(2, start=20))
    os.rename(log, tmp_path / "server-1.log")
    log.write_text(gin_lines(3, start=40))
    follower.poll()
    assert count(sidecar, "log_requests") == 1 + 2 + 3
    follower.close()
    assert ingest_logs(sidecar, server_logs=[log], utc_offset="Z").counts.lines == 0


def test_concurrent_ingesters_never_duplicate(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    log.write_text(gin_lines(10))
    follower = LogFollower(LogStore.at(sidecar), log, clock=LocalClock("Z"))
    follower.poll()
    with log.open("a") as f:
        f.write(gin_lines(5, start=10))
    ingest_logs(sidecar, server_logs=[log], utc_offset="Z")  # another process got there first
    with log.open("a") as f:
        f.write(gin_lines(5, start=15))
    with pytest.raises(ConcurrentIngest):
        follower.poll()
    follower.poll()  # re-planned from the stored offset
    assert_lines_once(sidecar, log, 20)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "trials.duckdb"
    duckdb.connect(str(db)).close()
    server = tmp_path / "server.log"
    shutil.copy(OLLAMA / "server.log", server)
    argv = ["ingest-logs", "--db", str(db), "--server-log", str(server), "--runner-log", str(OLLAMA / "runner.log"), "--utc-offset", "+01:00"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "log_requests" in out and "harness_log.timeout" in out and "skipped junk lines" in out
    sidecar = tmp_path / "trials.ops.duckdb"
    assert count(sidecar, "log_requests") == 14 and count(sidecar, "harness_log") == 8

    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["lines"] == 0 and report["sidecar"] == str(sidecar)

    assert main(["ingest-logs", "--db", str(db), "--server-log", str(tmp_path / "missing.log")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "log file not found" in err[0]
    assert main(["ingest-logs", "--db", str(db), "--server-log", str(server), "--utc-offset", "+99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UTC offset" in err[0]


def test_bulk_ingest_of_a_generated_log(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "s.ops.duckdb", tmp_path / "server.log"
    lines = write_server_log(log, 2 << 20)
    r = ingest_logs(sidecar, server_logs=[log], utc_offset="+01:00", chunk_bytes=512 << 10)
    assert r.counts.lines == lines and r.counts.junk == 0
    assert count(sidecar, "log_requests") == r.counts.requests > 5000
    assert count(sidecar, "log_timings") == r.counts.timings > 1000
    (nulls,) = query(sidecar, "SELECT count(*) FROM log_timings WHERE total_ms IS NOT NULL AND (ts IS NULL OR image_encode_ms IS NULL)")[0]
    assert nulls == 0
