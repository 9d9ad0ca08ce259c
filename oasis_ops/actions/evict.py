"""Soft evict: POST keep_alive 0, then watch /api/ps until the model is gone.

`keep_alive: 0` only asks; the unload waits for every in-flight request on that runner, so with
a wedged request the model stays "Stopping" for ever (the incident). Still Stopping after the
grace period (settings.evict_grace_s, counted from when the model began Stopping, so a model
that has been stuck for minutes is reported at once) means stuck: outcome `stuck`, exit 3, with
the hard-kill it escalates to.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from oasis_ops.actions.audit import audit
from oasis_ops.actions.context import ActionContext
from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.actions.kill import find_status, plan_kill
from oasis_ops.actions.result import ActionResult, Stopwatch
from oasis_ops.errors import OllamaError
from oasis_ops.fmt import fmt_duration
from oasis_ops.probes.ollama import ModelStatus

MIN_OBSERVE_S = 1.0  # even a long-stuck model gets this long to leave after a fresh request


def evict(ctx: ActionContext, model: str, grace_s: float | None = None, *, record: bool = True) -> ActionResult:
    """Ask Ollama to unload `model` and report done (gone), stuck (still there) or failed."""
    watch = Stopwatch()
    grace = float(ctx.settings.evict_grace_s if grace_s is None else grace_s)
    params = {"grace_s": grace}

    def finish(outcome: str, message: str, detail: dict[str, Any]) -> ActionResult:
        result = ActionResult("evict", model, outcome, message, detail, watch.ms, params, ctx.requested_by)
        return audit(ctx.sidecar, result) if record else result

    try:
        before = find_status(ctx.client.ps(), model)
    except OllamaError as exc:
        return finish("failed", f"evict {model}: {exc.message}", {})
    detail: dict[str, Any] = {"state_before": before.state if before else None}
    if before is None:
        return finish("done", f"{model} is not loaded: nothing to evict", detail)
    try:
        ctx.client.unload(model)
    except OllamaError as exc:
        return finish("failed", f"evict {model}: the unload request failed: {exc.message}", detail)
    already = 0.0
    if before.state == "stopping" and before.stopping_since is not None:
        # a harness that keeps re-sending keep_alive 0 restarts expires_at: ask the sampler too
        since = min(before.stopping_since, episode_start_from_sidecar(ctx.sidecar, model) or before.stopping_since)
        already = max(0.0, (datetime.now(UTC) - since).total_seconds())
        detail["stopping_since"] = since.isoformat()
    wait_s = max(min(MIN_OBSERVE_S, grace), grace - already)
    detail["waited_up_to_s"] = round(wait_s, 2)
    deadline = time.monotonic() + wait_s
    current: ModelStatus | None = before
    last_error: str | None = None
    seen = False
    while True:
        try:
            current = find_status(ctx.client.ps(), model)
            seen = True
            last_error = None
        except OllamaError as exc:
            last_error = exc.message
        if seen and last_error is None and current is None:
            detail["gone_after_s"] = round(watch.ms / 1000, 2)
            return finish("done", f"{model} unloaded after {watch.ms / 1000:.1f} s", detail)
        if time.monotonic() >= deadline:
            break
        ctx.sleep(min(ctx.poll_interval_s, max(0.0, deadline - time.monotonic())))
    if not seen:
        return finish("failed", f"evict {model}: cannot watch /api/ps: {last_error}", detail)
    assert current is not None
    detail["state_after"] = current.state
    stopping_for = current.stopping_for_s
    if current.state == "stopping" and "stopping_since" in detail:
        stopping_for = (datetime.now(UTC) - datetime.fromisoformat(detail["stopping_since"])).total_seconds()
    detail["stopping_for_s"] = stopping_for
    plan = plan_kill(ctx, model)
    detail["escalation"] = {
        "action": "hard_kill",
        "command": f"oasis-ops kill-runner {model}" + (f" --db {ctx.db}" if ctx.db else ""),
        "plan": plan.as_dict(),
    }
    if current.state == "stopping":
        message = (f"{model} is still Stopping after {fmt_duration(stopping_for)}: a request on its runner "
                   f"never finishes; escalate with a hard-kill (`oasis-ops kill-runner {model}`) or Recover")  # fmt: skip
    else:
        message = (f"{model} is still loaded {grace:g} s after the unload request (new requests keep reusing it); "
                   "pause the runner first, or hard-kill")  # fmt: skip
    return finish("stuck", message, detail)
