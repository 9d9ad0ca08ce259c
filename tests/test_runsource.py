"""Which source the Live page shows (oasis_ops.sampler.runsource): live run, finished run, replay.

The rule that matters most: a stalled run (no trial for minutes, its sampler still ticking) is
live, so the recovery actions stay next to it; a finished run or a replay gets none of them and
no "start the sampler" advice, and is shown as of its last sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oasis_ops.sampler.runsource import classify
from oasis_ops.sidecar import SamplerHeartbeat

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOST = "lab-box"


def beat(*, running: bool, host: str = HOST, last_tick_ago_s: float = 2.0, stopped: bool = False) -> SamplerHeartbeat:
    last = NOW - timedelta(seconds=last_tick_ago_s)
    return SamplerHeartbeat(sampler_id="s", pid=4242, host=host, started_at=last - timedelta(hours=2), last_tick_at=last,
                            ticks=3600, errors=0, last_error=None, interval_s=2.0, stopped_at=last if stopped else None,
                            age_s=last_tick_ago_s, running=running)  # fmt: skip


def test_a_running_sampler_on_this_host_is_a_live_run_even_when_trials_stopped() -> None:
    stalled = classify(now=NOW, heartbeat=beat(running=True), db_exists=True, trials_live=False,
                       newest_trial_at=NOW - timedelta(minutes=7), this_host=HOST)  # fmt: skip
    assert (stalled.kind, stalled.actions_apply, stalled.historical) == ("live", True, False)
    assert "no trial for 7m00s" in stalled.detail
    assert not stalled.sampler_advice  # it is running


def test_trials_arriving_without_a_sampler_is_live_and_advises_the_sampler() -> None:
    source = classify(now=NOW, heartbeat=None, db_exists=True, trials_live=True, newest_trial_at=NOW, this_host=HOST)
    assert (source.kind, source.actions_apply, source.sampler_advice) == ("live", True, True)
    down = classify(now=NOW, heartbeat=beat(running=False, last_tick_ago_s=600), db_exists=True, trials_live=True,
                    newest_trial_at=NOW, this_host=HOST)  # fmt: skip
    assert (down.kind, down.sampler_advice) == ("live", True)


def test_a_finished_run_is_history_without_actions_or_advice() -> None:
    last_trial = NOW - timedelta(hours=3)
    source = classify(now=NOW, heartbeat=beat(running=False, last_tick_ago_s=3 * 3600 - 30, stopped=True), db_exists=True,
                      trials_live=False, newest_trial_at=last_trial, this_host=HOST)  # fmt: skip
    assert (source.kind, source.actions_apply, source.sampler_advice) == ("finished", False, False)
    assert source.as_of == last_trial + timedelta(seconds=30)  # the later of its last tick and last trial
    no_telemetry = classify(now=NOW, heartbeat=None, db_exists=True, trials_live=False, newest_trial_at=last_trial, this_host=HOST)
    assert (no_telemetry.kind, no_telemetry.as_of, no_telemetry.sampler_advice) == ("finished", last_trial, False)


def test_a_replay_and_a_run_recorded_elsewhere_get_no_actions() -> None:
    replay = classify(now=NOW, heartbeat=beat(running=False, host="eval-mbp.local", last_tick_ago_s=9e6, stopped=True),
                      db_exists=True, trials_live=False, newest_trial_at=None, replay=True, this_host=HOST)  # fmt: skip
    assert (replay.kind, replay.actions_apply, replay.sampler_advice) == ("replay", False, False)
    assert replay.label == "Replay (recorded on eval-mbp.local)" and replay.historical
    remote = classify(now=NOW, heartbeat=beat(running=True, host="gpu-7"), db_exists=True, trials_live=True,
                      newest_trial_at=NOW, this_host=HOST)  # fmt: skip
    assert (remote.kind, remote.label, remote.actions_apply) == ("live", "Live run on gpu-7", False)


def test_nothing_yet_is_a_run_about_to_start() -> None:
    source = classify(now=NOW, heartbeat=None, db_exists=False, trials_live=False, newest_trial_at=None, this_host=HOST)
    assert (source.kind, source.actions_apply, source.sampler_advice, source.as_of) == ("new", True, True, None)
