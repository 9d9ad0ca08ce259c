"""Evict, recover and runner control against the demo world: the Ollama emulator (a real
`ollama serve` stand-in with real runner children) and its `stopping_deadlock` fault, with a
harness-shaped request loop (bench/bench_recovery.py's RequestLoop: timeouts, then keep_alive 0)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_emulator import (
    blob_of,
    emulator_fixture,
    find_runner_pid,
    ps_entry,
    runner_pids,
    running_emulator,
    set_fault,
    wait_until,
)

from oasis_ops.actions import ActionContext, evict, pause, recover, resume, set_concurrency
from oasis_ops.cli import main as cli_main
from oasis_ops.control import ResizableLimiter, RunnerControl
from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.bench_recovery import RequestLoop  # noqa: E402

MODEL = "gemma4:e4b"
emulator = emulator_fixture(latency_ms=100, load_ms=50)


def make_ctx(emu: EmulatorProcess, tmp_path: Path, **flags: object) -> ActionContext:
    settings = load_settings(env={}, flags={"ollama_host": emu.url, "ollama_models": str(emu.home.root / "models"),
                                            "evict_grace_s": 2.0, "control_ack_timeout_s": 3.0, **flags})  # fmt: skip
    ctx = ActionContext.from_settings(settings, db=str(tmp_path / "trials.duckdb"), requested_by="cli")
    ctx.serve_pid = emu.pid  # other engineers' emulators may run on this machine
    return ctx


@pytest.fixture
def ctx(emulator: EmulatorProcess, tmp_path: Path) -> Iterator[ActionContext]:
    context = make_ctx(emulator, tmp_path)
    yield context
    context.close()


def audit_outcomes(ctx: ActionContext) -> list[tuple[str, str, str]]:
    assert ctx.sidecar is not None
    frame = ctx.sidecar.actions_since(datetime.now(UTC) - timedelta(hours=1))
    return list(zip(frame["action"], frame["outcome"], frame["requested_by"], strict=True))


def test_evict_a_healthy_model(emulator: EmulatorProcess, ctx: ActionContext) -> None:
    ctx.client.generate(MODEL, "hi", options={"num_predict": 1}, timeout_s=30)
    assert ps_entry(emulator.url, MODEL) is not None
    result = evict(ctx, MODEL)
    assert (result.outcome, result.exit_code) == ("done", 0), result.message
    assert ps_entry(emulator.url, MODEL) is None
    again = evict(ctx, MODEL)
    assert again.outcome == "done" and "not loaded" in again.message
    assert audit_outcomes(ctx) == [("evict", "done", "cli"), ("evict", "done", "cli")]


def test_deadlock_evict_is_stuck_and_recover_brings_trials_back(emulator: EmulatorProcess, ctx: ActionContext) -> None:
    with RequestLoop(emulator.url, MODEL, workers=2, request_timeout_s=1.5, evict_after=2) as loop:
        wait_until(lambda: loop.first_ok_after(0), 30, what="a first ok trial")
        old_runner = find_runner_pid(emulator.pid, blob_of(emulator.url, MODEL))
        set_fault(emulator.url, "stopping_deadlock", True, count=1000)
        # the harness times out, evicts (keep_alive 0) -> Stopping, and trials stop completing
        wait_until(lambda: loop.evictions, 30, what="the loop's eviction")
        wait_until(lambda: (ps_entry(emulator.url, MODEL) or {}).get("expires_at", "9") < datetime.now(UTC).isoformat()
                   or None, 10, what="Stopping")  # fmt: skip
        set_fault(emulator.url, "stopping_deadlock", False)  # wedged requests stay wedged
        stalled_at = time.monotonic()
        time.sleep(1.0)
        assert loop.first_ok_after(stalled_at) is None, "trials must have stopped completing"

        stuck = evict(ctx, MODEL, grace_s=1.0)
        assert (stuck.outcome, stuck.exit_code) == ("stuck", 3), stuck.message
        assert "still Stopping" in stuck.message and "kill-runner" in stuck.message
        assert stuck.detail["escalation"]["plan"]["pid"] == old_runner

        click = time.monotonic()
        result = recover(ctx, MODEL, grace_s=1.0)
        assert (result.outcome, result.exit_code) == ("done", 0), result.message
        steps = result.detail["steps"]
        assert [s["action"] for s in steps] == ["evict", "hard_kill"] and steps[0]["outcome"] == "stuck"
        new_runner = steps[1]["detail"]["respawn"]["new_runner_pid"]
        assert new_runner and new_runner != old_runner and runner_pids(emulator.pid) == [new_runner]
        first_ok = wait_until(lambda: loop.first_ok_after(click), 20, what="a trial completing after recover")
        assert first_ok - click < 15  # generous: 2 shared cores
    assert audit_outcomes(ctx) == [("evict", "stuck", "cli"), ("recover", "done", "cli")]


def test_runner_control_requested_vs_applied(ctx: ActionContext, tmp_path: Path) -> None:
    assert ctx.control is not None
    # no runner: the request stands, but nothing is pretended
    quick = make_ctx_no_ollama(tmp_path, control_ack_timeout_s=0.5)
    missing = set_concurrency(quick, 2)
    assert (missing.outcome, missing.exit_code) == ("not_acknowledged", 3) and "did not acknowledge" in missing.message
    limiter = ResizableLimiter(4)
    with RunnerControl(ctx.control.dir, limiter=limiter, poll_interval_s=0.1, heartbeat_interval_s=0.2):
        done = set_concurrency(ctx, 3)
        assert done.outcome == "done" and limiter.limit == 3
        assert done.detail["applied_max_concurrency"] == 3 and done.detail["requested_version"] >= 2
        assert pause(ctx).outcome == "done" and limiter.paused
        assert resume(ctx).outcome == "done" and not limiter.paused
    assert set_concurrency(ctx, 0).outcome == "refused"
    assert [a[:2] for a in audit_outcomes(ctx)] == [("concurrency", "not_acknowledged"), ("concurrency", "done"),
                                                    ("pause", "done"), ("resume", "done"), ("concurrency", "refused")]  # fmt: skip


def make_ctx_no_ollama(tmp_path: Path, **flags: object) -> ActionContext:
    settings = load_settings(env={}, flags={"ollama_host": "http://127.0.0.1:9", **flags})
    return ActionContext.from_settings(settings, db=str(tmp_path / "trials.duckdb"))


def test_cli_exit_codes(emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = str(tmp_path / "trials.duckdb")
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", emulator.url)
    monkeypatch.setenv("OASIS_OPS_CONTROL_ACK_TIMEOUT_S", "0.5")
    assert cli_main(["evict", MODEL, "--db", db, "--json"]) == 0
    assert '"outcome": "done"' in capsys.readouterr().out
    assert cli_main(["concurrency", "2", "--db", db]) == 3
    assert "not_acknowledged" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["concurrency", "0", "--db", db])
    assert exc.value.code == 2
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", "http://127.0.0.1:9")
    assert cli_main(["evict", MODEL, "--db", db]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_the_current_serve_is_the_one_listening_on_our_port(tmp_path: Path) -> None:
    """Two `ollama serve` processes on this machine (two emulators): each URL finds its own; a
    port nobody listens on, or a remote host, finds none (never "the only serve")."""
    import socket

    from oasis_ops.actions.context import serve_pid_listening
    from oasis_ops.probes.processes import PsutilProcesses, serve_pid_for

    with running_emulator(tmp_path / "a") as a, running_emulator(tmp_path / "b") as b:
        assert serve_pid_listening(a.url) == a.pid and serve_pid_listening(b.url) == b.pid
        assert serve_pid_for(b.url.replace("127.0.0.1", "localhost"), PsutilProcesses(with_environ=False)()) == b.pid
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free_port = s.getsockname()[1]
        assert serve_pid_listening(f"http://127.0.0.1:{free_port}") is None
        assert serve_pid_listening(f"http://10.1.2.3:{a.url.rsplit(':', 1)[1]}") is None
