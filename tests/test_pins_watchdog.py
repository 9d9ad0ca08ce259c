"""Pins for the watchdog's memory guard, its switch and its policy (mutation testing found these
unpinned): exact thresholds at their edges, exact audit rows, the restore clock, what is never
restored, and the switch file's contents. A real control channel with a runner-side thread
(RunnerControl and a ResizableLimiter), a real sidecar; time pinned through tick(now)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from oasis_ops.actions import ActionContext
from oasis_ops.control import ControlChannel, ResizableLimiter, RunnerControl
from oasis_ops.errors import ConfigError
from oasis_ops.probes.host import HostSample
from oasis_ops.settings import load_settings
from oasis_ops.watchdog import Watchdog, WatchdogPolicy, read_switch, switch_path, write_switch

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def host(free: float | None, available: float | None, pressure: float | None) -> HostSample:
    return HostSample(ts=T0, mem_total_bytes=32_000_000_000, mem_free_bytes=None if free is None else int(free),
                      mem_available_bytes=None if available is None else int(available), page_size=16384,
                      pages_free=None, swap_used_bytes=0, swapins=0, swapouts=0, pressure=pressure, source="test")  # fmt: skip
CALM = {"pressure": 10.0, "mem_available_bytes": 20e9}


def settings_for(tmp_path: Path, **flags: Any) -> Any:
    return load_settings(env={}, flags={"db": str(tmp_path / "trials.duckdb"), "ollama_host": "http://127.0.0.1:9",
                                        "watchdog": True, "control_ack_timeout_s": 5.0, **flags})  # fmt: skip


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[ResizableLimiter]:
    limiter = ResizableLimiter(4)
    with RunnerControl(tmp_path / "trials.control", limiter=limiter, poll_interval_s=0.05, heartbeat_interval_s=0.1):
        yield limiter


def guard_dog(tmp_path: Path, **flags: Any) -> Watchdog:
    ctx = ActionContext.from_settings(settings_for(tmp_path, **flags), requested_by="test")
    return Watchdog(ctx, completed_since=lambda since: 0)


def wait_reported_limit(dog: Watchdog, limit: int) -> None:
    """Until the runner side's heartbeat reports `limit` (what the guard reads as "before")."""
    assert dog.ctx.control is not None
    deadline = time.monotonic() + 10
    while (state := dog.ctx.control.runner_state()) is None or state.max_concurrency != limit:
        assert time.monotonic() < deadline, f"the runner never reported max concurrency {limit}"
        time.sleep(0.02)


def audit_rows(dog: Watchdog) -> list[tuple[Any, ...]]:
    assert dog.ctx.sidecar is not None
    frame = dog.ctx.sidecar.actions_since(T0 - timedelta(days=1), max_rows=100)
    out = []
    for row in frame.sort_values("ts").to_dict("records"):
        detail = json.loads(row["detail"])
        out.append((row["action"], row["target"], row["outcome"], row["requested_by"], json.loads(row["params"]),
                    detail["message"], detail.get("trigger")))  # fmt: skip
    return out


# --- thresholds ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ({"pressure": 60.0, "mem_available_bytes": 20e9}, "memory pressure 60 >= 60"),  # reaching it is enough
        ({"pressure": 59.9, "mem_available_bytes": 1_999_999_999.0}, "available memory 2.00 GB < 2 GB"),
        ({"pressure": None, "mem_available_bytes": None, "mem_free_bytes": 1.5e9}, "available memory 1.50 GB < 2 GB"),
        (host(30e9, 0.5e9, 61.5),
         "memory pressure 62 >= 60"),  # pressure is judged first; a HostSample reads as a mapping does
        (host(1e9, None, None),
         "available memory 1.00 GB < 2 GB"),
    ],
)  # fmt: skip
def test_the_guard_acts_at_its_thresholds_with_the_exact_reason(
    tmp_path: Path, limiter: ResizableLimiter, sample: Any, reason: str
) -> None:
    dog = guard_dog(tmp_path)
    [result] = dog.tick(T0, models=[], host=sample)
    assert (result.action, result.target, result.outcome, result.requested_by) == ("concurrency", "runner", "done", "watchdog")
    assert result.detail["trigger"] == reason and result.params == {"max_concurrency": 1} and limiter.limit == 1
    dog.close()


@pytest.mark.parametrize(
    "sample",
    [
        {"pressure": 59.99, "mem_available_bytes": 2e9},  # just under the pressure, exactly the free floor
        {"pressure": None, "mem_available_bytes": 2e9, "mem_free_bytes": 0.1e9},  # available wins over free
        {"pressure": None, "mem_available_bytes": None, "mem_free_bytes": None},  # nothing known: nothing done
        host(0.1e9, 3e9, 0.0),
    ],
)
def test_the_guard_leaves_a_healthy_host_alone(tmp_path: Path, limiter: ResizableLimiter, sample: Any) -> None:
    dog = guard_dog(tmp_path)
    assert dog.tick(T0, models=[], host=sample) == []
    assert dog.guard is None and limiter.limit == 4 and audit_rows(dog) == []
    dog.close()


# --- the episode and the restore clock ----------------------------------------------------------
def test_one_action_per_episode_and_a_fresh_recovery_clock_after_a_relapse(tmp_path: Path, limiter: ResizableLimiter) -> None:
    dog = guard_dog(tmp_path, watchdog_restore_min=5.0)
    [lowered] = dog.tick(T0, models=[], host={"pressure": 80.0})
    assert lowered.message.startswith("max concurrency is now 1") and limiter.limit == 1
    assert dog.tick(T0 + timedelta(seconds=1), models=[], host={"pressure": 95.0}) == []  # same episode
    assert dog.tick(T0 + timedelta(seconds=10), models=[], host=CALM) == []  # recovery from 10 s
    assert dog.recovered_since == T0 + timedelta(seconds=10)
    assert dog.tick(T0 + timedelta(seconds=200), models=[], host={"pressure": 70.0}) == []  # relapse: no new action
    assert dog.recovered_since is None and dog.guard is not None
    assert dog.tick(T0 + timedelta(seconds=210), models=[], host=CALM) == []  # recovery again, from 210 s
    assert dog.tick(T0 + timedelta(seconds=309), models=[], host=CALM) == []  # 5 min after 10 s: not enough now
    assert dog.tick(T0 + timedelta(seconds=509), models=[], host=CALM) == [] and limiter.limit == 1  # 299 s
    [restored] = dog.tick(T0 + timedelta(seconds=510), models=[], host=CALM)  # exactly 300 s
    assert (restored.action, restored.outcome, restored.params) == ("concurrency", "done", {"max_concurrency": 4})
    assert restored.detail["trigger"] == "memory recovered for 5 min (guard since 12:00:00 UTC: memory pressure 80 >= 60)"
    assert limiter.limit == 4 and dog.guard is None and dog.recovered_since is None
    assert dog.tick(T0 + timedelta(seconds=600), models=[], host=CALM) == []
    # a new episode acts again
    [again] = dog.tick(T0 + timedelta(seconds=700), models=[], host={"pressure": 60.0})
    assert again.outcome == "done" and limiter.limit == 1
    dog.close()


def test_what_was_low_before_the_guard_is_not_raised_after_it(tmp_path: Path, limiter: ResizableLimiter) -> None:
    limiter.set_limit(1)  # the user had already lowered it to 1
    dog = guard_dog(tmp_path, watchdog_restore_min=0.0)
    wait_reported_limit(dog, 1)
    [lowered] = dog.tick(T0, models=[], host={"pressure": 99.0})
    assert lowered.outcome == "done" and dog.guard is not None and dog.guard.previous_concurrency == 1
    assert dog.tick(T0 + timedelta(seconds=1), models=[], host=CALM) == []  # nothing to restore
    assert dog.guard is None and limiter.limit == 1
    dog.close()


def test_a_limit_of_two_before_the_guard_is_restored(tmp_path: Path, limiter: ResizableLimiter) -> None:
    limiter.set_limit(2)
    dog = guard_dog(tmp_path, watchdog_restore_min=0.0)
    wait_reported_limit(dog, 2)
    dog.tick(T0, models=[], host={"pressure": 99.0})
    assert limiter.limit == 1
    [restored] = dog.tick(T0 + timedelta(seconds=1), models=[], host=CALM)
    assert restored.params == {"max_concurrency": 2} and limiter.limit == 2
    dog.close()


def test_pause_mode_resumes_only_what_it_paused(tmp_path: Path, limiter: ResizableLimiter) -> None:
    dog = guard_dog(tmp_path, watchdog_guard_action="pause", watchdog_restore_min=1.0)
    [paused] = dog.tick(T0, models=[], host={"pressure": 70.0})
    assert (paused.action, paused.params, paused.detail["trigger"]) == ("pause", {"paused": True}, "memory pressure 70 >= 60")
    assert dog.guard is not None and dog.guard.previous_paused is False
    assert dog.tick(T0 + timedelta(seconds=1), models=[], host=CALM) == []
    assert dog.tick(T0 + timedelta(seconds=60), models=[], host=CALM) == []  # 59 s of recovery
    [resumed] = dog.tick(T0 + timedelta(seconds=61), models=[], host=CALM)
    assert (resumed.action, resumed.outcome, resumed.params) == ("resume", "done", {"paused": False})
    assert resumed.detail["trigger"].startswith("memory recovered for 1 min (guard since 12:00:00 UTC:")
    dog.close()
    # paused by the user before the guard: the guard's pause is a no-op and its end resumes nothing
    assert dog.ctx.control is not None
    dog.ctx.control.request(paused=True, requested_by="user")
    dog.ctx.control.wait_applied(dog.ctx.control.requested()["version"], timeout_s=5.0)  # type: ignore[index]
    second = guard_dog(tmp_path, watchdog_guard_action="pause", watchdog_restore_min=0.0)
    [paused_again] = second.tick(T0 + timedelta(seconds=100), models=[], host={"pressure": 70.0})
    assert paused_again.action == "pause" and second.guard is not None and second.guard.previous_paused is True
    assert second.tick(T0 + timedelta(seconds=101), models=[], host=CALM) == []
    second.close()


def test_dry_run_rows_say_what_would_be_done(tmp_path: Path, limiter: ResizableLimiter) -> None:
    dog = guard_dog(tmp_path, watchdog_dry_run=True, watchdog_restore_min=0.5)
    [dry] = dog.tick(T0, models=[], host={"pressure": 65.0})
    assert (dry.action, dry.target, dry.outcome, dry.message) == ("concurrency", "runner", "dry_run", "dry run: would lower max concurrency to 1")
    assert dry.params == {"max_concurrency": 1} and dry.detail == {"trigger": "memory pressure 65 >= 60"}
    assert limiter.limit == 4  # nothing sent
    assert dog.tick(T0 + timedelta(seconds=1), models=[], host=CALM) == []
    [undo] = dog.tick(T0 + timedelta(seconds=31), models=[], host=CALM)
    assert (undo.action, undo.outcome, undo.message, undo.params) == (
        "concurrency", "dry_run", "dry run: would restore max concurrency 4", {"max_concurrency": 4})  # fmt: skip
    assert undo.detail == {"trigger": "memory recovered for 0.5 min (guard since 12:00:00 UTC: memory pressure 65 >= 60)"}
    assert (dry.duration_ms, undo.duration_ms, dry.requested_by) == (0.0, 0.0, "watchdog")
    dog.close()
    pausing = guard_dog(tmp_path, watchdog_dry_run=True, watchdog_guard_action="pause", watchdog_restore_min=0.0)
    [dry_pause] = pausing.tick(T0 + timedelta(seconds=100), models=[], host={"mem_available_bytes": 1e9})
    assert (dry_pause.action, dry_pause.message, dry_pause.params) == ("pause", "dry run: would pause the runner", {"paused": True})
    [dry_resume] = pausing.tick(T0 + timedelta(seconds=101), models=[], host=CALM)
    assert (dry_resume.action, dry_resume.message, dry_resume.params) == ("resume", "dry run: would resume the runner", {"paused": False})
    assert dry_resume.detail == {"trigger": "memory recovered for 0 min (guard since 12:01:40 UTC: available memory 1.00 GB < 2 GB)"}
    assert (dry_resume.duration_ms, dry_resume.requested_by, dry_resume.target) == (0.0, "watchdog", "runner")
    pausing.close()
    assert [(r[0], r[2], r[3]) for r in audit_rows(dog)] == [
        ("concurrency", "dry_run", "watchdog"), ("concurrency", "dry_run", "watchdog"),
        ("pause", "dry_run", "watchdog"), ("resume", "dry_run", "watchdog"),
    ]  # fmt: skip
    assert audit_rows(dog)[2][6] == "available memory 1.00 GB < 2 GB"


def test_without_a_runner_the_guard_remembers_what_was_requested(tmp_path: Path) -> None:
    """No runner-side helper (no state.json): what control.json asked for is what the guard
    restores; values that are not what they claim to be are not restored."""
    dog = guard_dog(tmp_path, watchdog_restore_min=0.0, control_ack_timeout_s=0.2)
    assert dog.ctx.control is not None
    dog.ctx.control.request(max_concurrency=3, paused=False, requested_by="user")
    [lowered] = dog.tick(T0, models=[], host={"pressure": 90.0})
    assert lowered.outcome == "not_acknowledged" and dog.guard is not None
    assert (dog.guard.previous_concurrency, dog.guard.previous_paused) == (3, False)
    [restored] = dog.tick(T0 + timedelta(seconds=1), models=[], host=CALM)
    assert restored.params == {"max_concurrency": 3}
    dog.close()
    (dog.ctx.control.dir / "control.json").write_text(json.dumps({"version": 9, "max_concurrency": "lots", "paused": "yes"}))
    odd = guard_dog(tmp_path, watchdog_restore_min=0.0, control_ack_timeout_s=0.2)
    odd.tick(T0 + timedelta(seconds=5), models=[], host={"pressure": 90.0})
    assert odd.guard is not None and (odd.guard.previous_concurrency, odd.guard.previous_paused) == (None, None)
    assert odd.tick(T0 + timedelta(seconds=6), models=[], host=CALM) == []  # nothing known to restore
    odd.close()


def test_no_control_channel_means_no_guard(tmp_path: Path) -> None:
    dog = guard_dog(tmp_path)
    dog.ctx.control = None
    assert dog._memory_guard(T0, {"pressure": 100.0}, dry_run=False) == [] and dog.guard is None


# --- the policy ---------------------------------------------------------------------------------
def test_policy_from_settings_in_base_units_and_back() -> None:
    settings = load_settings(env={}, flags={"watchdog_stopping_s": 45.0, "watchdog_min_free_gb": 3.5, "watchdog_max_pressure": 70.0,
                                            "watchdog_guard_action": "pause", "watchdog_restore_min": 2.5,
                                            "watchdog_kill_interval_min": 15.0, "watchdog_guard_on_forecast": True})  # fmt: skip
    policy = WatchdogPolicy.from_settings(settings)
    assert (policy.stopping_s, policy.min_free_bytes, policy.max_pressure, policy.guard_action, policy.restore_s,
            policy.kill_interval_s) == (45.0, 3.5e9, 70.0, "pause", 150.0, 900.0)  # fmt: skip
    assert policy.as_dict() == {"stopping_s": 45.0, "min_free_gb": 3.5, "max_pressure": 70.0, "guard_action": "pause",
                                "restore_min": 2.5, "kill_interval_min": 15.0, "guard_on_forecast": True}  # fmt: skip
    assert WatchdogPolicy.from_settings(load_settings(env={})).on_forecast is False  # off unless asked
    assert WatchdogPolicy.from_settings(settings, stopping_s=5.0, restore_s=7.0).as_dict()["stopping_s"] == 5.0
    with pytest.raises(ConfigError, match="watchdog_guard_action from override: 'kill' is not one of concurrency, pause"):
        settings.replace(watchdog_guard_action="kill")


# --- the switch ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("enabled", "dry_run", "target", "message"),
    [(True, False, "on", "watchdog switched on"), (True, True, "on", "watchdog switched on (dry run)"),
     (False, False, "off", "watchdog switched off"), (False, True, "off", "watchdog switched off")],
)  # fmt: skip
def test_write_switch_persists_and_audits(tmp_path: Path, enabled: bool, dry_run: bool, target: str, message: str) -> None:
    ctx = ActionContext.from_settings(settings_for(tmp_path, watchdog=not enabled), requested_by="ui")
    before = datetime.now(UTC)
    result = write_switch(ctx, enabled=enabled, dry_run=dry_run)
    assert (result.action, result.target, result.outcome, result.message, result.requested_by) == ("watchdog", target, "done", message, "ui")
    assert result.params == {"enabled": enabled, "dry_run": dry_run} and result.audited and result.duration_ms == 0.0
    assert ctx.control is not None
    path = switch_path(ctx.control.dir)
    assert result.detail == {"switch_file": str(path)} and path == tmp_path / "trials.control" / "watchdog.json"
    data = json.loads(path.read_text())
    assert (data["enabled"], data["dry_run"], data["updated_by"]) == (enabled, dry_run, "ui")
    assert before <= datetime.fromisoformat(data["updated_at"]) <= datetime.now(UTC)
    assert (os.stat(path).st_mode & 0o777) == 0o600 and (os.stat(ctx.control.dir).st_mode & 0o777) == 0o700
    switch = read_switch(ctx.control.dir, ctx.settings)
    assert (switch.enabled, switch.dry_run, switch.source, switch.updated_by) == (enabled, dry_run, "switch file", "ui")
    assert switch.updated_at == datetime.fromisoformat(data["updated_at"]) and switch.note is None
    [row] = [r for r in ctx.sidecar.actions_since(before - timedelta(seconds=1), max_rows=10).to_dict("records")]  # type: ignore[union-attr]
    assert (row["action"], row["target"], row["outcome"], row["requested_by"]) == ("watchdog", target, "done", "ui")


def test_write_switch_without_a_control_dir_or_with_a_broken_one(tmp_path: Path) -> None:
    ctx = ActionContext.from_settings(settings_for(tmp_path), requested_by="ui")
    ctx.control = None
    refused = write_switch(ctx, enabled=True, dry_run=False)
    assert (refused.action, refused.target, refused.outcome) == ("watchdog", "on", "refused")
    assert refused.message == "no control directory to keep the switch in: pass --db" and refused.audited
    assert refused.params == {"enabled": True, "dry_run": False}
    (tmp_path / "blocked").write_text("a file where the directory should be")
    ctx.control = ControlChannel(tmp_path / "blocked")
    failed = write_switch(ctx, enabled=False, dry_run=True)
    assert (failed.action, failed.target, failed.outcome) == ("watchdog", "off", "failed") and failed.audited
    assert str(tmp_path / "blocked") in failed.message and failed.params == {"enabled": False, "dry_run": True}
    for result in (refused, failed):
        assert (result.duration_ms, result.requested_by, result.detail) == (0.0, "ui", {})
    # the switch file's place taken by a directory: the OS's own words
    (tmp_path / "ok.control" / "watchdog.json").mkdir(parents=True)
    os.chmod(tmp_path / "ok.control", 0o700)
    ctx.control = ControlChannel(tmp_path / "ok.control")
    clash = write_switch(ctx, enabled=True, dry_run=False)
    assert clash.outcome == "failed" and "Is a directory" in clash.message and clash.duration_ms == 0.0 and clash.requested_by == "ui"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"enabled": True}, (True, False, "switch file", None)),  # dry_run defaults to off
        ({"enabled": False, "dry_run": True, "updated_by": 5}, (False, True, "switch file", None)),
        ({"enabled": "yes", "dry_run": True}, (False, True, "settings", None)),  # not a bool: the settings decide
        ({"dry_run": False}, (False, True, "settings", None)),
        ({"enabled": True, "updated_by": "cli"}, (True, False, "switch file", "cli")),
    ],
)
def test_read_switch_trusts_only_a_well_formed_file(tmp_path: Path, content: dict[str, Any], expected: tuple[Any, ...]) -> None:
    control = tmp_path / "trials.control"
    control.mkdir(mode=0o700)
    (control / "watchdog.json").write_text(json.dumps(content))
    settings = settings_for(tmp_path, watchdog=False, watchdog_dry_run=True)
    switch = read_switch(control, settings)
    assert (switch.enabled, switch.dry_run, switch.source, switch.updated_by) == expected
    assert read_switch(None, settings).source == "settings"


def test_an_untrusted_switch_file_falls_back_to_the_settings_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    control = tmp_path / "trials.control"
    control.mkdir()
    os.chmod(control, 0o777)
    (control / "watchdog.json").write_text(json.dumps({"enabled": False, "dry_run": False}))
    with caplog.at_level("WARNING", logger="oasis_ops.watchdog"):
        switch = read_switch(control, settings_for(tmp_path, watchdog=True, watchdog_dry_run=True))
    assert (switch.enabled, switch.dry_run, switch.source) == (True, True, "settings")
    assert switch.note is not None and switch.note.startswith("switch file ignored: ") and "writable by others" in switch.note
    [record] = [r for r in caplog.records if r.name == "oasis_ops.watchdog"]
    assert record.getMessage() == "ignoring the watchdog switch file: " + switch.note.removeprefix("switch file ignored: ")


def test_each_action_is_logged_in_one_line(tmp_path: Path, limiter: ResizableLimiter, caplog: pytest.LogCaptureFixture) -> None:
    dog = guard_dog(tmp_path)
    dog.host_probe = lambda: pytest.fail("the host given to tick() is used, not the probe")  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="oasis_ops.watchdog"):
        [lowered] = dog.tick(T0, models=[], host={"pressure": 75.0})
    [record] = [r for r in caplog.records if r.name == "oasis_ops.watchdog"]
    assert record.getMessage() == f"watchdog: concurrency runner: done ({lowered.message})"
    dog.close()


def test_describe_says_the_state_and_where_it_came_from(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, watchdog=True, watchdog_dry_run=True)
    assert read_switch(None, settings).describe() == "watchdog on (dry run: only logs) (from the settings)"
    assert read_switch(None, settings.replace(watchdog_dry_run=False)).describe() == "watchdog on (from the settings)"
    assert read_switch(None, settings.replace(watchdog=False)).describe() == "watchdog off (from the settings)"


# --- (a) the stuck-runner rule at its edges (real processes: test_kill_real's world) -------------
from test_kill_real import GEMMA, World, pauser, world  # noqa: E402, F401 - fixtures reused
from test_watchdog import make_watchdog, snapshots  # noqa: E402


def _gemma(snaps: list[Any]) -> Any:
    [snap] = [s for s in snaps if s.model == GEMMA]
    return snap


def test_stuck_rule_acts_exactly_at_stopping_s_with_its_evidence(world: World) -> None:  # noqa: F811
    dog = make_watchdog(world, stopping_s=30.0)
    assert dog.ctx.control is not None
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=True)
    snaps = snapshots(world)
    since = _gemma(snaps).status.stopping_since
    assert dog.tick(since + timedelta(seconds=30) - timedelta(microseconds=1), models=snaps) == []
    assert dog.handled == {}
    [dry] = dog.tick(since + timedelta(seconds=30), models=snaps)
    assert (dry.action, dry.target, dry.outcome, dry.requested_by) == ("hard_kill", GEMMA, "dry_run", "watchdog")
    trigger = dry.detail["trigger"]
    assert trigger["key"] == Watchdog.stuck_key(_gemma(snaps), since)
    assert (trigger["stopping_for_s"], trigger["policy"], trigger["stopping_s"]) == (30.0, "stopping", 30.0)
    assert trigger["evidence"] == f"no ok trial started since {since:%H:%M:%S} UTC"
    assert dog.handled == {trigger["key"]: "dry_run"}
    assert dog.tick(since + timedelta(seconds=31), models=snaps) == []  # a dry run is not repeated
    # switched to act for real, the same stuck state is acted on (the dry run does not count)
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=False)
    [done] = dog.tick(since + timedelta(seconds=32), models=snaps)
    assert done.outcome == "done" and not world.alive(_gemma(snaps).runner_pid)
    assert dog.last_kill == {GEMMA: since + timedelta(seconds=32)}
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=True)
    assert dog.tick(since + timedelta(seconds=33), models=snaps) == []  # acted on: never again, dry or not
    dog.close()


def test_stuck_rule_keys_and_notes(world: World) -> None:  # noqa: F811
    import dataclasses

    snaps = snapshots(world)
    gemma = _gemma(snaps)
    since = gemma.status.stopping_since
    key = Watchdog.stuck_key(gemma, since)
    assert key == f"{GEMMA}|{gemma.runner_pid}|{gemma.runner_create_time:.2f}|{since.isoformat()}"
    unmatched = dataclasses.replace(gemma, runner_pid=None, runner_create_time=None)
    assert Watchdog.stuck_key(unmatched, None) == f"{GEMMA}|None|-|-"
    dog = make_watchdog(world, stopping_s=30.0)
    assert dog.tick(since + timedelta(seconds=45), models=[unmatched]) == []
    assert dog.notes == [f"{GEMMA} Stopping for 45 s but no runner process is matched"]
    dog.close()


def test_without_trials_the_runner_cpu_decides_at_the_bar(world: World) -> None:  # noqa: F811
    import dataclasses

    from oasis_ops.errors import DataError

    snaps = snapshots(world)
    gemma = _gemma(snaps)
    since = gemma.status.stopping_since

    def broken(_since: datetime) -> int:
        raise DataError("trials.duckdb is locked")

    dog = make_watchdog(world, stopping_s=30.0, busy_cpu_percent=50.0)
    dog.completed_since = broken
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=True)
    idle = dataclasses.replace(gemma, runner_cpu_percent=49.9)
    assert dog.tick(since + timedelta(seconds=40), models=[idle]) == []
    assert dog.notes == ["trials: trials.duckdb is locked; judging by runner CPU",
                         f"{GEMMA} is Stopping, runner CPU 49.9%: not judged stuck"]  # fmt: skip
    unknown = dataclasses.replace(gemma, runner_cpu_percent=None)
    assert dog.tick(since + timedelta(seconds=41), models=[unknown]) == []
    assert dog.notes[-1] == f"{GEMMA} is Stopping, runner CPU unknown%: not judged stuck"
    busy = dataclasses.replace(gemma, runner_cpu_percent=50.0)
    [dry] = dog.tick(since + timedelta(seconds=42), models=[busy])
    assert dry.outcome == "dry_run" and dry.detail["trigger"]["evidence"] == "no trial DB; runner CPU 50% while Stopping"
    dog.close()


def test_stuck_rule_edges_identity_and_memory(world: World) -> None:  # noqa: F811
    import dataclasses

    snaps = snapshots(world)
    gemma = _gemma(snaps)
    since = gemma.status.stopping_since
    dog = make_watchdog(world, stopping_s=30.0, kill_interval_s=600.0)
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=True)
    # loaded (Ollama's word) with a stale stopping_since: not a Stopping model
    loaded = dataclasses.replace(gemma, status=dataclasses.replace(gemma.status, state="loaded"))
    assert dog.tick(since + timedelta(seconds=300), models=[loaded]) == [] and dog.handled == {}
    # a pid without its create time is no identity: not acted on
    half = dataclasses.replace(gemma, runner_create_time=None)
    assert dog.tick(since + timedelta(seconds=45), models=[half]) == []
    assert dog.notes == [f"{GEMMA} Stopping for 45 s but no runner process is matched"]
    [dry] = dog.tick(since + timedelta(seconds=30.16), models=snaps)  # the trigger keeps one decimal
    assert dry.detail["trigger"]["stopping_for_s"] == 30.2
    # a kill exactly kill_interval_s ago no longer holds the next one back
    write_switch(dog.ctx.as_requester("ui"), enabled=True, dry_run=False)
    dog.last_kill[GEMMA] = since + timedelta(seconds=40) - timedelta(seconds=600)
    # the identity the probe saw is pinned: a create time that is not the process's is refused as reused
    stale = [dataclasses.replace(s, runner_create_time=s.runner_create_time - 42.0) if s.model == GEMMA else s for s in snaps]
    [reused] = dog.tick(since + timedelta(seconds=40), models=stale)
    assert reused.outcome == "refused" and "was reused" in reused.message and world.alive(gemma.runner_pid)
    key = Watchdog.stuck_key(stale[[s.model for s in stale].index(GEMMA)], since)
    assert dog.handled[key] == "refused"
    dog.close()
    # a restarted watchdog finds the state acted on in the audit log and remembers it as done
    killer = make_watchdog(world, stopping_s=30.0)
    [done] = killer.tick(since + timedelta(seconds=50), models=snaps)
    assert done.outcome == "done"
    killer.close()  # releases the lock for the next one
    again = make_watchdog(world, stopping_s=30.0)
    assert again.tick(since + timedelta(seconds=60), models=snaps) == []
    assert again.handled == {Watchdog.stuck_key(gemma, since): "done"}
    again.close()


def test_a_refused_kill_says_when_and_why(world: World) -> None:  # noqa: F811
    snaps = snapshots(world)
    gemma = _gemma(snaps)
    since = gemma.status.stopping_since
    dog = make_watchdog(world, stopping_s=30.0, kill_interval_s=900.0)
    killed_at = since.replace(microsecond=0) - timedelta(minutes=5)
    dog.last_kill[GEMMA] = killed_at
    [refused] = dog.tick(since + timedelta(seconds=40), models=snaps)
    assert refused.message == (f"not killing {GEMMA}'s runner pid {gemma.runner_pid}: a runner of it was killed at "
                               f"{killed_at:%H:%M:%S} UTC; at most one kill per 15 min")  # fmt: skip
    assert (refused.outcome, refused.params, refused.requested_by) == ("refused", {"pid": gemma.runner_pid}, "watchdog")
    assert refused.duration_ms == 0.0 and dog.handled == {refused.detail["trigger"]["key"]: "refused"}
    assert refused.detail["trigger"]["evidence"].startswith("no ok trial started since") and refused.audited
    assert dog.tick(since + timedelta(seconds=41), models=snaps) == []  # remembered as refused
    assert world.alive(gemma.runner_pid)
    dog.close()


# --- the lock, the tick's bookkeeping, the headless helpers ---------------------------------------
def test_lock_file_rules(tmp_path: Path) -> None:
    import fcntl
    import stat as stat_module

    from oasis_ops.watchdog import open_lock_file

    notes: list[str] = []
    fresh = tmp_path / "fresh.lock"
    fd = open_lock_file(fresh, notes)
    assert fd is not None and notes == [] and stat_module.S_IMODE(fresh.stat().st_mode) == 0o600
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # never inherited by a process we start
    os.close(fd)
    assert open_lock_file(tmp_path / "no-such-dir" / "x.lock", notes) is None
    assert notes == [f"cannot open the watchdog lock {tmp_path / 'no-such-dir' / 'x.lock'}: No such file or directory"]
    notes.clear()
    (tmp_path / "target").write_text("x")
    (tmp_path / "link.lock").symlink_to(tmp_path / "target")
    assert open_lock_file(tmp_path / "link.lock", notes) is None
    assert notes == [f"cannot open the watchdog lock {tmp_path / 'link.lock'}: it is a symlink"]
    os.mkfifo(tmp_path / "fifo.lock", 0o600)
    notes.clear()
    fd = os.open(tmp_path / "fifo.lock", os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening it read-write cannot block
    try:
        assert open_lock_file(tmp_path / "fifo.lock", notes) is None
    finally:
        os.close(fd)
    assert notes == [f"refusing the watchdog lock {tmp_path / 'fifo.lock'}: not a regular file"]
    shared = tmp_path / "shared.lock"
    shared.write_text("")
    os.chmod(shared, 0o622)
    notes.clear()
    assert open_lock_file(shared, notes) is None
    assert notes == [f"refusing the watchdog lock {shared}: writable by others (mode 0622)"]
    os.chmod(shared, 0o644)
    fd = open_lock_file(shared, notes)
    assert fd is not None
    os.close(fd)


def test_two_watchdogs_one_lock_and_what_the_second_says(tmp_path: Path) -> None:
    first, second = guard_dog(tmp_path), guard_dog(tmp_path)
    assert first.ctx.control is not None
    lock = first.ctx.control.dir / "watchdog.lock"
    lock.parent.mkdir(mode=0o700)
    lock.write_text('{"pid": 99999999, "left": "by an older watchdog"}')  # a stale, longer holder line
    os.chmod(lock, 0o600)
    assert first.tick(T0, models=[], host=CALM) == [] and first.notes == [] and first.ticks == 1
    assert lock.read_text() == json.dumps({"pid": os.getpid()})  # replaced whole, nothing left of the old line
    assert second.tick(T0, models=[], host={"pressure": 100.0}) == []  # stands by: does not act
    assert second.notes == [f'another watchdog is active ({{"pid": {os.getpid()}}}); this one stands by']
    assert second._lock_fd is None
    held = first._lock_fd
    assert first._lock() and first._lock_fd == held  # held for good, not reopened
    first.close()
    assert first._lock_fd is None
    assert second.tick(T0, models=[], host=CALM) == [] and second.notes == [] and second.ticks == 2  # notes reset
    second.close()


def test_no_control_dir_and_no_sidecar_needs_no_lock(tmp_path: Path) -> None:
    dog = guard_dog(tmp_path)
    dog.ctx.control = None
    dog.ctx.sidecar = None
    assert dog._lock() and dog._lock_fd is None


def test_an_unusable_control_dir_is_said_and_nothing_done(tmp_path: Path) -> None:
    (tmp_path / "trials.control").write_text("a file, not a directory")
    dog = guard_dog(tmp_path)
    assert dog.tick(T0, models=[], host={"pressure": 100.0}) == []
    assert len(dog.notes) == 1 and str(tmp_path / "trials.control") in dog.notes[0]


def test_a_failing_host_probe_is_a_note(tmp_path: Path, limiter: ResizableLimiter) -> None:
    from oasis_ops.errors import ProbeError

    def broken() -> Any:
        raise ProbeError("/proc/meminfo unreadable")

    dog = guard_dog(tmp_path)
    dog.host_probe = broken
    assert dog.tick(T0, models=[]) == [] and dog.notes == ["host memory: /proc/meminfo unreadable"]
    dog.host_probe = lambda: {"pressure": 90.0}
    [lowered] = dog.tick(T0, models=[])
    assert lowered.action == "concurrency" and dog.notes == []
    dog.close()


def test_remembered_stuck_states_are_bounded(tmp_path: Path) -> None:
    from oasis_ops.watchdog import MAX_REMEMBERED

    dog = guard_dog(tmp_path)
    for n in range(MAX_REMEMBERED + 3):
        dog._remember(f"k{n}", "done")
    assert len(dog.handled) == MAX_REMEMBERED and next(iter(dog.handled)) == "k3" and dog.handled[f"k{MAX_REMEMBERED + 2}"] == "done"


def test_the_last_kill_is_rebuilt_from_signalled_watchdog_rows_only(tmp_path: Path) -> None:
    dog = guard_dog(tmp_path, watchdog_kill_interval_min=120.0)  # the audit window: 2 h, not 1 h
    sidecar = dog.ctx.sidecar
    assert sidecar is not None
    now = T0
    signalled = {"signalled_at": "2026-12-04T11:00:00+00:00"}
    sidecar.record_action("hard_kill", "m", requested_by="watchdog", outcome="failed", detail=signalled, ts=now - timedelta(minutes=90))
    sidecar.record_action("hard_kill", "m", requested_by="watchdog", outcome="done", detail=signalled, ts=now - timedelta(minutes=100))
    sidecar.record_action("hard_kill", "m", requested_by="watchdog", outcome="refused", detail={}, ts=now - timedelta(minutes=5))
    sidecar.record_action("hard_kill", "m", requested_by="ui", outcome="done", detail=signalled, ts=now - timedelta(minutes=2))
    sidecar.record_action("hard_kill", "other", requested_by="watchdog", outcome="done", detail=signalled, ts=now - timedelta(minutes=1))
    sidecar.record_action("evict", "m", requested_by="watchdog", outcome="done", detail=signalled, ts=now - timedelta(minutes=1))
    sidecar.record_action("hard_kill", "m", requested_by="watchdog", outcome="done", detail=signalled, ts=now - timedelta(minutes=130))
    last = dog._last_kill_audited("m", now)
    assert last == now - timedelta(minutes=90) and type(last) is datetime and last.tzinfo is not None
    assert dog._last_kill_audited("nobody", now) is None
    short = guard_dog(tmp_path, watchdog_kill_interval_min=10.0)  # window: an hour at least
    assert short._last_kill_audited("m", now) is None and short._last_kill_audited("other", now) == now - timedelta(minutes=1)
    sidecar.record_action("hard_kill", "edge", requested_by="watchdog", outcome="done", detail=signalled,
                          ts=now - timedelta(seconds=3600.5))  # fmt: skip
    assert short._last_kill_audited("edge", now) is None  # just outside the hour
    sidecar.record_action("hard_kill", "edge", requested_by="watchdog", outcome="done", detail=signalled,
                          ts=now - timedelta(seconds=3599.5))  # fmt: skip
    assert short._last_kill_audited("edge", now) == now - timedelta(seconds=3599.5)
    from oasis_ops.sidecar import Sidecar
    from oasis_ops.watchdog import _signalled

    assert not _signalled("not json") and not _signalled('{"signalled_at": null}') and _signalled('{"signalled_at": "T"}')
    assert not _signalled(None) and _signalled({"signalled_at": "T"})
    (tmp_path / "not-a-db").mkdir()
    short.ctx.sidecar = Sidecar(tmp_path / "not-a-db")
    assert short._last_kill_audited("m", now) is None and short.notes[-1].startswith("audit log: ")


def test_for_settings_counts_trials_only_where_there_is_a_trial_db(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, snapshot_min_interval_s=0.0, snapshot_dir=str(tmp_path / "snapshots"))
    assert Watchdog.for_settings(settings).completed_since is None  # no trials.duckdb yet
    with duckdb.connect(str(tmp_path / "trials.duckdb")) as con:
        con.execute("CREATE TABLE trials (trial_id INTEGER, started_at TIMESTAMP, latency_ms DOUBLE, status VARCHAR)")
        con.execute("INSERT INTO trials VALUES (1, TIMESTAMP '2026-12-04 11:59:00', 4000, 'ok'), "
                    "(2, TIMESTAMP '2026-12-04 12:00:30', 4000, 'ok'), (3, TIMESTAMP '2026-12-04 12:01:00', NULL, 'timeout')")  # fmt: skip
    named = Watchdog.for_settings(settings, db=tmp_path / "named.duckdb")
    assert named.ctx.db == str(tmp_path / "named.duckdb") and named.completed_since is None  # no such file: no counter
    assert named.ctx.control is not None and named.ctx.control.dir == tmp_path / "named.control"
    dog = Watchdog.for_settings(settings, sidecar_path=tmp_path / "elsewhere.ops.duckdb")
    assert dog.ctx.sidecar is not None and dog.ctx.sidecar.path == tmp_path / "elsewhere.ops.duckdb"
    assert dog.ctx.requested_by == "watchdog" and dog.completed_since is not None
    assert dog.completed_since(T0) == 1  # ok trials started at or after 12:00
    with duckdb.connect(str(tmp_path / "trials.duckdb")) as con:  # the run goes on: each count is fresh
        con.execute("INSERT INTO trials VALUES (4, TIMESTAMP '2026-12-04 12:02:00', 4000, 'ok')")
    os.utime(tmp_path / "trials.duckdb", (time.time() + 5, time.time() + 5))
    assert dog.completed_since(T0) == 2
    dog.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this machine's /proc")
def test_host_probe_for_reads_this_machine(tmp_path: Path) -> None:
    from oasis_ops.watchdog import host_probe_for

    sample = host_probe_for(settings_for(tmp_path))()
    assert isinstance(sample, HostSample) and sample.source.startswith("linux") and (sample.mem_total_bytes or 0) > 0


def test_the_guard_acts_on_a_forecast_only_when_asked(tmp_path: Path, limiter: ResizableLimiter) -> None:
    from oasis_ops.earlywarning.model import EarlyWarning

    forecast = EarlyWarning("memory_exhaustion", T0 - timedelta(seconds=30), "warn", "free memory 12 GB, falling 900 MB/min",
                            {}, "concurrency 1", T0 + timedelta(minutes=13), T0 - timedelta(minutes=3))  # fmt: skip
    backlog = EarlyWarning("backlog", T0, "warn", "piling up", {}, "concurrency 1", None, T0)
    off = guard_dog(tmp_path)  # the default: pressure and the floor only
    assert off.tick(T0, models=[], host=CALM, warnings=[forecast]) == [] and limiter.limit == 4
    off.close()
    dog = guard_dog(tmp_path, watchdog_guard_on_forecast=True, watchdog_restore_min=1.0)
    assert dog.tick(T0, models=[], host=CALM, warnings=[backlog]) == []  # another kind: not the guard's business
    [lowered] = dog.tick(T0, models=[], host=CALM, warnings=[backlog, forecast])
    assert lowered.outcome == "done" and limiter.limit == 1
    assert lowered.detail["trigger"] == ("early warning of memory exhaustion (raised 11:59:30 UTC, at the floor by 12:13 UTC): "
                                         "free memory 12 GB, falling 900 MB/min")  # fmt: skip
    assert audit_rows(dog)[-1][:4] == ("concurrency", "runner", "done", "watchdog")
    # the warning clears: restored after the restore time, as after pressure
    assert dog.tick(T0 + timedelta(seconds=10), models=[], host=CALM, warnings=[]) == []
    [restored] = dog.tick(T0 + timedelta(seconds=70), models=[], host=CALM, warnings=[])
    assert restored.params == {"max_concurrency": 4} and limiter.limit == 4
    dog.close()
