"""The demo world end to end: the Ollama emulator, the simulated harness (a real process writing
the trial DB the safe way) and the `stopping_deadlock` fault. The harness times out, evicts
(keep_alive 0) and stalls; recover() brings trials back, as the trial DB itself shows
(TrialSource.completed_since, the watchdog's own question)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_emulator import (
    blob_of,
    emulator_fixture,
    find_runner_pid,
    ps_entry,
    set_fault,
    wait_until,
)

from oasis_ops.actions import ActionContext, recover
from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.errors import DataError
from oasis_ops.settings import Settings, load_settings
from oasis_ops.trials import TrialSource

MODEL = "gemma4:e4b"
emulator = emulator_fixture(latency_ms=100, load_ms=50)
pytestmark = pytest.mark.skipif(
    not (Path(__file__).resolve().parent.parent / "oasis_ops" / "demo" / "harness.py").exists(), reason="no harness"
)


def stopping(url: str) -> bool:
    entry = ps_entry(url, MODEL)
    return bool(entry) and entry["expires_at"] < datetime.now(UTC).isoformat()  # type: ignore[index]


def open_source(db: Path, settings: Settings) -> TrialSource | None:
    """The file appears before the harness's first batch creates the table."""
    try:
        return TrialSource(db, settings)
    except DataError:
        return None


def test_recover_brings_the_harness_back(emulator: EmulatorProcess, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    settings = load_settings(env={}, flags={"ollama_host": emulator.url, "ollama_models": str(emulator.home.root / "models"),
                                            "snapshot_dir": str(tmp_path / "snap"), "snapshot_min_interval_s": 0.2})  # fmt: skip
    harness = subprocess.Popen(
        [sys.executable, "-m", "oasis_ops.demo.harness", "--db", str(db), "--ollama", emulator.url, "--model", MODEL,
         "--max-concurrency", "2", "--request-timeout-s", "1.5", "--max-retries", "0", "--evict-threshold", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ctx = ActionContext.from_settings(settings, db=str(db), requested_by="ui")
    ctx.serve_pid = emulator.pid
    try:
        source = wait_until(lambda: open_source(db, settings), 30, interval=0.2, what="the harness's trial table")
        t0 = datetime.now(UTC)
        wait_until(lambda: source.refresh() and source.completed_since(t0) > 0, 30, interval=0.3, what="ok trials")
        old_runner = find_runner_pid(emulator.pid, blob_of(emulator.url, MODEL))

        set_fault(emulator.url, "stopping_deadlock", True, count=1000)
        wait_until(lambda: stopping(emulator.url), 30, interval=0.2, what="the harness's evict -> Stopping")
        set_fault(emulator.url, "stopping_deadlock", False)  # the wedged requests stay wedged
        time.sleep(3.0)  # let the harness's writer flush what finished before the stall
        stalled = datetime.now(UTC)
        time.sleep(2.5)
        source.refresh()
        assert source.completed_since(stalled) == 0, "trials must have stopped completing"

        click = datetime.now(UTC)
        result = recover(ctx, MODEL, grace_s=1.0)
        assert result.outcome == "done", result.message
        assert [s["action"] for s in result.detail["steps"]] == ["evict", "hard_kill"]
        assert result.detail["steps"][1]["detail"]["plan"]["pid"] == old_runner
        wait_until(lambda: source.refresh() and source.completed_since(click) > 0, 30, interval=0.3,
                   what="an ok trial in the trial DB after recover")  # fmt: skip
        source.close()
    finally:
        ctx.close()
        harness.send_signal(signal.SIGTERM)
        try:
            harness.wait(timeout=15)
        except subprocess.TimeoutExpired:
            harness.kill()
            harness.wait(timeout=5)
