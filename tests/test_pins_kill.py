"""Pins for the hard-kill's words and records (mutation testing: what the user reads before
confirming, what the audit row keeps, and each refusal's reason, exactly). Real processes
(test_kill_real's world: a fake `ollama serve` with runner children and decoys, a loopback
Ollama API, a real sidecar)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, modelfile_for, ps_entry, utc
from test_kill_real import GEMMA, OTHER, World, pauser, world  # noqa: F401 - fixtures reused

from oasis_ops.actions.kill import KillPlan, _interrupted, find_status, hard_kill, plan_kill
from oasis_ops.probes.ollama import ModelStatus, parse_ps


def _ctx_without_manifest(w: World) -> object:
    ctx = w.ctx()
    return dataclasses.replace(ctx, models_dir=w.tmp / "no-models-here")


def test_the_plan_says_exactly_what_will_be_signalled(world: World) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    plan = plan_kill(world.ctx(), GEMMA)
    assert plan.ok and plan.pid == gemma and plan.serve_pid == world.serve_pid and plan.refusal is None
    assert plan.blob_path == world.blobs[GEMMA] and plan.candidates == (gemma,) and plan.state == "stopping"
    lines = plan.describe()
    assert lines[0] == f"SIGKILL pid {gemma}: the runner serving {GEMMA}"
    assert lines[1] == f"command line: {' '.join(plan.cmdline)}" and plan.command_line == " ".join(plan.cmdline)
    assert lines[2].startswith("RSS: ") and lines[2].endswith("%") and ", CPU: " in lines[2]
    assert lines[3].startswith("model state: Stopping for 4") and lines[3].endswith("s")
    assert lines[4] == f"parent: ollama serve pid {world.serve_pid}; user: {plan.username}"
    assert len(lines) == 4 + 1 + len(plan.notes)
    data = plan.as_dict()
    assert data == {"model": GEMMA, "pid": gemma, "create_time": plan.create_time, "cmdline": list(plan.cmdline),
                    "username": plan.username, "rss_bytes": plan.rss_bytes, "cpu_percent": plan.cpu_percent,
                    "serve_pid": world.serve_pid, "blob_path": world.blobs[GEMMA], "state": "stopping",
                    "stopping_for_s": plan.stopping_for_s, "stopping_since": plan.stopping_since.isoformat(),  # type: ignore[union-attr]
                    "candidates": [gemma], "notes": list(plan.notes), "refusal": None}  # fmt: skip


def test_describe_for_other_states_and_refusals() -> None:
    base = KillPlan(model="m", pid=7, create_time=1.0, cmdline=("ollama", "runner"), username="eval", rss_bytes=2_000_000_000,
                    cpu_percent=None, serve_pid=3, state="loaded")  # fmt: skip
    assert base.describe()[2] == "RSS: 2.0 GB" and base.describe()[3] == "model state: loaded"
    assert dataclasses.replace(base, state=None).describe()[3] == "model state: not listed by /api/ps"
    assert dataclasses.replace(base, state="weird").describe()[3] == "model state: weird"
    refused = dataclasses.replace(base, refusal="no runner", notes=("n1", "n2"))
    assert not refused.ok and refused.describe() == ["Will NOT kill anything: no runner", "n1", "n2"]
    assert not dataclasses.replace(base, pid=None).ok and not dataclasses.replace(base, create_time=None).ok
    assert dataclasses.replace(base, stopping_since=None).as_dict()["stopping_since"] is None


def test_find_status_by_name_and_implicit_latest() -> None:
    now = datetime.now(UTC)
    future = (now + timedelta(minutes=5)).isoformat()
    statuses: list[ModelStatus] = parse_ps({"models": [
        {"name": "llama3:latest", "model": "llama3:latest", "size": 1, "size_vram": 1, "expires_at": future},
        {"name": "ns/tool:7b", "model": "ns/tool:7b", "size": 1, "size_vram": 1, "expires_at": future},
    ]}, now)  # fmt: skip
    assert find_status(statuses, "llama3").name == "llama3:latest"  # type: ignore[union-attr]
    assert find_status(statuses, "llama3:latest").name == "llama3:latest"  # type: ignore[union-attr]
    assert find_status(statuses, "llama3:8b") is None
    assert find_status(statuses, "ns/tool:7b").name == "ns/tool:7b"  # type: ignore[union-attr]
    assert find_status(statuses, "ns/tool") is None  # ns/tool means ns/tool:latest


def test_refusals_say_exactly_why(world: World, pauser: Path, tmp_path: Path) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    not_loaded = plan_kill(world.ctx(), "absent:1b")
    assert not_loaded.refusal == "no runner process serves absent:1b (absent:1b is not loaded according to /api/ps)"
    world.server.models = [m for m in world.server.models if m["name"] == GEMMA]
    world.server.modelfiles = {}
    unknown_blob = plan_kill(_ctx_without_manifest(world), GEMMA)  # type: ignore[arg-type]
    assert unknown_blob.refusal == f"no runner process serves {GEMMA} (its weights blob is unknown, so no runner can be matched)"
    by_pid = plan_kill(_ctx_without_manifest(world), GEMMA, pid=gemma)  # type: ignore[arg-type]
    assert by_pid.refusal is not None and by_pid.refusal.startswith(
        f"cannot tell which model pid {gemma} serves: the blob of {GEMMA} is unknown (no manifest under {world.tmp / 'no-models-here'}, /api/show"
    )
    gone = plan_kill(world.ctx(), GEMMA, pid=2**22 + 12345)
    assert gone.refusal == f"pid {2**22 + 12345} does not exist" and gone.pid == 2**22 + 12345
    created = world.create_time(gemma)
    reused = plan_kill(world.ctx(), GEMMA, pid=gemma, create_time=created - 42.0)
    assert reused.refusal == (f"pid {gemma} was reused: it now belongs to a process started at {created:.2f}, "
                              f"not the one seen at {created - 42.0:.2f}")  # fmt: skip
    assert reused.create_time == created - 42.0
    me = plan_kill(world.ctx(), GEMMA, pid=os.getpid())
    assert me.refusal == f"pid {os.getpid()} is this process"
    # no serve listening where the context says: nothing is a runner of "the current serve"
    lonely = dataclasses.replace(world.ctx(), serve_pid=2**22 + 54321)
    assert plan_kill(lonely, GEMMA).refusal == "no `ollama serve` process is visible on this machine"


def test_dry_run_and_refusal_messages_and_rows(world: World) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    dry = hard_kill(world.ctx(), GEMMA, dry_run=True, trigger={"why": "test"})
    assert dry.message == f"dry run: would SIGKILL runner pid {gemma} of {GEMMA}" and dry.outcome == "dry_run"
    assert dry.params == {"pid": None, "create_time": None, "verify_respawn": False, "dry_run": True}
    assert dry.detail["trigger"] == {"why": "test"} and dry.detail["plan"]["pid"] == gemma and world.alive(gemma)
    refused = hard_kill(world.ctx(), "absent:1b")
    assert refused.message == "hard-kill absent:1b: no runner process serves absent:1b (absent:1b is not loaded according to /api/ps)"
    no_audit = dataclasses.replace(world.ctx(), sidecar=None)
    unaudited = hard_kill(no_audit, GEMMA)
    assert (unaudited.outcome, unaudited.message) == ("refused", "refusing to kill without an audit log: pass --db (or set `sidecar`)")
    assert world.alive(gemma)
    done = hard_kill(world.ctx(), GEMMA)
    assert done.message.startswith(f"killed runner pid {gemma} of {GEMMA} (gone after ") and done.message.endswith(" ms)")
    assert done.detail["gone_after_ms"] >= 0 and datetime.fromisoformat(done.detail["signalled_at"]).tzinfo is not None
    assert [r["outcome"] for r in world.audit_rows()] == ["dry_run", "refused", "done"]  # the unaudited one left no row


@pytest.mark.parametrize(
    ("stage", "outcome", "message"),
    [
        ("planning", "failed", "hard-kill m: RuntimeError: boom while planning; nothing was signalled"),
        ("signalling", "failed", "hard-kill m: RuntimeError: boom while verifying pid 42; SIGKILL may not have been sent"),
        ("signalled", "failed", "sent SIGKILL to pid 42 of m at T, but confirming it is gone failed: RuntimeError: boom"),
        ("confirmed", "done", "killed runner pid 42 of m; then RuntimeError: boom"),
        ("respawn check", "done", "killed runner pid 42 of m (confirmed gone), but the respawn check failed: "
                                  "RuntimeError: boom; no new runner was verified"),
    ],
)  # fmt: skip
def test_an_interrupted_kill_says_how_far_it_got(stage: str, outcome: str, message: str) -> None:
    detail: dict[str, object] = {"plan": {"pid": 42}, "signalled_at": "T"}
    assert _interrupted("m", stage, detail, RuntimeError("boom")) == (outcome, message)
    assert detail["error"] == "RuntimeError: boom" and detail["error_stage"] == stage
    bare: dict[str, object] = {}
    assert _interrupted("m", "planning", bare, KeyboardInterrupt())[1] == "hard-kill m: KeyboardInterrupt while planning; nothing was signalled"


def test_a_tree_without_runners(pauser: Path, tmp_path: Path) -> None:  # noqa: F811
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    server = FakeOllama()
    try:
        tree.exe("bin/ollama")
        serve_pid = tree.start([])
        w = World(tree, server, serve_pid, tmp_path, {})
        assert plan_kill(w.ctx(), OTHER).refusal == f"no runner process serves {OTHER} ({OTHER} is not loaded according to /api/ps)"
    finally:
        server.close()
        tree.close()


# --- evict and recover: outcomes and words ------------------------------------------------------
def test_evict_outcomes_and_words(world: World) -> None:  # noqa: F811
    import threading

    from oasis_ops.actions import evict

    nothing = evict(world.ctx(), "absent:1b")
    assert (nothing.outcome, nothing.message, nothing.detail, nothing.params) == (
        "done", "absent:1b is not loaded: nothing to evict", {"state_before": None}, {"grace_s": 1.0})  # fmt: skip
    stuck = evict(world.ctx(), GEMMA, grace_s=0.5)  # Stopping for 40 s already: reported after the minimum look
    assert stuck.outcome == "stuck" and stuck.detail["waited_up_to_s"] == 0.5 and stuck.detail["state_after"] == "stopping"
    assert stuck.message.startswith(f"{GEMMA} is still Stopping after 4") and stuck.message.endswith(
        f": a request on its runner never finishes; escalate with a hard-kill (`oasis-ops kill-runner {GEMMA}`) or Recover")
    assert stuck.detail["stopping_for_s"] >= 40 and stuck.detail["escalation"]["command"] == f"oasis-ops kill-runner {GEMMA}"
    assert stuck.detail["escalation"]["action"] == "hard_kill" and stuck.detail["escalation"]["plan"]["refusal"] is None
    with_db = dataclasses.replace(world.ctx(), db="/data/t.duckdb")
    assert evict(with_db, GEMMA, grace_s=0.1).detail["escalation"]["command"] == f"oasis-ops kill-runner {GEMMA} --db /data/t.duckdb"
    reused = evict(world.ctx(), OTHER, grace_s=0.3)  # loaded, and the fake never unloads it
    assert (reused.outcome, reused.detail["state_after"], reused.detail["waited_up_to_s"]) == ("stuck", "loaded", 0.3)
    assert reused.message == (f"{OTHER} is still loaded 0.3 s after the unload request (new requests keep reusing it); "
                              "pause the runner first, or hard-kill")  # fmt: skip
    threading.Timer(0.3, world.server.drop, args=(OTHER,)).start()
    gone = evict(world.ctx(), OTHER, grace_s=5.0)
    assert gone.outcome == "done" and 0.2 < gone.detail["gone_after_s"] < 5.0
    assert re.fullmatch(rf"{re.escape(OTHER)} unloaded after \d+\.\d s", gone.message), gone.message
    assert [(r["action"], r["outcome"]) for r in world.audit_rows()][-1] == ("evict", "done")
    world.server.mode = "500"
    down = evict(world.ctx(), GEMMA)
    assert down.outcome == "failed" and down.message.startswith(f"evict {GEMMA}: ") and "HTTP 500" in down.message
    world.server.mode = "ok"


def test_evict_failures_name_the_step_that_failed(world: World) -> None:  # noqa: F811
    from oasis_ops.actions import evict

    world.server.fail_paths = {"/api/generate"}  # /api/ps answers, the unload request does not
    refused = evict(world.ctx(), OTHER)
    assert (refused.outcome, refused.detail) == ("failed", {"state_before": "loaded"})
    assert refused.message.startswith(f"evict {OTHER}: the unload request failed: ") and "HTTP 500" in refused.message
    world.server.fail_paths = set()
    world.server.mode_after_unload = "500"  # the unload is taken, then /api/ps stops answering
    blind = evict(world.ctx(), OTHER, grace_s=0.3)
    assert blind.outcome == "failed" and blind.detail["state_before"] == "loaded" and "state_after" not in blind.detail
    assert blind.message.startswith(f"evict {OTHER}: cannot watch /api/ps: ") and "HTTP 500" in blind.message
    assert [(r["action"], r["outcome"]) for r in world.audit_rows()] == [("evict", "failed"), ("evict", "failed")]


def test_evict_waits_by_the_episode_and_never_sleeps_past_its_deadline(world: World) -> None:  # noqa: F811
    from oasis_ops.actions import evict
    from oasis_ops.actions.evict import MIN_OBSERVE_S

    slept: list[float] = []
    # polls every 0.5 s: a grace of 0.3 s must still end with a sleep of at most what is left
    ctx = dataclasses.replace(world.ctx(), sleep=lambda s: (slept.append(s), time.sleep(s))[1], poll_interval_s=0.5)
    stuck = evict(ctx, GEMMA, grace_s=3.0)  # Stopping for 40 s already: the grace is used up, MIN_OBSERVE_S left
    assert stuck.detail["waited_up_to_s"] == MIN_OBSERVE_S and stuck.outcome == "stuck"
    since = datetime.fromisoformat(stuck.detail["stopping_since"])
    expiry = datetime.fromisoformat(next(m for m in world.server.models if m["name"] == GEMMA)["expires_at"])
    assert abs((since - expiry).total_seconds()) < 1  # Ollama's expiry: the sidecar holds no earlier episode
    slept.clear()
    evict(ctx, OTHER, grace_s=0.3)  # loaded: no episode, the whole grace
    assert slept and max(slept) <= 0.3 + 1e-6, slept  # never a poll past the deadline
    world.server.set_expires(GEMMA, datetime.now(UTC) - timedelta(seconds=0.2))
    fresh = evict(ctx, GEMMA, grace_s=2.5)  # Stopping for 0.2 s: about 2.3 s of the grace left
    assert 2.0 <= fresh.detail["waited_up_to_s"] <= 2.3, fresh.detail


def test_recover_outcomes_and_words(world: World) -> None:  # noqa: F811
    from oasis_ops.actions import recover

    gemma = world.tree.pid_of("--port", "54107")
    decoy = world.tree.pid_of("-c", "import time; time.sleep(600)")
    unaudited = recover(dataclasses.replace(world.ctx(), sidecar=None), GEMMA)
    assert (unaudited.outcome, unaudited.message) == ("refused", "refusing to recover (it may kill a process) without an audit log: pass --db")
    absent = recover(world.ctx(), "absent:1b")
    assert (absent.outcome, absent.message) == ("done", "absent:1b is not loaded: nothing to evict")
    assert [s["action"] for s in absent.detail["steps"]] == ["evict"] and absent.params == {"grace_s": None, "ping": True, "pid": None}
    refused = recover(world.ctx(), GEMMA, grace_s=0.2, ping=False, pid=decoy)
    assert refused.outcome == "stuck" and world.alive(decoy) and world.alive(gemma)
    assert refused.message.startswith(f"{GEMMA} is stuck and the hard-kill was refused: hard-kill {GEMMA}: ")
    assert [(s["action"], s["outcome"]) for s in refused.detail["steps"]] == [("evict", "stuck"), ("hard_kill", "refused")]
    done = recover(world.ctx(), GEMMA, grace_s=0.2, ping=False)
    assert done.outcome == "done" and done.message.startswith(f"soft evict was stuck; killed runner pid {gemma} of {GEMMA} (gone after ")
    step = done.detail["steps"][1]
    assert (step["action"], step["outcome"]) == ("hard_kill", "done") and step["duration_ms"] >= 0 and "signalled_at" in step["detail"]
    assert not world.alive(gemma)
    # the refusal without an audit log left no row
    assert [(r["action"], r["outcome"]) for r in world.audit_rows()] == [("recover", "done"), ("recover", "stuck"), ("recover", "done")]


# --- results, the audit log and its markers ----------------------------------------------------
def test_outcomes_exit_codes_and_the_result_record() -> None:
    from oasis_ops.actions.result import EXIT_CODES, ActionResult, cancelled

    assert EXIT_CODES == {"done": 0, "dry_run": 0, "refused": 1, "cancelled": 1, "failed": 1, "stuck": 3, "not_acknowledged": 3}
    assert [ActionResult("a", None, o, "m").ok for o in EXIT_CODES] == [True, True, False, False, False, False, False]
    with pytest.raises(ValueError, match="unknown outcome 'maybe'"):
        ActionResult("a", None, "maybe", "m")
    ts = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    result = ActionResult("evict", "m", "stuck", "still Stopping", {"k": 1}, 12.345, {"grace_s": 5.0}, "ui", ts)
    assert result.as_dict() == {"ts": "2026-12-04T12:00:00+00:00", "action": "evict", "target": "m", "outcome": "stuck",
                                "exit_code": 3, "message": "still Stopping", "params": {"grace_s": 5.0}, "requested_by": "ui",
                                "detail": {"k": 1}, "duration_ms": 12.3, "audited": False}  # fmt: skip
    declined = cancelled("hard_kill", "m", "not confirmed", {"pid": 4}, "ui")
    data = declined.as_dict()
    assert data.pop("ts") == declined.ts.isoformat()
    assert data == {"action": "hard_kill", "target": "m", "outcome": "cancelled", "exit_code": 1, "message": "not confirmed",
                    "params": {"pid": 4}, "requested_by": "ui", "detail": {}, "duration_ms": 0.0, "audited": False}  # fmt: skip
    default = cancelled("pause", None, "no")
    assert (default.params, default.requested_by, default.target, default.duration_ms) == ({}, "cli", None, 0.0)


def test_audit_log_and_markers_read_back_what_was_written(tmp_path: Path) -> None:
    from oasis_ops.actions.audit import actions_markers, audit, audit_log
    from oasis_ops.actions.result import ActionResult
    from oasis_ops.sidecar import Sidecar

    sidecar = Sidecar(tmp_path / "s.ops.duckdb")
    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    first = audit(sidecar, ActionResult("hard_kill", "m", "done", "killed", {"pid": 7}, 5.0, {"pid": 7}, "watchdog", t0))
    second = audit(sidecar, ActionResult("pause", "runner", "refused", "no control", {}, 0.0, {"paused": True}, "ui",
                                         t0 + timedelta(seconds=5)))  # fmt: skip
    third = audit(sidecar, ActionResult("watchdog", None, "done", "on", {}, 0.0, {}, "cli", t0 + timedelta(seconds=9)))
    assert first.audited and second.audited and third.audited
    from oasis_ops.actions.audit import LOG_COLUMNS, MARKER_COLUMNS

    log = audit_log(sidecar, t0 - timedelta(minutes=1))
    assert list(log.columns) == list(LOG_COLUMNS) and list(log.index) == [0, 1, 2]
    assert list(log["action"]) == ["watchdog", "pause", "hard_kill"]  # newest first
    assert str(log["ts"].dt.tz) == "UTC" and log["ts"].iloc[2] == t0 and list(log["target"]) == [None, "runner", "m"]
    assert list(log["duration_ms"]) == [0.0, 0.0, 5.0]
    assert list(audit_log(sidecar, t0 + timedelta(hours=1)).columns) == list(LOG_COLUMNS)
    assert list(log["message"]) == ["on", "no control", "killed"] and list(log["requested_by"]) == ["cli", "ui", "watchdog"]
    assert json.loads(log["params"].iloc[2]) == {"pid": 7} and json.loads(log["detail"].iloc[2]) == {"message": "killed", "pid": 7}
    assert list(audit_log(sidecar, t0, t0 + timedelta(seconds=6))["action"]) == ["pause", "hard_kill"]  # [since, until)
    assert list(audit_log(sidecar, t0, max_rows=1)["action"]) == ["watchdog"]  # the newest
    assert audit_log(sidecar, t0 + timedelta(hours=1)).empty
    markers = actions_markers(sidecar, t0, t0 + timedelta(minutes=1))
    assert list(markers["label"]) == ["hard_kill m: done (watchdog)", "pause runner: refused (ui)", "watchdog: done (cli)"]
    assert list(markers["kind"]) == ["hard_kill", "pause", "watchdog"] and str(markers["ts"].dt.tz) == "UTC"
    assert list(actions_markers(sidecar, t0 + timedelta(hours=1), t0 + timedelta(hours=2)).columns) == list(MARKER_COLUMNS)
    assert list(actions_markers(sidecar, t0, t0 + timedelta(seconds=6))["kind"]) == ["hard_kill", "pause"]  # [start, end)
    unaudited = audit(None, ActionResult("evict", "m", "done", "ok"))
    assert not unaudited.audited and unaudited.detail["audit_error"] == "no sidecar configured: this attempt was not audited"
    (tmp_path / "blocked").write_text("not a directory")
    broken = audit(Sidecar(tmp_path / "blocked" / "s.ops.duckdb"), ActionResult("evict", "m", "done", "ok"))
    assert not broken.audited and str(tmp_path / "blocked") in broken.detail["audit_error"]


# --- the Stopping episode -------------------------------------------------------------------------
def _samples(tmp_path: Path, rows: list[tuple[int, str, int | None, int | None, int | None]]) -> object:
    """model_samples of model m: (seconds before NOW, state, runner pid, stopping_since and
    expires_at as seconds before NOW)."""
    from oasis_ops.sidecar import Sidecar

    tmp_path.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(tmp_path / "s.ops.duckdb")
    now = EPISODE_NOW

    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else now - timedelta(seconds=seconds)

    sidecar.write_batch({"model_samples": [
        {"ts": at(ago), "model": "m", "state": state, "runner_pid": pid, "runner_create_time": 1.0,
         "stopping_since": at(since), "expires_at": at(expires)}
        for ago, state, pid, since, expires in rows
    ]})  # fmt: skip
    return sidecar


EPISODE_NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_episode_from_the_sampler_rules(tmp_path: Path) -> None:
    from oasis_ops.actions.episodes import FRESH_S, episode_start_from_sidecar

    now = EPISODE_NOW
    # loaded, then Stopping with Ollama's clock restarted by a second keep_alive 0 at 100 s ago
    sidecar = _samples(tmp_path / "a", [(400, "loaded", 7, None, None), (300, "stopping", 7, 300, 300),
                                        (200, "stopping", 7, 300, 300), (100, "stopping", 7, 100, 100),
                                        (int(FRESH_S), "stopping", 7, 100, 100)])  # fmt: skip
    assert episode_start_from_sidecar(sidecar, "m", now) == now - timedelta(seconds=300)  # type: ignore[arg-type]
    assert episode_start_from_sidecar(sidecar, "m", now, runner_pid=7) == now - timedelta(seconds=300)  # type: ignore[arg-type]
    assert episode_start_from_sidecar(sidecar, "m", now, runner_pid=8) is None  # type: ignore[arg-type]
    assert episode_start_from_sidecar(sidecar, "other", now) is None  # type: ignore[arg-type]
    assert episode_start_from_sidecar(sidecar, "m", now + timedelta(seconds=1)) is None  # type: ignore[arg-type]  # stale
    assert episode_start_from_sidecar(None, "m", now) is None
    # a respawned runner (another pid) ends the older run; an expires_at earlier than stopping_since counts
    respawn = _samples(tmp_path / "b", [(400, "stopping", 7, 400, 400), (200, "stopping", 9, 220, 260), (10, "stopping", 9, 220, 220)])
    assert episode_start_from_sidecar(respawn, "m", now) == now - timedelta(seconds=260)  # type: ignore[arg-type]
    # no stopping_since nor expires_at: the samples' own times
    bare = _samples(tmp_path / "c", [(250, "loaded", 7, None, None), (200, "stopping", None, None, None), (5, "stopping", None, None, None)])
    assert episode_start_from_sidecar(bare, "m", now) == now - timedelta(seconds=200)  # type: ignore[arg-type]
    since_first = _samples(tmp_path / "e", [(200, "stopping", 7, 300, 200), (5, "stopping", 7, 300, 150)])
    assert episode_start_from_sidecar(since_first, "m", now) == now - timedelta(seconds=300)  # type: ignore[arg-type]
    ended = _samples(tmp_path / "d", [(100, "stopping", 7, 100, 100), (5, "loaded", 7, None, None)])
    assert episode_start_from_sidecar(ended, "m", now) is None  # type: ignore[arg-type]


def test_timestamps_are_normalised_to_aware_utc() -> None:
    import math

    import pandas as pd

    from oasis_ops.actions.episodes import _num
    from oasis_ops.moments import as_utc_datetime

    moment = datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)
    for value in (moment, moment.replace(tzinfo=None), pd.Timestamp("2025-11-20T18:58:01+01:00"), "2025-11-20 17:58:01",
                  pd.Timestamp("2025-11-20 17:58:01")):  # fmt: skip
        out = as_utc_datetime(value)
        assert out == moment and type(out) is datetime and out.utcoffset() == timedelta(0), value
    assert [as_utc_datetime(v) for v in (None, float("nan"), pd.NaT, math.nan)] == [None] * 4
    assert (_num(None), _num("x"), _num(float("nan")), _num("7"), _num(4242)) == (None, None, None, 7.0, 4242.0)


def test_episodes_tracked_poll_by_poll(tmp_path: Path) -> None:
    from oasis_ops.actions.episodes import MAX_EPISODES, StoppingEpisodes
    from oasis_ops.probes import ModelSnapshot
    from oasis_ops.probes.ollama import parse_ps

    now = EPISODE_NOW

    def snap(model: str, since_s: int | None, pid: int = 7, create: float = 1.004) -> ModelSnapshot:
        expires = now - timedelta(seconds=since_s) if since_s is not None else now + timedelta(minutes=5)
        [status] = parse_ps({"models": [{"name": model, "model": model, "size": 1, "size_vram": 1,
                                         "expires_at": expires.isoformat()}]}, now)  # fmt: skip
        return ModelSnapshot(ts=now, status=status, blob_path=None, runner_pid=pid, runner_create_time=create,
                             runner_rss_bytes=None, runner_cpu_percent=None, runner_threads=None, runner_cmdline=None,
                             runner_variant=None, runner_port=None, note=None)  # fmt: skip

    episodes = StoppingEpisodes()
    episodes.update([snap("m", 300), snap("ok", None)])
    assert episodes.starts == {("m", 7, 1.0): now - timedelta(seconds=300)}
    assert StoppingEpisodes.key(snap("m", 1, create=1.006)) == ("m", 7, 1.01)
    episodes.update([snap("m", 20)])  # Ollama's clock restarted: the episode keeps its start
    assert episodes.start(snap("m", 20)) == now - timedelta(seconds=300)
    episodes.update([snap("m", 20, pid=8)])  # another runner: a new episode
    assert episodes.start(snap("m", 20, pid=8)) == now - timedelta(seconds=20) and len(episodes.starts) == 1
    episodes.update([])  # no longer Stopping: forgotten
    assert episodes.starts == {}
    # first sight after a restart: the sampler's samples know the episode began earlier
    sidecar = _samples(tmp_path / "side", [(400, "stopping", 7, 400, 400), (3, "stopping", 7, 30, 30)])
    episodes.update([snap("m", 30), snap("other", None)], sidecar)  # type: ignore[arg-type]
    assert episodes.starts == {("m", 7, 1.0): now - timedelta(seconds=400)}
    episodes.update([snap("m", 30, pid=9)], sidecar)  # type: ignore[arg-type]  # another runner: the samples are not its
    assert episodes.starts == {("m", 9, 1.0): now - timedelta(seconds=30)}
    stopping_without_since = dataclasses.replace(snap("m", 30), status=dataclasses.replace(snap("m", 30).status, stopping_since=None))
    episodes.update([stopping_without_since])  # Stopping, but since when is unknown: no episode to keep
    assert episodes.starts == {}
    episodes.update([snap(f"m{n}", 10) for n in range(MAX_EPISODES + 5)])
    assert len(episodes.starts) == MAX_EPISODES


# --- control-channel actions -------------------------------------------------------------------------
def test_control_actions_words_and_details(tmp_path: Path) -> None:
    from oasis_ops.actions import ActionContext, pause, resume, set_concurrency
    from oasis_ops.control import ResizableLimiter, RunnerControl
    from oasis_ops.settings import load_settings

    settings = load_settings(env={}, flags={"db": str(tmp_path / "trials.duckdb"), "ollama_host": "http://127.0.0.1:9",
                                            "control_ack_timeout_s": 0.5})  # fmt: skip
    ctx = ActionContext.from_settings(settings, requested_by="ui")
    for bad in (0, True, "3", 2.5):
        wrong = set_concurrency(ctx, bad)  # type: ignore[arg-type]
        assert (wrong.outcome, wrong.message, wrong.params) == ("refused", f"concurrency must be an integer >= 1, got {bad!r}",
                                                                {"max_concurrency": bad}) and wrong.audited  # fmt: skip
        assert (wrong.target, wrong.requested_by, wrong.detail) == ("runner", "ui", {}) and 0 <= wrong.duration_ms < 1000
    nobody = set_concurrency(ctx, 2, reason="test")  # no runner-side helper: requested, not applied
    assert nobody.outcome == "not_acknowledged" and nobody.exit_code == 3
    assert nobody.message.startswith("concurrency: requested (version 1), ") and nobody.detail["runner"] is None
    assert nobody.detail["trigger"] == "test" and nobody.detail["requested_version"] == 1
    assert nobody.detail["control_dir"] == str(tmp_path / "trials.control")
    limiter = ResizableLimiter(4)
    with RunnerControl(tmp_path / "trials.control", limiter=limiter, poll_interval_s=0.05, heartbeat_interval_s=0.1):
        done = set_concurrency(ctx, 3)
        assert done.outcome == "done" and limiter.limit == 3 and "trigger" not in done.detail
        assert done.message == f"max concurrency is now 3 (runner pid {os.getpid()} applied version {done.detail['applied_version']})"
        assert set(done.detail) == {"requested_version", "control_dir", "runner_pid", "applied_version", "applied_max_concurrency",
                                    "applied_paused", "in_flight", "heartbeat_age_s", "runner_alive"}  # fmt: skip
        assert (done.detail["runner_pid"], done.detail["applied_max_concurrency"], done.detail["runner_alive"]) == (os.getpid(), 3, True)
        assert done.detail["in_flight"] == 0 and done.detail["applied_paused"] is False and 0 <= done.detail["heartbeat_age_s"] < 5
        assert isinstance(done.detail["heartbeat_age_s"], float) and done.detail["heartbeat_age_s"] == round(done.detail["heartbeat_age_s"], 2)
        paused = pause(ctx, reason="memory")
        assert paused.message.startswith("runner paused (in-flight trials finish) (runner pid ") and limiter.paused
        assert paused.params == {"paused": True} and paused.detail["trigger"] == "memory" and paused.detail["applied_paused"] is True
        resumed = resume(ctx)
        assert resumed.message.startswith("runner resumed (runner pid ") and not limiter.paused and resumed.params == {"paused": False}
    os.chmod(tmp_path / "trials.control", 0o777)  # anyone could write requests there now: refused, said
    unsafe = pause(ctx, reason="memory")
    assert (unsafe.outcome, unsafe.target, unsafe.requested_by, unsafe.params) == ("refused", "runner", "ui", {"paused": True})
    assert unsafe.message.startswith("pause: ") and "writable by others" in unsafe.message
    assert unsafe.detail == {"trigger": "memory"} and unsafe.audited
    os.chmod(tmp_path / "trials.control", 0o700)
    ctx.control = None
    for action, result in (("concurrency", set_concurrency(ctx, 2)), ("pause", pause(ctx)), ("resume", resume(ctx))):
        assert (result.outcome, result.message) == ("refused", f"{action}: no control directory (pass --db, or set `control_dir`)")


# --- recover when something breaks midway ---------------------------------------------------------
@pytest.mark.parametrize(
    ("progress", "exc", "outcome", "message", "kill_outcome"),
    [
        ({}, RuntimeError("boom"), "failed", "recover m: RuntimeError: boom; no SIGKILL was sent", None),
        ({"plan": {"pid": 5}, "error_stage": "signalling"}, RuntimeError("boom"), "failed",
         "recover m: RuntimeError: boom while verifying pid 5; SIGKILL may not have been sent", "failed"),
        ({"plan": {"pid": 5}, "signalled_at": "T"}, RuntimeError("boom"), "failed",
         "recover m: SIGKILL was sent to pid 5 at T, then RuntimeError: boom", "failed"),
        ({"plan": {"pid": 5}, "signalled_at": "T", "gone_after_ms": 12.0}, OSError(), "done",
         "recover m: killed runner pid 5 (confirmed gone), but the respawn check failed: OSError", "done"),
    ],
)  # fmt: skip
def test_recover_says_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: dict, exc: BaseException, outcome: str, message: str, kill_outcome: str | None
) -> None:
    from oasis_ops.actions import ActionContext, recover
    recover_module = importlib.import_module("oasis_ops.actions.recover")
    from oasis_ops.actions.result import ActionResult
    from oasis_ops.settings import load_settings

    ctx = ActionContext.from_settings(load_settings(env={}, flags={"db": str(tmp_path / "t.duckdb"), "ollama_host": "http://127.0.0.1:9"}))
    monkeypatch.setattr(recover_module, "evict", lambda *a, **k: ActionResult("evict", "m", "stuck", "m is still Stopping", {}, 1.0))

    def breaking_kill(*args: object, progress: dict, **kwargs: object) -> ActionResult:
        progress.update(progress_given)
        raise exc

    progress_given = progress
    monkeypatch.setattr(recover_module, "hard_kill", breaking_kill)
    result = recover(ctx, "m", grace_s=0.0, ping=False)
    assert (result.outcome, result.message) == (outcome, message)
    assert result.detail["error"] == (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    assert result.detail["signalled_at"] == progress.get("signalled_at") and result.audited
    steps = [(s["action"], s["outcome"]) for s in result.detail["steps"]]
    assert steps == [("evict", "stuck")] + ([("hard_kill", kill_outcome)] if kill_outcome else [])


def test_recover_audits_then_lets_an_interrupt_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oasis_ops.actions import ActionContext, recover
    recover_module = importlib.import_module("oasis_ops.actions.recover")
    from oasis_ops.actions.audit import audit_log
    from oasis_ops.actions.result import ActionResult
    from oasis_ops.settings import load_settings

    ctx = ActionContext.from_settings(load_settings(env={}, flags={"db": str(tmp_path / "t.duckdb"), "ollama_host": "http://127.0.0.1:9"}))
    monkeypatch.setattr(recover_module, "evict", lambda *a, **k: ActionResult("evict", "m", "stuck", "stuck", {}, 1.0))

    def interrupted(*args: object, progress: dict, **kwargs: object) -> ActionResult:
        progress.update({"plan": {"pid": 5}, "signalled_at": "T"})
        raise KeyboardInterrupt

    monkeypatch.setattr(recover_module, "hard_kill", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recover(ctx, "m", grace_s=0.0, ping=False)
    assert ctx.sidecar is not None
    [row] = audit_log(ctx.sidecar, datetime(2000, 1, 1, tzinfo=UTC)).to_dict("records")
    assert (row["action"], row["outcome"], row["message"]) == ("recover", "failed", "recover m: SIGKILL was sent to pid 5 at T, then KeyboardInterrupt")


def test_the_context_derives_its_places_from_the_trial_db(tmp_path: Path) -> None:
    from oasis_ops.actions import ActionContext
    from oasis_ops.settings import load_settings

    base = {"ollama_host": "http://127.0.0.1:9"}
    ctx = ActionContext.from_settings(load_settings(env={}, flags={**base, "db": str(tmp_path / "run 1.duckdb")}), requested_by="ui")
    assert ctx.sidecar is not None and ctx.sidecar.path == tmp_path / "run 1.ops.duckdb"
    assert ctx.control is not None and ctx.control.dir == tmp_path / "run 1.control"
    assert (ctx.db, ctx.requested_by, ctx.serve_pid, ctx.client.base_url) == (str(tmp_path / "run 1.duckdb"), "ui", None, "http://127.0.0.1:9")
    other = ctx.as_requester("watchdog")
    assert other.requested_by == "watchdog" and other.client is ctx.client and ctx.requested_by == "ui"
    assert dataclasses.replace(ctx, serve_pid=4242).current_serve_pid() == 4242
    elsewhere = ActionContext.from_settings(load_settings(env={}, flags={**base, "db": str(tmp_path / "t.duckdb")}),
                                            sidecar_path=tmp_path / "side.ops.duckdb")  # fmt: skip
    assert elsewhere.sidecar is not None and elsewhere.sidecar.path == tmp_path / "side.ops.duckdb"
    bare = ActionContext.from_settings(load_settings(env={}, flags=base))
    assert (bare.sidecar, bare.control, bare.db, bare.requested_by) == (None, None, None, "cli")
    models = ActionContext.from_settings(load_settings(env={}, flags={**base, "ollama_models": str(tmp_path / "m")}))
    assert models.models_dir == tmp_path / "m"
    ctx.close()
    elsewhere.close()
    bare.close()
    models.close()


def test_the_respawn_check_retries_a_fast_failure_a_few_times(world: World) -> None:  # noqa: F811
    from oasis_ops.actions.kill import RESPAWN_ATTEMPTS, check_respawn
    from oasis_ops.probes.ollama import PingResult

    gemma = world.tree.pid_of("--port", "54107")
    other = world.tree.pid_of("--port", "44067")

    class Pings:
        """The real client for everything but the tiny request, whose answers are scripted."""

        def __init__(self, real: object, answers: list[bool]) -> None:
            self.real, self.answers, self.timeouts = real, answers, []

        def ping_generate(self, model: str, timeout_s: float) -> PingResult:
            self.timeouts.append(timeout_s)
            time.sleep(0.0123)  # a ping takes time: ping_s has digits past the third
            ok = self.answers.pop(0)
            return PingResult(ok, 0.01, "answered" if ok else "model runner has unexpectedly stopped")

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    sleeps: list[float] = []
    base = dataclasses.replace(world.ctx(), sleep=sleeps.append, respawn_timeout_s=30.0)
    flaky = Pings(base.client, [False, False, True])
    info = check_respawn(dataclasses.replace(base, client=flaky), GEMMA, old_pid=other)  # type: ignore[arg-type]
    assert (info["ok"], info["ping_ok"], info["attempts"], info["new_runner_pid"]) == (True, True, 3, gemma)
    assert info["ping"] == "answered" and sleeps == [0.2, 0.2] and 0 <= info["ping_s"] < 5
    assert all(1.0 <= t <= 30.0 for t in flaky.timeouts) and flaky.timeouts[0] > 25  # the time left, at least 1 s
    sleeps.clear()
    dead = Pings(base.client, [False] * 10)
    info = check_respawn(dataclasses.replace(base, client=dead), GEMMA, old_pid=other)  # type: ignore[arg-type]
    assert (info["ok"], info["ping_ok"], info["attempts"]) == (False, False, RESPAWN_ATTEMPTS) and "new_runner_pid" not in info
    assert info["ping"] == "model runner has unexpectedly stopped" and sleeps == [0.2] * (RESPAWN_ATTEMPTS - 1)
    same = check_respawn(dataclasses.replace(base, client=Pings(base.client, [True])), GEMMA, old_pid=gemma)  # type: ignore[arg-type]
    assert (same["ok"], same["new_runner_pid"]) == (False, gemma)  # the old runner answering is no respawn
    assert same["new_runner_create_time"] == world.create_time(gemma) and "note" not in same
    assert isinstance(same["ping_s"], float) and same["ping_s"] == round(same["ping_s"], 3)
    # an answer, but no runner to be found for the model: the plan's refusal is the note
    lost = check_respawn(dataclasses.replace(base, client=Pings(base.client, [True])), "absent:1b", old_pid=gemma)  # type: ignore[arg-type]
    assert (lost["ok"], lost["ping_ok"], lost["new_runner_pid"], lost["new_runner_create_time"]) == (False, True, None, None)
    assert lost["note"] == "no runner process serves absent:1b (absent:1b is not loaded according to /api/ps)"


def test_a_kill_whose_runner_does_not_come_back_says_so(world: World) -> None:  # noqa: F811
    """The fake serve respawns nothing: the kill is confirmed, the respawn check finds no runner."""
    gemma = world.tree.pid_of("--port", "54107")
    result = hard_kill(dataclasses.replace(world.ctx(), respawn_timeout_s=2.0), GEMMA, verify_respawn=True)
    assert result.outcome == "failed" and not world.alive(gemma)
    gone_ms = result.detail["gone_after_ms"]
    assert isinstance(gone_ms, float) and gone_ms == round(gone_ms, 1) and gone_ms >= 0
    assert result.message == (f"killed runner pid {gemma} of {GEMMA} (gone after {gone_ms:.0f} ms), but no new runner "
                              f"answered: no runner process serves {GEMMA}")  # fmt: skip
    assert result.detail["respawn"]["note"] == f"no runner process serves {GEMMA}" and result.detail["respawn"]["ping_ok"]
    [row] = [r for r in world.audit_rows() if r["action"] == "hard_kill"]
    assert row["outcome"] == "failed" and json.loads(row["detail"])["respawn"]["ok"] is False


def test_an_error_while_planning_is_audited_as_such(world: World) -> None:  # noqa: F811
    def broken() -> list[object]:
        raise RuntimeError("boom")

    result = hard_kill(dataclasses.replace(world.ctx(), processes=broken), GEMMA)
    assert (result.outcome, result.message) == ("failed", f"hard-kill {GEMMA}: RuntimeError: boom while planning; nothing was signalled")
    assert result.detail["error_stage"] == "planning"


def test_recover_when_the_soft_evict_works(world: World) -> None:  # noqa: F811
    """The model leaves at the unload request: no kill; with `ping`, a tiny request must answer
    (its step recorded), else the recovery failed; the grace period is the one asked for."""
    import threading

    from oasis_ops.actions import recover
    from oasis_ops.probes.ollama import PingResult

    class Pings:
        def __init__(self, real: object, ok: bool) -> None:
            self.real, self.ok, self.asked = real, ok, []

        def ping_generate(self, model: str, timeout_s: float) -> PingResult:
            self.asked.append((model, timeout_s))
            return PingResult(self.ok, 0.23456, "answered in 0.23 s" if self.ok else "HTTP 500: llama runner process has terminated")

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    base = dataclasses.replace(world.ctx(), respawn_timeout_s=12.0)
    for ok in (True, False):
        world.server.models = [m for m in world.server.models if m["name"] != OTHER] + [ps_entry(OTHER, expires_at=utc(300))]
        threading.Timer(0.2, world.server.drop, args=(OTHER,)).start()
        pings = Pings(base.client, ok)
        result = recover(dataclasses.replace(base, client=pings), OTHER, grace_s=3.0)  # type: ignore[arg-type]
        evicted, ping = result.detail["steps"]
        assert (evicted["action"], evicted["outcome"], ping["action"], ping["duration_ms"]) == ("evict", "done", "ping", 234.6)
        assert isinstance(evicted["duration_ms"], float) and evicted["duration_ms"] == round(evicted["duration_ms"], 1)
        assert evicted["detail"]["waited_up_to_s"] == 3.0 and pings.asked == [(OTHER, 12.0)]
        assert result.target == OTHER and result.params == {"grace_s": 3.0, "ping": True, "pid": None} and result.audited
        if ok:
            assert (result.outcome, ping["outcome"]) == ("done", "done")
            assert result.message == f"{evicted['message']}; a test request answered in 0.23 s"
        else:
            assert (result.outcome, ping["outcome"], ping["message"]) == ("failed", "failed", "HTTP 500: llama runner process has terminated")
            assert result.message == f"{evicted['message']}, but a test request failed: HTTP 500: llama runner process has terminated"
    quiet = recover(base, "absent:1b", ping=True)  # nothing was loaded: nothing to test either
    assert [s["action"] for s in quiet.detail["steps"]] == ["evict"] and quiet.outcome == "done"


# --- plan_kill: the episode, the details a refusal keeps, the numbers it shows -----------------
def test_the_plan_counts_stopping_from_the_episode_in_the_sidecar(world: World) -> None:  # noqa: F811
    """Ollama restarts its clock at every keep_alive 0; the sampler's samples of this model (not
    another's) say since when it has really been Stopping."""
    now = datetime.now(UTC)

    def rows(model: str, since_s: int) -> list[dict[str, object]]:
        return [{"ts": now - timedelta(seconds=ago), "model": model, "state": "stopping", "runner_pid": None,
                 "runner_create_time": None, "stopping_since": now - timedelta(seconds=since_s),
                 "expires_at": now - timedelta(seconds=since_s)} for ago in (since_s, since_s // 2, 2)]  # fmt: skip

    world.sidecar.write_batch({"model_samples": rows(GEMMA, 300) + rows(OTHER, 900)})
    plan = plan_kill(world.ctx(), GEMMA)
    assert plan.ok and plan.stopping_since is not None and plan.stopping_for_s is not None
    assert abs((plan.stopping_since - (now - timedelta(seconds=300))).total_seconds()) < 1  # GEMMA's, not OTHER's 900 s
    assert 299 <= plan.stopping_for_s < 330
    assert plan.describe()[3].startswith("model state: Stopping for 5m")


def test_refusals_keep_what_was_found_and_the_plan_shows_live_numbers(world: World, pauser: Path, tmp_path: Path) -> None:  # noqa: F811
    gemma = world.tree.pid_of("--port", "54107")
    created = world.create_time(gemma)
    cmdline = tuple(psutil_cmdline(gemma))
    modelfiles, world.server.modelfiles = world.server.modelfiles, {}  # the blob unknown to /api/show too
    by_pid = plan_kill(_ctx_without_manifest(world), GEMMA, pid=gemma)  # type: ignore[arg-type]
    world.server.modelfiles = modelfiles
    assert by_pid.refusal is not None and by_pid.refusal.startswith(f"cannot tell which model pid {gemma} serves")
    assert (by_pid.pid, by_pid.create_time, by_pid.cmdline) == (gemma, created, cmdline) and by_pid.rss_bytes
    me = plan_kill(world.ctx(), GEMMA, pid=os.getpid())
    assert me.refusal == f"pid {os.getpid()} is this process"
    assert me.create_time == world.create_time(os.getpid()) and me.cmdline and me.username
    # the RSS shown is read from the process at planning time, not the listing's older figure
    ctx = world.ctx()
    listed = [dataclasses.replace(r, rss_bytes=1) if r.pid == gemma else r for r in ctx.processes()]
    plan = plan_kill(dataclasses.replace(ctx, processes=lambda: listed), GEMMA)
    assert plan.ok and plan.rss_bytes is not None and plan.rss_bytes > 1


def test_two_runners_of_one_model_are_named_and_none_is_chosen(pauser: Path, tmp_path: Path) -> None:  # noqa: F811
    blob = str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8))
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    server = FakeOllama()
    try:
        ollama = tree.exe("bin/ollama")
        serve_pid = tree.start([[ollama, "runner", "--model", blob, "--port", "54107"],
                                [ollama, "runner", "--model", blob, "--port", "54108"]])  # fmt: skip
        server.models = [ps_entry(GEMMA, expires_at=utc(-40))]
        server.modelfiles = {GEMMA: modelfile_for(GEMMA, blob)}
        w = World(tree, server, serve_pid, tmp_path, {GEMMA: blob})
        first, second = tree.pid_of("--port", "54107"), tree.pid_of("--port", "54108")
        plan = plan_kill(w.ctx(), GEMMA)
        pids = ", ".join(str(p) for p in plan.candidates)
        assert sorted(plan.candidates) == sorted([first, second]) and plan.pid is None and not plan.ok
        assert plan.refusal == f"2 runners serve {GEMMA} (pids {pids}); choose one with --pid"
        chosen = plan_kill(w.ctx(), GEMMA, pid=second)
        assert chosen.ok and chosen.pid == second and chosen.notes[-1] == f"2 runners serve this model (pids {pids})"
    finally:
        server.close()
        tree.close()


def test_an_mlx_runner_is_matched_by_the_model_name(pauser: Path, tmp_path: Path) -> None:  # noqa: F811
    """The MLX engine's runner takes a model name, not a blob path: matched by name."""
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    server = FakeOllama()
    try:
        ollama = tree.exe("bin/ollama")
        serve_pid = tree.start([[ollama, "runner", "--mlx-engine", "--model", "qwen3:0.6b", "--port", "54109"]])
        server.models = [ps_entry("qwen3:0.6b", expires_at=utc(-40))]
        w = World(tree, server, serve_pid, tmp_path, {})
        plan = plan_kill(_ctx_without_manifest(w), "qwen3:0.6b")  # type: ignore[arg-type]
        assert plan.ok and plan.pid == tree.pid_of("--port", "54109") and plan.blob_path is None
    finally:
        server.close()
        tree.close()


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    return list(psutil.Process(pid).cmdline())
