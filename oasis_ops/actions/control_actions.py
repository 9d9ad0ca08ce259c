"""Concurrency, pause and resume over the control channel (DESIGN.md Contract 3).

Requested versus applied: the change is done only when the runner's state.json acknowledges
the version we wrote, within settings.control_ack_timeout_s; otherwise `not_acknowledged`
(exit 3) says what was seen. The request itself stands in control.json either way: a runner
that comes back applies it.
"""

from __future__ import annotations

from typing import Any

from oasis_ops.actions.audit import audit
from oasis_ops.actions.context import ActionContext
from oasis_ops.actions.result import ActionResult, Stopwatch
from oasis_ops.control import RunnerState
from oasis_ops.errors import NotAcknowledged, OasisOpsError


def _state_detail(state: RunnerState | None) -> dict[str, Any]:
    if state is None:
        return {"runner": None}
    return {
        "runner_pid": state.pid,
        "applied_version": state.applied_version,
        "applied_max_concurrency": state.max_concurrency,
        "applied_paused": state.paused,
        "in_flight": state.in_flight,
        "heartbeat_age_s": None if state.heartbeat_age_s is None else round(state.heartbeat_age_s, 2),
        "runner_alive": state.alive,
    }


def _control(
    ctx: ActionContext, action: str, params: dict[str, Any], *, max_concurrency: int | None = None,
    paused: bool | None = None, done_message: str, reason: str | None = None,
) -> ActionResult:  # fmt: skip
    watch = Stopwatch()

    def finish(outcome: str, message: str, detail: dict[str, Any]) -> ActionResult:
        if reason:
            detail["trigger"] = reason
        return audit(ctx.sidecar, ActionResult(action, "runner", outcome, message, detail, watch.ms, params, ctx.requested_by))

    if ctx.control is None:
        return finish("refused", f"{action}: no control directory (pass --db, or set `control_dir`)", {})
    try:
        version = ctx.control.request(max_concurrency=max_concurrency, paused=paused, requested_by=ctx.requested_by)
    except OasisOpsError as exc:
        return finish("refused", f"{action}: {exc.message}", {})
    detail: dict[str, Any] = {"requested_version": version, "control_dir": str(ctx.control.dir)}
    try:
        state = ctx.control.wait_applied(version, timeout_s=float(ctx.settings.control_ack_timeout_s))
    except NotAcknowledged as exc:
        detail.update(_state_detail(ctx.control.runner_state()))
        return finish("not_acknowledged", f"{action}: requested (version {version}), {exc}", detail)
    detail.update(_state_detail(state))
    return finish("done", done_message + f" (runner pid {state.pid} applied version {state.applied_version})", detail)


def set_concurrency(ctx: ActionContext, n: int, *, reason: str | None = None) -> ActionResult:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        watch = Stopwatch()
        result = ActionResult("concurrency", "runner", "refused", f"concurrency must be an integer >= 1, got {n!r}",
                              {}, watch.ms, {"max_concurrency": n}, ctx.requested_by)  # fmt: skip
        return audit(ctx.sidecar, result)
    return _control(ctx, "concurrency", {"max_concurrency": n}, max_concurrency=n,
                    done_message=f"max concurrency is now {n}", reason=reason)  # fmt: skip


def pause(ctx: ActionContext, *, reason: str | None = None) -> ActionResult:
    return _control(ctx, "pause", {"paused": True}, paused=True, done_message="runner paused (in-flight trials finish)",
                    reason=reason)  # fmt: skip


def resume(ctx: ActionContext, *, reason: str | None = None) -> ActionResult:
    return _control(ctx, "resume", {"paused": False}, paused=False, done_message="runner resumed", reason=reason)
