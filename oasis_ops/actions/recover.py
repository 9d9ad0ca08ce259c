"""Recover: the escalation the write-up asked for, as one action with its sub-steps.

evict (keep_alive 0) -> wait the grace period -> still Stopping: hard-kill the verified runner
-> confirm it is gone -> optionally a tiny request that a new runner must answer. One audit row
whose detail lists every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oasis_ops.actions.audit import audit
from oasis_ops.actions.context import ActionContext
from oasis_ops.actions.evict import evict
from oasis_ops.actions.kill import hard_kill
from oasis_ops.actions.result import ActionResult, Stopwatch
from oasis_ops.control.recovery import recovery_in_progress


def _step(result: ActionResult) -> dict[str, Any]:
    return {
        "action": result.action,
        "outcome": result.outcome,
        "message": result.message,
        "duration_ms": round(result.duration_ms, 1),
        "detail": result.detail,
    }


def recover(
    ctx: ActionContext,
    model: str,
    *,
    grace_s: float | None = None,
    ping: bool = True,
    pid: int | None = None,
    create_time: float | None = None,
) -> ActionResult:
    """Evict, escalate to a hard-kill when stuck; one audit row. An unexpected error (or Ctrl-C)
    is audited too, with the hard-kill's progress (`signalled_at` when a signal was sent);
    KeyboardInterrupt / SystemExit are re-raised after the row is written. `pid`/`create_time`
    pin the escalation to the runner a person confirmed (a different runner is then refused)."""
    watch = Stopwatch()
    params = {"grace_s": grace_s, "ping": ping, "pid": pid}
    steps: list[dict[str, Any]] = []

    def finish(outcome: str, message: str, **extra: Any) -> ActionResult:
        detail = {"steps": steps, **extra}
        result = ActionResult("recover", model, outcome, message, detail, watch.ms, params, ctx.requested_by)
        return audit(ctx.sidecar, result)

    if ctx.sidecar is None:
        return finish("refused", "refusing to recover (it may kill a process) without an audit log: pass --db")
    kill_progress: dict[str, Any] = {}  # filled by hard_kill even if it raises
    try:
        # a proxy in front of Ollama holds new requests until this ends (control/recovery.py)
        with recovery_in_progress(ctx.control.dir if ctx.control else None, "recover", model, ctx.requested_by):
            return _recover(ctx, model, grace_s, ping, steps, finish, kill_progress, pid, create_time)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if kill_progress and not any(step["action"] == "hard_kill" for step in steps):
            steps.append({"action": "hard_kill", "outcome": "done" if "gone_after_ms" in kill_progress else "failed",
                          "message": error, "detail": kill_progress})  # fmt: skip
        signalled_at = kill_progress.get("signalled_at")
        pid = (kill_progress.get("plan") or {}).get("pid", pid)
        outcome = "failed"
        if "gone_after_ms" in kill_progress:  # only the respawn check after a confirmed kill broke
            outcome = "done"
            message = f"recover {model}: killed runner pid {pid} (confirmed gone), but the respawn check failed: {error}"
        elif signalled_at:
            message = f"recover {model}: SIGKILL was sent to pid {pid} at {signalled_at}, then {error}"
        elif kill_progress.get("error_stage") == "signalling":
            message = f"recover {model}: {error} while verifying pid {pid}; SIGKILL may not have been sent"
        else:
            message = f"recover {model}: {error}; no SIGKILL was sent"
        result = finish(outcome, message, error=error, signalled_at=signalled_at)
        if not isinstance(exc, Exception):
            raise
        return result


def _recover(
    ctx: ActionContext,
    model: str,
    grace_s: float | None,
    ping: bool,
    steps: list[dict[str, Any]],
    finish: Callable[..., ActionResult],
    kill_progress: dict[str, Any],
    pid: int | None = None,
    create_time: float | None = None,
) -> ActionResult:
    evicted = evict(ctx, model, grace_s, record=False)
    steps.append(_step(evicted))
    if evicted.outcome == "done":
        if not ping or evicted.detail.get("state_before") is None:
            return finish("done", evicted.message)
        answer = ctx.client.ping_generate(model, timeout_s=ctx.respawn_timeout_s)
        steps.append({"action": "ping", "outcome": "done" if answer.ok else "failed", "message": answer.detail,
                      "duration_ms": round(answer.elapsed_s * 1000, 1)})  # fmt: skip
        if not answer.ok:
            return finish("failed", f"{evicted.message}, but a test request failed: {answer.detail}")
        return finish("done", f"{evicted.message}; a test request answered in {answer.elapsed_s:.2f} s")
    if evicted.outcome != "stuck":
        return finish(evicted.outcome, evicted.message)
    killed = hard_kill(ctx, model, pid, create_time=create_time, verify_respawn=ping, record=False, progress=kill_progress,
                       hold_requests=False)
    steps.append(_step(killed))
    if killed.outcome == "done":
        return finish("done", f"soft evict was stuck; {killed.message}")
    if killed.outcome == "refused":
        return finish("stuck", f"{model} is stuck and the hard-kill was refused: {killed.message}")
    return finish(killed.outcome, killed.message)
