"""The watchdog on real processes (a fake `ollama serve` with runner children and decoys, a
loopback Ollama API), a real sidecar and a real control channel with a runner-side thread.
Time is pinned through tick(now)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_kill_real import GEMMA, OTHER, World, pauser, world  # noqa: F401 - fixtures reused

from oasis_ops.cli import main as cli_main
from oasis_ops.control import ControlChannel, ResizableLimiter, RunnerControl
from oasis_ops.probes import ModelProbe, ModelSnapshot, PsutilProcesses
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.watchdog import Watchdog, WatchdogPolicy, read_switch, write_switch


def snapshots(w: World) -> list[ModelSnapshot]:
    probe = ModelProbe(OllamaClient(w.server.url), PsutilProcesses(only_ollama=False), models_dir=w.tmp / "models",
                       serve_pid=w.serve_pid)  # fmt: skip
    return probe.snapshot()


def make_watchdog(w: World, completed: int | None = 0, **policy: Any) -> Watchdog:
    ctx = w.ctx()
    ctx.control = ControlChannel(w.tmp / "trials.control")
    settings = w.settings.replace(watchdog=True)
    ctx.settings = settings
    values = {"stopping_s": 30.0, **policy}
    return Watchdog(ctx, completed_since=(lambda since: completed) if completed is not None else None,
                    policy=WatchdogPolicy.from_settings(settings, **values))  # fmt: skip


def rows(w: World) -> list[dict[str, Any]]:
    return w.audit_rows()


def test_kills_a_stuck_runner_once_and_never_again(world: World) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    other = world.tree.pid_of("--port", "44067")
    dog = make_watchdog(world)
    snaps = snapshots(world)  # gemma Stopping for 40 s, other loaded
    now = datetime.now(UTC)
    [result] = dog.tick(now, models=snaps)
    assert (result.action, result.outcome, result.requested_by) == ("hard_kill", "done", "watchdog")
    assert result.detail["trigger"]["evidence"].startswith("no ok trial started since")
    assert not world.alive(gemma) and world.alive(other) and world.alive(world.serve_pid)
    # the same stuck state (same snapshots) is never acted on again, not even by a restarted watchdog
    assert dog.tick(now + timedelta(seconds=5), models=snaps) == []
    dog.close()
    restarted = make_watchdog(world)
    assert restarted.tick(now + timedelta(seconds=10), models=snaps) == []
    restarted.close()
    [row] = rows(world)
    assert (row["action"], row["outcome"], row["requested_by"]) == ("hard_kill", "done", "watchdog")
    assert json.loads(row["detail"])["trigger"]["key"].startswith(f"{GEMMA}|{gemma}|")


def test_leaves_alone_what_is_not_stuck(world: World) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    snaps = snapshots(world)
    now = datetime.now(UTC)
    young = make_watchdog(world, stopping_s=120.0)  # Stopping for 40 s < 120 s
    assert young.tick(now, models=snaps) == []
    young.close()
    completing = make_watchdog(world, completed=12)  # trials still complete: a busy, healthy model
    assert completing.tick(now, models=snaps) == [] and any("12 trials completed" in n for n in completing.notes)
    completing.close()
    one = make_watchdog(world, completed=1)  # one is enough to say it is not stuck
    assert one.tick(now, models=snaps) == [] and f"{GEMMA} is Stopping but 1 trials completed since: left alone" in one.notes
    one.close()
    world.server.mode = "500"  # the watchdog probing for itself, Ollama failing: a note, nothing done
    probing = make_watchdog(world)
    assert probing.tick(now) == [] and any(n.startswith("models: ") for n in probing.notes), probing.notes
    probing.close()
    world.server.mode = "ok"
    no_trials = make_watchdog(world, completed=None)  # no trial DB: runner CPU decides (idle here)
    assert no_trials.tick(now, models=snaps) == [] and any("not judged stuck" in n for n in no_trials.notes)
    no_trials.close()
    off = make_watchdog(world)
    off.ctx.settings = off.ctx.settings.replace(watchdog=False)
    assert off.tick(now, models=snaps) == [] and "off" in off.notes[0]
    off.close()
    assert world.alive(gemma) and rows(world) == []


def test_dry_run_audits_only_and_rate_limit(world: World) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    dog = make_watchdog(world)
    assert dog.ctx.control is not None
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=True)
    assert read_switch(dog.ctx.control.dir, dog.ctx.settings).dry_run
    snaps = snapshots(world)
    now = datetime.now(UTC)
    [dry] = dog.tick(now, models=snaps)
    assert dry.outcome == "dry_run" and world.alive(gemma)
    assert dog.tick(now, models=snaps) == []  # not repeated either
    # a second watchdog on the same control directory stands by while the first holds the lock
    second = make_watchdog(world)
    assert second.tick(now, models=snaps) == [] and any("another watchdog" in n for n in second.notes)
    second.close()
    dog.close()

    # for real now: the first stuck state is killed, a new one within the interval is refused
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=False)
    live = make_watchdog(world, kill_interval_s=600.0)
    live.last_kill[GEMMA] = now - timedelta(minutes=3)  # e.g. killed 3 min ago by this watchdog
    [limited] = live.tick(now, models=snaps)
    assert limited.outcome == "refused" and "at most one kill per 10 min" in limited.message
    assert world.alive(gemma)
    live.close()
    assert [(r["action"], r["target"], r["outcome"], r["requested_by"]) for r in rows(world)] == [
        ("watchdog", "on", "done", "ui"), ("hard_kill", GEMMA, "dry_run", "watchdog"),
        ("watchdog", "on", "done", "ui"), ("hard_kill", GEMMA, "refused", "watchdog"),
    ]  # fmt: skip


@pytest.fixture
def runner_side(world: World) -> Iterator[ResizableLimiter]:  # noqa: F811
    limiter = ResizableLimiter(4)
    with RunnerControl(world.tmp / "trials.control", limiter=limiter, poll_interval_s=0.1, heartbeat_interval_s=0.2):
        yield limiter


def test_memory_guard_lowers_then_restores_concurrency(world: World, runner_side: ResizableLimiter) -> None:  # noqa: F811
    dog = make_watchdog(world, restore_s=300.0)
    t0 = datetime.now(UTC)
    calm = {"pressure": 10.0, "mem_available_bytes": 20e9}
    squeezed = {"pressure": 75.0, "mem_available_bytes": 20e9}
    assert dog.tick(t0, models=[], host=calm) == []
    [lowered] = dog.tick(t0 + timedelta(seconds=1), models=[], host=squeezed)
    assert (lowered.action, lowered.outcome) == ("concurrency", "done") and runner_side.limit == 1
    assert "pressure 75 >= 60" in lowered.detail["trigger"]
    assert dog.tick(t0 + timedelta(seconds=2), models=[], host={"pressure": 5.0, "mem_available_bytes": 1e9}) == []  # low free: still bad
    assert dog.tick(t0 + timedelta(seconds=3), models=[], host=calm) == []  # recovery starts
    assert dog.tick(t0 + timedelta(seconds=3 + 299), models=[], host=calm) == [] and runner_side.limit == 1
    [restored] = dog.tick(t0 + timedelta(seconds=3 + 300), models=[], host=calm)
    assert (restored.action, restored.outcome) == ("concurrency", "done") and runner_side.limit == 4
    assert dog.tick(t0 + timedelta(seconds=400), models=[], host=calm) == []
    dog.close()
    assert [(r["action"], r["requested_by"]) for r in rows(world)] == [("concurrency", "watchdog")] * 2


def test_memory_guard_pause_mode(world: World, runner_side: ResizableLimiter) -> None:  # noqa: F811
    dog = make_watchdog(world, guard_action="pause", restore_s=60.0)
    t0 = datetime.now(UTC)
    [paused] = dog.tick(t0, models=[], host={"pressure": 90.0})
    assert paused.action == "pause" and paused.outcome == "done" and runner_side.paused
    [resumed] = dog.tick(t0 + timedelta(seconds=1), models=[], host={"pressure": 1.0}) or [None]
    assert resumed is None  # not yet
    [resumed] = dog.tick(t0 + timedelta(seconds=62), models=[], host={"pressure": 1.0})
    assert resumed.action == "resume" and not runner_side.paused
    dog.close()


def test_watchdog_cli_switch_and_once(world: World, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = str(world.tmp / "trials.duckdb")
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", world.server.url)
    monkeypatch.setenv("OLLAMA_MODELS", str(world.tmp / "models"))
    monkeypatch.setattr("oasis_ops.actions.context.serve_pid_listening", lambda url: world.serve_pid)
    gemma = world.tree.pid_of("--port", "54107")
    assert cli_main(["watchdog", "--db", db, "--once"]) == 0
    assert "watchdog off" in capsys.readouterr().out and world.alive(gemma)
    # on, dry run: one tick audits what it would do (gemma has been Stopping 40 s > 30 s; no trial DB
    # and an idle runner: the CPU rule says "not stuck", so nothing at all)
    assert cli_main(["watchdog", "--db", db, "--on", "--dry-run", "--once"]) == 0
    out = capsys.readouterr().out
    assert "watchdog switched on (dry run)" in out and "not judged stuck" in out and world.alive(gemma)
    assert cli_main(["watchdog", "--db", db, "--off"]) == 0
    assert not json.loads(Path(world.tmp / "trials.control" / "watchdog.json").read_text())["enabled"]
    with pytest.raises(SystemExit) as exc:
        cli_main(["watchdog", "--on", "--off"])
    assert exc.value.code == 2


def test_a_signalled_kill_counts_for_the_rate_limit_even_when_it_failed(  # noqa: F811
    world: World, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import dataclasses

    from oasis_ops.actions import kill as kill_module

    gemma = world.tree.pid_of("--port", "54107")
    decoy = world.tree.pid_of("-c", "import time; time.sleep(600)")
    monkeypatch.setattr(kill_module, "wait_dead", lambda *args: None)  # "still alive after the timeout"
    dog = make_watchdog(world, kill_interval_s=600.0)
    snaps = snapshots(world)
    now = datetime.now(UTC)
    [failed] = dog.tick(now, models=snaps)
    assert failed.outcome == "failed" and failed.detail["signalled_at"] and "still alive" in failed.message
    assert dog.last_kill[GEMMA] == now

    def another_stuck_state(create_offset: float) -> list[ModelSnapshot]:
        # a different key (pid, create_time) for the same model; if the rate limit did not hold,
        # hard_kill would refuse this decoy anyway, with another message
        return [dataclasses.replace(s, runner_pid=decoy, runner_create_time=world.create_time(decoy) + create_offset)
                if s.model == GEMMA else s for s in snaps]  # fmt: skip

    [limited] = dog.tick(now + timedelta(seconds=60), models=another_stuck_state(0.5))
    assert limited.outcome == "refused" and "at most one kill per 10 min" in limited.message
    dog.close()
    # a restarted watchdog rebuilds the last kill from the audit log (the failed row with signalled_at)
    restarted = make_watchdog(world, kill_interval_s=600.0)
    assert restarted.last_kill == {}
    [limited_again] = restarted.tick(now + timedelta(seconds=120), models=another_stuck_state(1.5))
    assert limited_again.outcome == "refused" and "at most one kill per 10 min" in limited_again.message
    restarted.close()
    assert world.alive(decoy) and not world.alive(gemma)
    assert [r["outcome"] for r in rows(world)] == ["failed", "refused", "refused"]


def lock_dog(w: World) -> Watchdog:
    """A watchdog with no control directory: its lock is `<sidecar>.watchdog.lock`."""
    dog = make_watchdog(w)
    dog.ctx.control = None
    return dog


def test_fallback_lock_refuses_a_symlink(world: World, tmp_path: Path) -> None:  # noqa: F811
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = Path(str(world.sidecar.path) + ".watchdog.lock")
    lock.symlink_to(victim)
    dog = lock_dog(world)
    assert dog.tick(datetime.now(UTC), models=[]) == []
    assert any("symlink" in n for n in dog.notes), dog.notes
    assert dog._lock() is False and dog._lock_fd is None
    assert victim.read_text() == "precious\n"
    dog.close()
    lock.unlink()
    fine = lock_dog(world)  # a plain file is created with mode 0600 and held
    fine.tick(datetime.now(UTC), models=[])
    assert fine._lock_fd is not None and (lock.stat().st_mode & 0o777) == 0o600
    assert json.loads(lock.read_text())["pid"] > 0
    fine.close()


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown to another user")
def test_fallback_lock_owned_by_someone_else_is_not_truncated(world: World) -> None:  # noqa: F811
    lock = Path(str(world.sidecar.path) + ".watchdog.lock")
    lock.write_text("someone else's\n")
    os.chmod(lock, 0o600)
    os.chown(lock, 54321, 54321)
    dog = lock_dog(world)
    assert dog.tick(datetime.now(UTC), models=[]) == []
    assert any("owned by uid 54321" in n for n in dog.notes), dog.notes
    assert lock.read_text() == "someone else's\n" and dog._lock_fd is None
    dog.close()


def test_switch_file_in_an_unsafe_control_dir_is_ignored(world: World) -> None:  # noqa: F811
    control = world.tmp / "trials.control"
    control.mkdir(mode=0o700)
    (control / "watchdog.json").write_text(json.dumps({"enabled": True, "dry_run": False}))
    settings = world.settings.replace(watchdog=False)
    assert read_switch(control, settings).enabled  # safe: the file wins
    os.chmod(control, 0o777)  # anyone could have written it
    switch = read_switch(control, settings)
    assert not switch.enabled and switch.source == "settings"
    assert switch.note and "writable by others" in switch.note and "writable by others" in switch.describe()
