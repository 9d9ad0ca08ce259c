"""The simulated harness as a real process against the real emulator: control channel
(concurrency, pause/resume, timeout), the write-up's stall -> evict -> Stopping path, and a clean
SIGTERM that writes every finished trial."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from helpers_emulator import is_stopping, ps_entry, running_emulator, set_fault, wait_until

from oasis_ops.control import ControlChannel
from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.logs.parse import HarnessLogParser, LocalClock

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_harness(emu: EmulatorProcess, work: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m oasis_ops.demo.harness` on work/trials.duckdb; always stopped (then killed)."""
    argv = [sys.executable, "-m", "oasis_ops.demo.harness", "--db", str(work / "trials.duckdb"), "--ollama", emu.url, *args]
    with (work / "harness.out").open("ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def state(work: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((work / "trials.control" / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def log_counts(work: Path) -> dict[str, int]:
    parser = HarnessLogParser(LocalClock())
    parser.feed_bytes((work / "runner.log").read_bytes() if (work / "runner.log").exists() else b"", 1)
    return dict(parser.counts.harness)


def db_rows(work: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(work / "trials.duckdb"), read_only=True)
    try:
        return con.execute("SELECT trial_id, status, latency_ms, error FROM trials ORDER BY trial_id").fetchall()
    finally:
        con.close()


def test_control_channel_resizes_pauses_and_resumes_the_pool(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=400, num_parallel=4) as emu, running_harness(
        emu, tmp_path, "--max-concurrency", "1", "--request-timeout-s", "20"
    ) as proc:
        channel = ControlChannel(tmp_path / "trials.control")
        wait_until(lambda: (state(tmp_path).get("completed") or 0) >= 2, 30, what="first trials")
        assert state(tmp_path)["max_concurrency"] == 1

        asked = time.monotonic()
        version = channel.request(max_concurrency=3, requested_by="test")
        applied = channel.wait_applied(version, timeout_s=10)
        assert time.monotonic() - asked < 2.0, "a concurrency change must be applied within 2 s"
        assert applied.max_concurrency == 3
        wait_until(lambda: state(tmp_path).get("in_flight") == 3, 15, 0.02, what="3 trials in flight")

        version = channel.request(paused=True, request_timeout_s=7.5, requested_by="test")
        assert channel.wait_applied(version, timeout_s=10).paused is True
        wait_until(lambda: state(tmp_path).get("in_flight") == 0, 15, what="in-flight trials to drain")
        held = state(tmp_path)["completed"]
        time.sleep(1.5)
        paused = state(tmp_path)
        assert paused["completed"] == held and paused["in_flight"] == 0 and paused["request_timeout_s"] == 7.5

        version = channel.request(paused=False, requested_by="test")
        assert channel.wait_applied(version, timeout_s=10).paused is False
        wait_until(lambda: (state(tmp_path).get("completed") or 0) >= held + 3, 20, what="trials after resume")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    final = state(tmp_path)
    assert final["stopped_at"] is not None
    rows = db_rows(tmp_path)
    counts = log_counts(tmp_path)
    # Every finished trial is in the DB, exactly once, with its outcome.
    assert len(rows) == counts.get("ok", 0) + counts.get("timeout", 0) + counts.get("error", 0) >= held + 3
    assert len({r[0] for r in rows}) == len(rows)
    assert {r[1] for r in rows} == {"ok"}
    assert "control v" in (tmp_path / "runner.log").read_text()


def test_stalls_evict_with_keep_alive_0_and_the_model_stays_stopping(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=150) as emu, running_harness(
        emu, tmp_path, "--max-concurrency", "2", "--request-timeout-s", "1.5", "--evict-threshold", "3", "--grace-s", "0"
    ):
        wait_until(lambda: log_counts(tmp_path).get("ok", 0) >= 3, 30, what="healthy trials")
        set_fault(emu.url, "stopping_deadlock", True, count=1)  # the next call wedges for good
        wait_until(lambda: "after 3 consecutive stalls (keep_alive=0)" in (tmp_path / "runner.log").read_text(), 30,
                   what="the eviction")
        assert "evicting gemma4:e4b after 3 consecutive stalls (keep_alive=0)" in (tmp_path / "runner.log").read_text()
        # keep_alive=0 waits for the wedged call: the model shows Stopping and stays there.
        wait_until(lambda: (e := ps_entry(emu.url, "gemma4:e4b")) is not None and is_stopping(e), 10, what="Stopping")
        ok_before = log_counts(tmp_path).get("ok", 0)
        timeouts_before = log_counts(tmp_path).get("timeout", 0)
        time.sleep(5)
        entry = ps_entry(emu.url, "gemma4:e4b")
        assert entry is not None and is_stopping(entry)
        after = log_counts(tmp_path)
        assert after.get("ok", 0) == ok_before, "no trial may complete behind the deadlocked runner"
        assert after.get("timeout", 0) > timeouts_before  # the retries keep timing out
        assert after.get("evict", 0) >= 2  # and keep evicting, to no effect
    rows = db_rows(tmp_path)
    assert {"ok", "timeout"} <= {r[1] for r in rows}
    timeouts = [r for r in rows if r[1] == "timeout"]
    assert all(r[3] == "timed out after 1.5s (litellm.Timeout)" and 1400 < r[2] < 5000 for r in timeouts)
