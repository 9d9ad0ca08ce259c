"""Recover: the escalation the write-up asked for, as one action with its sub-steps.

evict (keep_alive 0) -> wait the grace period -> still Stopping: hard-kill the verified runner
-> confirm it is gone -> optionally a tiny request that a new runner must answer. One audit row
whose detail lists every step.
"""

from __future__ import annotations

from typing import Any

from oasis_ops.actions.audit import audit
from oasis_ops.actions.context import ActionContext
from oasis_ops.actions.evict import evict
from oasis_ops.actions.kill import hard_kill
from oasis_ops.actions.result import ActionResult, Stopwatch


def _step(result: ActionResult) -> dict[str, Any]:
    return {
        "action": result.action,
        "outcome": result.outcome,
        "message": result.message,
        "duration_ms": round(result.duration_ms, 1),
        "detail": result.detail,
    }


def recover(ctx: ActionContext, model: str, *, grace_s: float | None = None, ping: bool = True) -> ActionResult:
    watch = Stopwatch()
    params = {"grace_s": grace_s, "ping": ping}
    steps: list[dict[str, Any]] = []

    def finish(outcome: str, message: str) -> ActionResult:
        result = ActionResult("recover", model, outcome, message, {"steps": steps}, watch.ms, params, ctx.requested_by)
        return audit(ctx.sidecar, result)

    if ctx.sidecar is None:
        return finish("refused", "refusing to recover (it may kill a process) without an audit log: pass --db")
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
    killed = hard_kill(ctx, model, verify_respawn=ping, record=False)
    steps.append(_step(killed))
    if killed.outcome == "done":
        return finish("done", f"soft evict was stuck; {killed.message}")
    if killed.outcome == "refused":
        return finish("stuck", f"{model} is stuck and the hard-kill was refused: {killed.message}")
    return finish(killed.outcome, killed.message)
