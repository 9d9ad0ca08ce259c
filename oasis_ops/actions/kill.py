"""Hard-kill: SIGKILL the one runner process serving a model, verified per DESIGN.md's invariants.

The target is found by discovery (children of the current `ollama serve` whose `--model` is the
model's weights blob) and identified by (pid, create_time). Before the signal, on a fresh
process list, it must still be: the same (pid, create_time) (a reused PID is refused); a runner
command line (strict argv matching: never `ollama serve`, never text that merely mentions
"ollama runner"); a child of the current `ollama serve`; owned by the serve's user and by ours;
not our own process, an ancestor, or a direct child. The signal goes through the verified
psutil.Process object (which checks PID reuse once more), never a name match.

Several candidates or none: refused (say so, kill nothing) unless a PID is given, which is then
verified exactly like a discovered one.
"""

from __future__ import annotations

import getpass
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

from oasis_ops.actions.audit import audit
from oasis_ops.actions.context import ActionContext
from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.actions.result import ActionResult, Stopwatch
from oasis_ops.control.recovery import recovery_in_progress
from oasis_ops.errors import OllamaError, ProcessRefused, ProcessVanished
from oasis_ops.fmt import fmt_duration
from oasis_ops.probes.host import human_bytes
from oasis_ops.probes.ollama import ModelStatus
from oasis_ops.probes.processes import (
    ProcessRecord,
    RunnerProcess,
    blob_from_manifest,
    find_ollama_tree,
    match_runner,
    own_lineage,
    verify_runner,
)

CREATE_TIME_TOLERANCE_S = 0.01
RESPAWN_ATTEMPTS = 4


def own_tree(pid: int | None = None) -> set[int]:
    """Our pid, its ancestors and its direct children: never a kill target.

    Deeper descendants are allowed on purpose: a test or `oasis-ops demo` may start the Ollama
    server (or its emulator) as our child, and its runners are then our grandchildren; they are
    still verified as children of the current `ollama serve`.
    """
    pid = os.getpid() if pid is None else pid
    protected = own_lineage(pid)
    try:
        protected |= {child.pid for child in psutil.Process(pid).children()}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return protected


def our_username() -> str:
    try:
        return str(psutil.Process().username())
    except (psutil.Error, KeyError):
        return getpass.getuser()




@dataclass(frozen=True)
class KillPlan:
    """Exactly what a hard-kill would signal, or why it will not (refusal)."""

    model: str
    pid: int | None
    create_time: float | None
    cmdline: tuple[str, ...] = ()
    username: str | None = None
    rss_bytes: int | None = None
    cpu_percent: float | None = None
    serve_pid: int | None = None
    blob_path: str | None = None
    state: str | None = None  # loaded | stopping | None (not in /api/ps, or Ollama unreachable)
    stopping_for_s: float | None = None
    stopping_since: datetime | None = None
    candidates: tuple[int, ...] = ()
    refusal: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.refusal is None and self.pid is not None and self.create_time is not None

    @property
    def command_line(self) -> str:
        return " ".join(self.cmdline)

    def describe(self) -> list[str]:
        """Lines for the CLI prompt and the confirmation dialog."""
        if not self.ok:
            return [f"Will NOT kill anything: {self.refusal}", *self.notes]
        if self.state == "stopping":
            state = f"Stopping for {fmt_duration(self.stopping_for_s)}"
        else:
            state = "not listed by /api/ps" if self.state is None else str(self.state)
        return [
            f"SIGKILL pid {self.pid}: the runner serving {self.model}",
            f"command line: {self.command_line}",
            f"RSS: {human_bytes(self.rss_bytes)}"
            + (f", CPU: {self.cpu_percent:.0f}%" if self.cpu_percent is not None else ""),
            f"model state: {state}",
            f"parent: ollama serve pid {self.serve_pid}; user: {self.username}",
            *self.notes,
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pid": self.pid,
            "create_time": self.create_time,
            "cmdline": list(self.cmdline),
            "username": self.username,
            "rss_bytes": self.rss_bytes,
            "cpu_percent": self.cpu_percent,
            "serve_pid": self.serve_pid,
            "blob_path": self.blob_path,
            "state": self.state,
            "stopping_for_s": self.stopping_for_s,
            "stopping_since": self.stopping_since.isoformat() if self.stopping_since else None,
            "candidates": list(self.candidates),
            "refusal": self.refusal,
            "notes": list(self.notes),
        }


def find_status(statuses: list[ModelStatus], model: str) -> ModelStatus | None:
    names = {model, model + ":latest"} if ":" not in model.rsplit("/", 1)[-1] else {model}
    return next((s for s in statuses if s.name in names or s.model in names), None)


def resolve_blob(ctx: ActionContext, model: str, notes: list[str]) -> tuple[str | None, str | None]:
    """The weights blob, from the local manifest first, else /api/show's FROM line: (blob, None),
    or (None, why it is unknown: which sources were tried and how they failed)."""
    blob = blob_from_manifest(ctx.models_dir, model)
    if blob is not None:
        return blob, None
    no_manifest = f"no manifest under {ctx.models_dir}"
    try:
        paths = ctx.client.show(model).get("blob_paths") or []
    except OllamaError as exc:
        notes.append(f"cannot resolve the model's weights blob: {exc.message}")
        return None, f"{no_manifest}, /api/show failed: {exc.message}"
    if not paths:
        return None, f"{no_manifest}, /api/show names no weights blob"
    return str(paths[0]), None


def verify_target(
    ctx: ActionContext, records: list[ProcessRecord], pid: int, create_time: float, blob: str | None
) -> RunnerProcess:
    """Every invariant of a kill target; raises ProcessRefused / ProcessVanished with the reason."""
    me_pid = os.getpid()
    if pid == me_pid:
        raise ProcessRefused(f"pid {pid} is this process")
    if pid in own_lineage(me_pid):
        raise ProcessRefused(f"pid {pid} is a parent of this process")
    if pid in own_tree(me_pid):
        raise ProcessRefused(f"pid {pid} is a child of this process")
    runner = verify_runner(
        records, pid, create_time, serve_pid=ctx.current_serve_pid(), expected_blob=blob, protected=set()
    )
    owner, me = runner.record.username, our_username()
    if owner is None:
        raise ProcessRefused(f"pid {pid}: its owner cannot be read, so it cannot be verified")
    if owner != me:
        raise ProcessRefused(f"pid {pid} belongs to {owner}, not to us ({me})")
    return runner


def plan_kill(ctx: ActionContext, model: str, pid: int | None = None, create_time: float | None = None) -> KillPlan:
    """Find and verify the runner of `model` (or check the given pid). Never signals anything.

    `create_time` pins the identity seen earlier (the one a user confirmed, or the watchdog's
    probe): a PID whose current process started at another time is refused as reused.
    """
    notes: list[str] = []
    status: ModelStatus | None = None
    try:
        status = find_status(ctx.client.ps(), model)
    except OllamaError as exc:
        notes.append(f"/api/ps failed: {exc.message}")
    blob, blob_unknown = resolve_blob(ctx, model, notes)
    records = list(ctx.processes())
    tree = find_ollama_tree(records, serve_pid=ctx.current_serve_pid())
    notes.extend(tree.notes)
    names = [model] + ([status.name, status.model] if status else [])
    match = match_runner(tree, [blob] if blob else [], names)
    candidates = tuple(rp.pid for rp in match.candidates)
    stopping_since = status.stopping_since if status else None
    stopping_for_s = status.stopping_for_s if status else None
    if stopping_since is not None:  # the episode, not just the latest keep_alive 0
        episode = episode_start_from_sidecar(ctx.sidecar, model)
        if episode is not None and episode < stopping_since:
            stopping_since = episode
            stopping_for_s = (datetime.now(UTC) - episode).total_seconds()
    base: dict[str, Any] = {
        "model": model,
        "serve_pid": tree.serve.pid if tree.serve else None,
        "blob_path": blob,
        "state": status.state if status else None,
        "stopping_for_s": stopping_for_s,
        "stopping_since": stopping_since,
        "candidates": candidates,
    }

    def refused(reason: str, **extra: Any) -> KillPlan:
        return KillPlan(pid=pid, create_time=extra.pop("create_time", create_time),
                        refusal=reason, notes=tuple(notes), **base, **extra)  # fmt: skip

    if pid is None:
        if tree.serve is None:
            return refused("no `ollama serve` process is visible on this machine")
        if not candidates:
            why = "" if status else f" ({model} is not loaded according to /api/ps)"
            if blob is None and status is not None:
                why = " (its weights blob is unknown, so no runner can be matched)"
            return refused(f"no runner process serves {model}{why}")
        if len(candidates) > 1:
            pids = ", ".join(str(p) for p in candidates)
            return refused(f"{len(candidates)} runners serve {model} (pids {pids}); choose one with --pid")
        pid = candidates[0]
    record = next((r for r in records if r.pid == pid), None)
    if record is None:
        return refused(f"pid {pid} does not exist")
    if create_time is not None and abs(record.create_time - create_time) > CREATE_TIME_TOLERANCE_S:
        return refused(
            f"pid {pid} was reused: it now belongs to a process started at {record.create_time:.2f}, "
            f"not the one seen at {create_time:.2f}",
            create_time=create_time,
        )
    details: dict[str, Any] = {"cmdline": record.cmdline, "username": record.username, "rss_bytes": record.rss_bytes,
               "cpu_percent": record.cpu_percent}  # fmt: skip
    try:
        verify_target(ctx, records, pid, record.create_time, blob)
    except (ProcessRefused, ProcessVanished) as exc:
        return refused(exc.message, create_time=record.create_time, **details)
    if blob is None and pid not in candidates:
        # verify_target checks the blob only when it is known: without it, a given PID could be
        # another model's runner (e.g. Ollama down and no local manifest).
        return refused(f"cannot tell which model pid {pid} serves: the blob of {model} is unknown ({blob_unknown})",
                       create_time=record.create_time, **details)  # fmt: skip
    rss, cpu = _metrics(pid)
    details.update(rss_bytes=rss if rss is not None else record.rss_bytes, cpu_percent=cpu)
    if len(candidates) > 1:
        notes.append(f"{len(candidates)} runners serve this model (pids {', '.join(map(str, candidates))})")
    return KillPlan(pid=pid, create_time=record.create_time, notes=tuple(notes), **base, **details)


def _metrics(pid: int) -> tuple[int | None, float | None]:
    """RSS and a short CPU % reading of the target (for the confirmation: is it busy?)."""
    try:
        proc = psutil.Process(pid)
        proc.cpu_percent(None)
        time.sleep(0.05)
        return int(proc.memory_info().rss), float(proc.cpu_percent(None))
    except psutil.Error:
        return None, None


def is_dead(pid: int, create_time: float) -> bool:
    """Gone from the process table, replaced by another process, or a zombie (never ours:
    our children are refused targets, so a zombie is its parent's business)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return True
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def signal_verified(ctx: ActionContext, plan: KillPlan) -> None:
    """Re-verify on a fresh process list immediately before the signal, then SIGKILL exactly
    that process object. Raises ProcessRefused / ProcessVanished."""
    assert plan.pid is not None and plan.create_time is not None
    try:
        proc = psutil.Process(plan.pid)
        started = proc.create_time()
    except psutil.NoSuchProcess:
        raise ProcessVanished(f"pid {plan.pid} exited before the signal; nothing was killed") from None
    if abs(started - plan.create_time) > CREATE_TIME_TOLERANCE_S:
        raise ProcessRefused(f"pid {plan.pid} was reused (create time {started:.2f} != {plan.create_time:.2f})")
    verify_target(ctx, list(ctx.processes()), plan.pid, plan.create_time, plan.blob_path)
    try:
        proc.send_signal(signal.SIGKILL)  # psutil refuses if the PID was reused meanwhile
    except psutil.NoSuchProcess:
        raise ProcessVanished(f"pid {plan.pid} exited before the signal; nothing was killed") from None
    except psutil.AccessDenied:
        raise ProcessRefused(f"not allowed to signal pid {plan.pid}") from None


def wait_dead(ctx: ActionContext, pid: int, create_time: float) -> float | None:
    """Seconds until the process was gone, or None if still alive after the timeout."""
    started = time.monotonic()
    deadline = started + ctx.kill_confirm_timeout_s
    while True:
        if is_dead(pid, create_time):
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def check_respawn(ctx: ActionContext, model: str, old_pid: int) -> dict[str, Any]:
    """Send a tiny request; a new runner (another pid) must answer it. Requests that were
    queued on the killed runner fail ("model runner has unexpectedly stopped"), and so may one
    sent in the same instant: a fast failure is retried a few times."""
    started = time.monotonic()
    deadline = started + ctx.respawn_timeout_s
    attempts = 0
    while True:
        attempts += 1
        ping = ctx.client.ping_generate(model, timeout_s=max(1.0, deadline - time.monotonic()))
        if ping.ok or attempts >= RESPAWN_ATTEMPTS or time.monotonic() >= deadline:
            break
        ctx.sleep(0.2)
    elapsed = time.monotonic() - started
    info: dict[str, Any] = {"ok": False, "ping_ok": ping.ok, "ping_s": round(elapsed, 3), "ping": ping.detail,
                            "attempts": attempts}  # fmt: skip
    if not ping.ok:
        return info
    plan = plan_kill(ctx, model)
    info["new_runner_pid"] = plan.pid if plan.ok else None
    info["new_runner_create_time"] = plan.create_time if plan.ok else None
    if not plan.ok:
        info["note"] = plan.refusal
    info["ok"] = bool(plan.ok and plan.pid != old_pid)
    return info


def hard_kill(
    ctx: ActionContext,
    model: str,
    pid: int | None = None,
    *,
    create_time: float | None = None,
    verify_respawn: bool = False,
    dry_run: bool = False,
    record: bool = True,
    trigger: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
    hold_requests: bool = True,
) -> ActionResult:
    """SIGKILL the one verified runner of `model`; confirm it is gone; optionally check that a
    new runner answers. Audited (unless `record=False`: recover() audits its own single row).

    Any unexpected error (or Ctrl-C) is audited too, with `signalled_at` when the signal was
    already sent: a failure returns outcome `failed` (`done` when only the respawn check after a
    confirmed kill broke); KeyboardInterrupt / SystemExit are re-raised after the audit row.
    `progress` (a caller's dict) is filled as `detail` is, so a caller that audits its own row
    (recover) still knows what happened when this re-raises. From the signal on, a
    `recovery.json` marker in the control directory asks a proxy to hold new requests
    (`hold_requests=False`: the caller, recover, stands its own)."""
    watch = Stopwatch()
    params = {"pid": pid, "create_time": create_time, "verify_respawn": verify_respawn, "dry_run": dry_run}
    detail: dict[str, Any] = progress if progress is not None else {}

    def finish(outcome: str, message: str, detail: dict[str, Any]) -> ActionResult:
        result = ActionResult("hard_kill", model, outcome, message, detail, watch.ms, params, ctx.requested_by)
        return audit(ctx.sidecar, result) if record else result

    if record and ctx.sidecar is None:
        return finish("refused", "refusing to kill without an audit log: pass --db (or set `sidecar`)", detail)
    stage = "planning"  # planning -> signalling -> signalled -> confirmed -> respawn check
    try:
        plan = plan_kill(ctx, model, pid, create_time)
        detail["plan"] = plan.as_dict()
        if trigger:
            detail["trigger"] = trigger
        if not plan.ok:
            return finish("refused", f"hard-kill {model}: {plan.refusal}", detail)
        assert plan.pid is not None and plan.create_time is not None
        if dry_run:
            return finish("dry_run", f"dry run: would SIGKILL runner pid {plan.pid} of {model}", detail)
        # a proxy in front of Ollama holds new requests until this ends (control/recovery.py)
        with recovery_in_progress(ctx.control.dir if (hold_requests and ctx.control) else None, "hard_kill", model,
                                  ctx.requested_by):  # fmt: skip
            stage = "signalling"
            try:
                signal_verified(ctx, plan)
            except ProcessRefused as exc:
                return finish("refused", f"hard-kill {model}: {exc.message}", detail)
            except ProcessVanished as exc:
                return finish("failed", f"hard-kill {model}: {exc.message}", detail)
            detail["signalled_at"] = datetime.now(UTC).isoformat()
            stage = "signalled"
            gone_after = wait_dead(ctx, plan.pid, plan.create_time)
            if gone_after is None:
                return finish("failed", f"sent SIGKILL to pid {plan.pid} but it is still alive after "
                                        f"{ctx.kill_confirm_timeout_s:g} s", detail)  # fmt: skip
            detail["gone_after_ms"] = round(gone_after * 1000, 1)
            stage = "confirmed"
            message = f"killed runner pid {plan.pid} of {model} (gone after {gone_after * 1000:.0f} ms)"
            if verify_respawn:
                stage = "respawn check"
                respawn = check_respawn(ctx, model, plan.pid)
                detail["respawn"] = respawn
                if not respawn["ok"]:
                    why = respawn.get("note") or respawn.get("ping")
                    return finish("failed", f"{message}, but no new runner answered: {why}", detail)
                message += f"; new runner pid {respawn['new_runner_pid']} answered in {respawn['ping_s']:.2f} s"
            return finish("done", message, detail)
    except BaseException as exc:  # audit whatever happened, above all a signal already sent
        result = finish(*_interrupted(model, stage, detail, exc), detail)
        if not isinstance(exc, Exception):
            raise
        return result


def _interrupted(model: str, stage: str, detail: dict[str, Any], exc: BaseException) -> tuple[str, str]:
    """(outcome, message) for an unexpected error or interrupt during `stage` of a hard-kill."""
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail["error"] = error
    detail["error_stage"] = stage
    plan = detail.get("plan") or {}
    pid = plan.get("pid")
    if stage == "planning":
        return "failed", f"hard-kill {model}: {error} while planning; nothing was signalled"
    if stage == "signalling":
        return "failed", f"hard-kill {model}: {error} while verifying pid {pid}; SIGKILL may not have been sent"
    if stage == "signalled":
        return "failed", (f"sent SIGKILL to pid {pid} of {model} at {detail.get('signalled_at')}, "
                          f"but confirming it is gone failed: {error}")  # fmt: skip
    if stage == "confirmed":
        return "done", f"killed runner pid {pid} of {model}; then {error}"
    return "done", (f"killed runner pid {pid} of {model} (confirmed gone), but the respawn check failed: "
                    f"{error}; no new runner was verified")  # fmt: skip
