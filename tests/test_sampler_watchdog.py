"""The watchdog rides on the sampler's tick: switched on, it ends a Stopping deadlock by itself
(real emulator, real runner process, real SIGKILL), once, audited as requested_by=watchdog."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from helpers_emulator import blob_of, find_runner_pid, running_emulator, set_fault, wait_until
from test_sampler import MODEL, generate, settings_for

from oasis_ops.actions import ActionContext
from oasis_ops.sampler import Sampler
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials.writer import TrialWriter
from oasis_ops.watchdog import write_switch


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sampler_tick_runs_the_watchdog(tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with TrialWriter(db, background=False) as writer:  # the last ok trial is an hour old
        writer.add(trial_id=1, run_id="r", model=MODEL, started_at=long_ago,
                   finished_at=long_ago + timedelta(seconds=4), latency_ms=4000.0, status="ok", error=None)

    with running_emulator(tmp_path) as emu:
        settings = settings_for(emu.url, emu.home.models_dir, db=str(db), watchdog_stopping_s=1.0)
        generate(emu.url)
        stuck_runner = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))

        # The write-up's deadlock: a wedged generation, then a soft evict that waits on it.
        set_fault(emu.url, "stopping_deadlock", True, count=1)

        def wedged() -> None:
            try:
                httpx.post(emu.url + "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}, timeout=120)
            except httpx.HTTPError:
                pass  # ends when the runner is killed

        thread = threading.Thread(target=wedged, daemon=True)
        thread.start()
        time.sleep(0.5)
        httpx.post(emu.url + "/api/generate", json={"model": MODEL, "keep_alive": 0}, timeout=10).raise_for_status()

        sampler = Sampler(tmp_path / "trials.ops.duckdb", settings, flush_interval_s=0.2, log_interval_s=0.0)
        sampler.open()
        try:
            first = sampler.tick()
            assert first.actions == []  # the switch is off by default: nothing happens
            write_switch(ActionContext.from_settings(settings, db=db, requested_by="test"), True, False)

            killed = []
            deadline = time.monotonic() + 40
            while not killed and time.monotonic() < deadline:
                report = sampler.tick()
                killed = [a for a in report.actions if a.action == "hard_kill"]
                time.sleep(0.3)
            assert killed, "the watchdog never acted"
            assert (killed[0].outcome, killed[0].requested_by) == ("done", "watchdog"), killed[0].message
            wait_until(lambda: _gone(stuck_runner), 10, what="the stuck runner to die")
            thread.join(10)

            # Never repeated on the same stuck state.
            for _ in range(3):
                assert [a for a in sampler.tick().actions if a.action == "hard_kill"] == []
        finally:
            sampler.close()

    audit = Sidecar(tmp_path / "trials.ops.duckdb").actions_since(datetime(2000, 1, 1, tzinfo=UTC))
    kills = audit[audit["action"] == "hard_kill"]
    assert list(kills["requested_by"]) == ["watchdog"] and list(kills["outcome"]) == ["done"]
