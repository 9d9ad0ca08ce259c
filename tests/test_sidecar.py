"""The telemetry sidecar: schema and migrations, refusals that leave files untouched, every
sidecar SQL statement, batching, and real multi-process writers/readers and sampler locks.

Run as a script, this file is also the child process of the multi-process tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from oasis_ops import sqlfiles
from oasis_ops.errors import (
    DatabaseCorrupt,
    DatabaseLocked,
    DataError,
    SchemaError,
    SidecarBusy,
    UsageError,
)
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import (
    INSERT_STATEMENTS,
    BatchWriter,
    SamplerLock,
    Sidecar,
    heartbeat_row,
    latest_version,
    sidecar_path_for,
)
from oasis_ops.sidecar.schema import migrations

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)


def child_env() -> dict[str, str]:
    """The environment of our child processes: this checkout importable first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sibling_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --- paths and schema -------------------------------------------------------------------------
def test_default_path_is_next_to_the_trial_db(tmp_path: Path) -> None:
    settings = load_settings(None, env={})
    assert sidecar_path_for(tmp_path / "trials.duckdb", settings) == tmp_path / "trials.ops.duckdb"
    assert sidecar_path_for(tmp_path / "run7.db") == tmp_path / "run7.ops.duckdb"
    custom = load_settings(None, env={"OASIS_OPS_SIDECAR": str(tmp_path / "x" / "t.duckdb")})
    assert sidecar_path_for(tmp_path / "trials.duckdb", custom) == tmp_path / "x" / "t.duckdb"
    same = load_settings(None, env={"OASIS_OPS_SIDECAR": str(tmp_path / "trials.duckdb")})
    with pytest.raises(UsageError, match="must not be the trial DB"):
        sidecar_path_for(tmp_path / "trials.duckdb", same)
    with pytest.raises(UsageError):
        sidecar_path_for(None, settings)


def test_migrations_from_empty_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "trials.ops.duckdb"
    sidecar = Sidecar(path)
    assert sidecar.schema_version() == 0
    assert sidecar.migrate() == [m.version for m in migrations()] == list(range(1, latest_version() + 1))
    assert sidecar.migrate() == []
    assert Sidecar(path).migrate() == []  # a fresh instance (another process) too
    con = duckdb.connect(str(path), read_only=True)
    try:
        history = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        ts_types = set(
            con.execute(
                "SELECT DISTINCT data_type FROM duckdb_columns() WHERE column_name IN ('ts', 'applied_at', 'expires_at')"
            ).fetchall()
        )
    finally:
        con.close()
    assert history == [(m.version, m.name) for m in migrations()]
    assert set(INSERT_STATEMENTS) | {"schema_version"} == tables
    assert ts_types == {("TIMESTAMP WITH TIME ZONE",)}


def test_migration_resumes_from_an_older_version(tmp_path: Path) -> None:
    path = tmp_path / "old.ops.duckdb"
    con = duckdb.connect(str(path))
    con.execute(sqlfiles.sql("sidecar_create_schema_version"))
    for statement in con.extract_statements(migrations()[0].text):
        con.execute(statement)
    con.execute(sqlfiles.sql("sidecar_insert_schema_version"), {"version": 1, "applied_at": T0, "name": "core"})
    con.close()
    sidecar = Sidecar(path)
    assert sidecar.schema_version() == 1
    # A read of a table that v1 lacks says how to upgrade rather than crash.
    with pytest.raises(SchemaError, match="schema v1.*needs v"):
        sidecar.log_offsets()
    assert sidecar.migrate() == list(range(2, latest_version() + 1))
    assert sidecar.schema_version() == latest_version()


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "trials.ops.duckdb"
    Sidecar(path).migrate()
    con = duckdb.connect(str(path))
    future = latest_version() + 1
    con.execute("INSERT INTO schema_version VALUES ($v, now(), 'from_the_future')", {"v": future})
    con.close()
    before, files_before = digest(path), sibling_files(path)
    sidecar = Sidecar(path)
    with pytest.raises(SchemaError, match=rf"sidecar schema v{future} is newer than this oasis-ops \(v{latest_version()}\); upgrade oasis-ops"):
        sidecar.migrate()
    with pytest.raises(SchemaError, match=f"v{future} is newer"):
        sidecar.record_event("model_loaded", "gemma4:e4b")
    assert digest(path) == before
    assert sibling_files(path) == files_before


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + b"\x00" * 4000, b"[GIN] not a database\n" * 50])
def test_not_duckdb_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "trials.ops.duckdb"
    path.write_bytes(content)
    files_before = sibling_files(path)
    sidecar = Sidecar(path)
    with pytest.raises(DatabaseCorrupt, match="not a DuckDB database"):
        sidecar.migrate()
    with pytest.raises(DatabaseCorrupt):
        sidecar.write_batch({"events": [{"ts": T0, "kind": "x"}]})
    with pytest.raises(DatabaseCorrupt):
        sidecar.events_since(T0)
    assert path.read_bytes() == content
    assert sibling_files(path) == files_before


def test_someone_elses_duckdb_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "trials.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE trials (trial_id BIGINT, status VARCHAR)")
    con.close()
    before = digest(path)
    with pytest.raises(SchemaError, match="not an oasis-ops sidecar .*trials"):
        Sidecar(path).migrate()
    assert digest(path) == before


# --- writes and every sidecar_* statement -------------------------------------------------------
def sample_rows(ts: datetime) -> dict[str, list[dict[str, Any]]]:
    return {
        "host_samples": [
            {
                "ts": ts, "mem_total_bytes": 51_539_607_552, "mem_free_bytes": 58_402 * 16384,
                "mem_available_bytes": 2 << 30, "page_size": 16384, "pages_free": 58_402,
                "pages_speculative": 10, "swap_total_bytes": 4 << 30, "swap_used_bytes": 1 << 30,
                "pageins": 5, "pageouts": 6, "swapins": 1000, "swapouts": 504_282, "pressure": 50.0,
                "source": "macos:vm_stat",
            }
        ],
        "model_samples": [
            {
                "ts": ts, "model": "gemma4:e4b", "state": "stopping", "expires_at": ts - timedelta(seconds=30),
                "stopping_since": ts - timedelta(seconds=30), "size_bytes": 10 << 30, "size_vram_bytes": 10 << 30,
                "processor": "100% GPU", "context_length": 8192, "runner_pid": 4242,
                "runner_create_time": 1_700_000_000.25, "runner_rss_bytes": 10_600_000_000,
                "runner_cpu_percent": 99.7, "runner_threads": 12,
            },
            {"ts": ts - timedelta(seconds=1), "model": "gemma4:e4b", "state": "loaded"},
            {"ts": ts, "model": "llama3.2:1b", "state": "gone"},
        ],
        "events": [{"ts": ts, "kind": "model_stopping", "model": "gemma4:e4b", "detail": {"since": ts.isoformat()}}],
        "actions": [
            {
                "ts": ts, "action": "hard_kill", "target": "gemma4:e4b", "params": {"pid": 4242},
                "requested_by": "watchdog", "outcome": "done", "detail": {"signal": "SIGKILL"}, "duration_ms": 812.5,
            }
        ],
        "sampler_status": [
            heartbeat_row(pid=1, host="h", started_at=ts, last_tick_at=ts, ticks=1, errors=0, interval_s=1.0, now=ts),
            heartbeat_row(pid=1, host="h", started_at=ts, last_tick_at=ts, ticks=2, errors=0, interval_s=1.0, now=ts),
        ],
        "log_requests": [
            {"ts": ts, "status": 500, "latency_ms": 60000.2, "client": "127.0.0.1", "method": "POST",
             "path": "/api/chat", "source_file": "server.log", "line_no": 7}
        ],
        "log_events": [
            {"ts": ts, "level": "INFO", "msg": "server config", "kind": "server_config",
             "detail": {"OLLAMA_FLASH_ATTENTION": "true"}, "source_file": "server.log", "line_no": 1}
        ],
        "log_timings": [
            {"ts": ts, "task_id": 3, "prompt_eval_ms": 120.0, "prompt_tokens": 300, "eval_ms": 900.0,
             "eval_tokens": 50, "total_ms": 1020.0, "image_encode_ms": 17.0, "image_decode_ms": 3.0,
             "source_file": "runner.log", "line_no": 9}
        ],
        "harness_log": [
            {"ts": ts, "trial": "12455", "kind": "timeout", "latency_ms": 60000.0,
             "detail": "timed out after 1m0s (litellm.Timeout)", "source_file": "harness.log", "line_no": 1}
        ],
        "log_offsets": [
            {"path": "/x/server.log", "inode": 1, "size": 10, "offset_bytes": 5, "head_hash": "a", "updated_at": ts},
            {"path": "/x/server.log", "inode": 1, "size": 20, "offset_bytes": 20, "head_hash": "a", "updated_at": ts},
        ],
    }


def test_write_batch_and_every_sidecar_statement(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb", clock=lambda: T0 + timedelta(seconds=3))
    written = sidecar.write_batch(sample_rows(T0))  # also creates and migrates the file
    assert written == 12  # upsert rows are de-duplicated on their key within a batch
    sidecar.write_batch({"log_offsets": [{"path": "/x/server.log", "offset_bytes": 99, "updated_at": T0}]})
    sidecar.record_event("ollama_unreachable", detail={"error": "connection refused"}, ts=T0 + timedelta(seconds=1))
    sidecar.record_action("set_concurrency", "runner", {"max_concurrency": 1}, "cli", "not_acknowledged",
                          {"why": "no runner"}, 10012.0)

    used: set[str] = set()

    def q(name: str, **params: Any) -> pd.DataFrame:
        used.add("sidecar_q_" + name)
        return sidecar.read(name, **params)

    host = q("host_samples_since", since=T0, until=T0 + timedelta(hours=1), max_rows=10)
    assert host["pages_free"].tolist() == [58_402] and str(host["ts"].dt.tz) == "UTC"
    assert sidecar.host_samples_since(T0 + timedelta(seconds=1)).empty
    models = sidecar.model_samples_since(T0 - timedelta(minutes=1))
    used.add("sidecar_q_model_samples_since")
    assert models["state"].tolist() == ["loaded", "stopping", "gone"]  # oldest first
    limited = sidecar.model_samples_since(T0 - timedelta(minutes=1), max_rows=2)
    assert len(limited) == 2 and limited["ts"].min() == pd.Timestamp(T0)  # the newest rows kept
    events = sidecar.events_since(T0)
    used.add("sidecar_q_events_since")
    assert events["kind"].tolist() == ["model_stopping", "ollama_unreachable"]
    assert json.loads(events["detail"].iloc[1]) == {"error": "connection refused"}
    actions = sidecar.actions_since(T0)
    used.add("sidecar_q_actions_since")
    assert actions["action"].tolist() == ["hard_kill", "set_concurrency"]
    assert actions["ts"].iloc[1] == pd.Timestamp(T0 + timedelta(seconds=3))  # the injected clock
    assert json.loads(actions["params"].iloc[0]) == {"pid": 4242}
    sidecar.write_batch({"warnings": [{"ts": T0, "change": "raised", "kind": "memory_exhaustion", "severity": "warn",
                                       "first_seen": T0 - timedelta(minutes=2), "eta": T0 + timedelta(minutes=40), "message": "m",
                                       "evidence": {"free_bytes": 1}, "action": "concurrency 1"}]})  # fmt: skip
    warned = sidecar.warnings_since(T0)
    used.add("sidecar_q_warnings_since")
    assert warned["kind"].tolist() == ["memory_exhaustion"] and json.loads(warned["evidence"].iloc[0]) == {"free_bytes": 1}
    assert warned["eta"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=40)) and warned["change"].iloc[0] == "raised"

    sidecar.write_batch({"gpu_samples": [{"ts": T0, "gpu_index": 0, "name": "NVIDIA A10", "vendor": "nvidia",
                                          "memory_total_bytes": 24_000_000_000, "memory_used_bytes": 1_000, "source": "nvml"}]})  # fmt: skip
    gpus = sidecar.gpu_samples_since(T0, T0 + timedelta(seconds=1))
    used.add("sidecar_q_gpu_samples_since")
    assert gpus[["name", "memory_used_bytes"]].to_dict("records") == [{"name": "NVIDIA A10", "memory_used_bytes": 1_000}]
    assert gpus["utilization_percent"].isna().all()  # not reported: NULL, never 0

    latest = sidecar.latest_host_sample()
    used.add("sidecar_q_latest_host_sample")
    assert latest is not None and latest["swapouts"] == 504_282 and latest["ts"] == T0
    assert isinstance(latest["pressure"], float) and latest["mem_total_bytes"] == 51_539_607_552
    states = sidecar.latest_model_states()
    used.add("sidecar_q_latest_model_states")
    assert dict(zip(states["model"], states["state"], strict=True)) == {"gemma4:e4b": "stopping", "llama3.2:1b": "gone"}
    assert states.loc[states["model"] == "gemma4:e4b", "runner_create_time"].iloc[0] == 1_700_000_000.25

    beat = sidecar.sampler_heartbeat(now=T0 + timedelta(seconds=4))
    used.add("sidecar_q_sampler_heartbeat")
    assert beat is not None and beat.ticks == 2 and beat.running and beat.age_s == 4.0
    down = sidecar.sampler_heartbeat(now=T0 + timedelta(minutes=2))
    assert down is not None and not down.running and "sampler is down" in down.describe()

    stats = sidecar.table_stats().set_index("table")
    used.add("sidecar_q_table_stats")
    assert stats.loc["host_samples", "row_count"] == 1 and stats.loc["model_samples", "row_count"] == 3
    assert stats.loc["log_timings", "row_count"] == 1

    con = duckdb.connect(str(sidecar.path), read_only=True)
    try:
        counts = {t: con.execute("SELECT count(*) FROM query_table($t)", {"t": t}).fetchone()[0] for t in INSERT_STATEMENTS}  # type: ignore[index]
        flash = con.execute("SELECT detail->>'OLLAMA_FLASH_ATTENTION' FROM log_events").fetchone()
    finally:
        con.close()
    offsets = sidecar.log_offsets()
    used.add("sidecar_q_log_offsets")
    assert offsets[["path", "size", "offset_bytes"]].to_dict("records") == [
        {"path": "/x/server.log", "size": None, "offset_bytes": 99}  # upserted: the last row wins whole
    ]
    assert counts["sampler_status"] == 1 and counts["log_requests"] == 1 and counts["harness_log"] == 1
    assert flash == ("true",)

    from oasis_ops.sidecar.retention import TABLES, apply_retention

    assert set(apply_retention(sidecar, datetime.now(UTC), full_h=24, keep_days=30)) == set(TABLES)
    used |= {f"sidecar_retain_{table}" for table in TABLES}
    # Every sidecar_* SQL file ran in this test or in migrate()/write_batch().
    used |= set(INSERT_STATEMENTS.values())
    used |= {"sidecar_create_schema_version", "sidecar_insert_schema_version", "sidecar_schema_version",
             "sidecar_tables", "sidecar_columns"}
    on_disk = {n for n in sqlfiles.sql_names() if n.startswith("sidecar_")}
    assert on_disk == used


def test_bad_rows_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "s.ops.duckdb")
    with pytest.raises(UsageError, match="unknown sidecar table 'trials'"):
        sidecar.write_batch({"trials": [{"ts": T0}]})
    with pytest.raises(SchemaError, match="unknown column.*free_pages"):
        sidecar.write_batch({"host_samples": [{"ts": T0, "free_pages": 1}]})
    with pytest.raises(SchemaError, match="host_samples.ts"):
        sidecar.write_batch({"host_samples": [{"ts": "yesterday"}]})
    # All or nothing: a failing table in a batch stores none of the batch.
    sidecar.migrate()
    with pytest.raises(DataError):
        sidecar.write_batch({"events": [{"ts": T0, "kind": "ok"}], "model_samples": [{"ts": T0, "model": "m"}]})
    assert sidecar.events_since(T0).empty


def test_dataframe_input_and_missing_sidecar_reads(tmp_path: Path) -> None:
    missing = Sidecar(tmp_path / "nothing.ops.duckdb")
    empty = missing.host_samples_since(T0)
    assert empty.empty and "swapouts" in empty.columns
    assert missing.latest_host_sample() is None and missing.sampler_heartbeat() is None
    assert not missing.path.exists()  # reading never creates it
    frame = pd.DataFrame({"ts": [T0, T0 + timedelta(seconds=1)], "swapouts": [0, 42_118], "source": ["linux", "linux"]})
    assert missing.write_batch({"host_samples": frame}) == 2
    assert missing.host_samples_since(T0)["swapouts"].tolist() == [0, 42_118]


def test_a_held_lock_makes_writes_wait_then_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.ops.duckdb"
    Sidecar(path).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=child_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        sidecar = Sidecar(path, lock_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(DatabaseLocked, match="stayed locked"):
            sidecar.record_event("x")
        assert time.monotonic() - started >= 0.5
        assert sidecar.lock_retries > 0
    finally:
        holder.kill()
        holder.wait()
    Sidecar(path).record_event("after")  # released: works again


HOLD_OPEN = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


# --- BatchWriter --------------------------------------------------------------------------------
def test_batch_writer_flushes_by_rows_time_and_close(tmp_path: Path) -> None:
    now = [0.0]
    sidecar = Sidecar(tmp_path / "s.ops.duckdb")
    writer = BatchWriter(sidecar, flush_interval_s=2.0, max_rows=3, clock=lambda: now[0])
    writer.add("events", {"ts": T0, "kind": "a"})
    writer.add("events", {"ts": T0, "kind": "b"})
    assert writer.pending_rows == 2 and not sidecar.path.exists()
    writer.add("host_samples", {"ts": T0})  # third row: flush by count
    assert writer.pending_rows == 0 and writer.written_rows == 3
    writer.add("events", {"ts": T0, "kind": "c"})
    now[0] = 2.5
    assert writer.maybe_flush() == 1  # by time
    writer.add("events", {"ts": T0, "kind": "d"})
    writer.close()
    assert sidecar.events_since(T0)["kind"].tolist() == ["a", "b", "c", "d"]


def test_batch_writer_keeps_rows_on_failure_and_reports(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "later" / "s.ops.duckdb")  # its directory does not exist yet
    writer = BatchWriter(sidecar, max_rows=1000, max_buffered_rows=5)
    for i in range(4):
        writer.add("events", {"ts": T0 + timedelta(seconds=i), "kind": f"e{i}"})
    assert writer.flush() == 0
    assert writer.pending_rows == 4 and writer.error_count == 1 and "does not exist" in (writer.last_error or "")
    for i in range(4, 7):
        writer.add("events", {"ts": T0 + timedelta(seconds=i), "kind": f"e{i}"})
    assert writer.pending_rows == 5 and writer.dropped_rows == 2  # bounded, oldest dropped, counted
    writer.add("host_samples", {"ts": T0, "no_such_column": 1})  # one row past the bound again
    assert writer.dropped_rows == 3
    writer.flush()
    stats = writer.stats()
    assert stats["rejected_rows"] == 1 and stats["error_count"] == 3 and stats["pending_rows"] == 4
    with pytest.raises(DataError, match="4 telemetry rows could not be written"):
        writer.close()
    (tmp_path / "later").mkdir()
    writer.close()  # the directory exists now: everything still buffered gets written
    assert sidecar.events_since(T0)["kind"].tolist() == ["e3", "e4", "e5", "e6"]
    assert writer.stats()["pending_rows"] == 0


# --- real processes -----------------------------------------------------------------------------
def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=child_env(),
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_concurrent_writers_and_reader_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "trials.ops.duckdb"
    Sidecar(path).migrate()
    duration = "5"
    procs = [_spawn("writer", str(path), "w1", duration), _spawn("writer", str(path), "w2", duration),
             _spawn("reader", str(path), duration)]
    try:
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    w1, w2, reader = results
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = dict(con.execute("SELECT source, count(*) FROM host_samples GROUP BY source").fetchall())
        seqs = con.execute("SELECT source, count(DISTINCT pages_free) FROM host_samples GROUP BY source").fetchall()
        events = dict(con.execute("SELECT model, count(*) FROM events GROUP BY model").fetchall())
    finally:
        con.close()
    assert w1["batches"] > 10 and w2["batches"] > 10, (w1, w2)
    assert rows == {"w1": w1["rows"], "w2": w2["rows"]}
    assert dict(seqs) == rows  # every sequence number present exactly once
    assert events == {"w1": w1["batches"], "w2": w2["batches"]}
    assert w1["errors"] == w2["errors"] == reader["errors"] == 0
    assert reader["reads"] > 10 and reader["max_seen"] <= w1["rows"] + w2["rows"]
    print("concurrency:", w1, w2, reader)


def test_sampler_lock_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "trials.ops.duckdb"
    holder = _spawn("hold-sampler-lock", str(path))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(SidecarBusy, match=rf"another sampler \(pid {holder.pid}, started \d\d:\d\d:\d\d\) is already writing trials.ops.duckdb"):
            SamplerLock(path).acquire()
        holder.kill()  # SIGKILL: no cleanup code runs; the kernel drops the flock
        holder.wait()
        with SamplerLock(path) as lock:
            assert lock.held
            info = json.loads(lock.path.read_text())
            assert info["pid"] == os.getpid()
            second = _spawn("try-sampler-lock", str(path))
            result = _finish(second)
            assert result["busy"] and f"pid {os.getpid()}" in result["message"]
        assert not lock.held
        with SamplerLock(path):
            pass  # released cleanly: can be taken again
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# --- child process entry points -----------------------------------------------------------------
def _writer(path: str, name: str, seconds: float) -> dict[str, Any]:
    sidecar = Sidecar(path, lock_timeout_s=30.0)  # margin for a loaded 2-core machine
    seq = batches = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        rows = [{"ts": now, "pages_free": seq + i, "source": name} for i in range(20)]
        try:
            sidecar.write_batch({"host_samples": rows, "events": [{"ts": now, "kind": "batch", "model": name}]})
        except DataError as exc:  # counted; the test requires zero
            errors += 1
            print(exc, file=sys.stderr)
            continue
        seq += 20
        batches += 1
        time.sleep(0.02)
    return {"rows": seq, "batches": batches, "errors": errors, "lock_retries": sidecar.lock_retries}


def _reader(path: str, seconds: float) -> dict[str, Any]:
    sidecar = Sidecar(path, lock_timeout_s=30.0)  # margin for a loaded 2-core machine
    reads = errors = max_seen = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sidecar.host_samples_since(T0)
            max_seen = max(max_seen, len(frame))
            reads += 1
        except DataError as exc:
            errors += 1
            print(exc, file=sys.stderr)
        time.sleep(0.05)
    return {"reads": reads, "errors": errors, "max_seen": max_seen, "lock_retries": sidecar.lock_retries}


def _main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "writer":
        result = _writer(argv[1], argv[2], float(argv[3]))
    elif mode == "reader":
        result = _reader(argv[1], float(argv[2]))
    elif mode == "hold-sampler-lock":
        SamplerLock(argv[1]).acquire()
        print("locked", flush=True)
        time.sleep(120)
        return
    elif mode == "try-sampler-lock":
        try:
            SamplerLock(argv[1]).acquire()
            result = {"busy": False, "message": ""}
        except SidecarBusy as exc:
            result = {"busy": True, "message": str(exc)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
