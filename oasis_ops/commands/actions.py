"""Recovery commands: evict, kill-runner, recover, concurrency, pause, resume, watchdog.

Each takes `--db PATH` (its sidecar gets the audit row; its control directory is used) and
`--json` (the ActionResult as one JSON object). Exit codes: 0 done (or dry run), 1 failed,
refused or cancelled (y/N answered no), 2 bad usage, 3 not acknowledged or still stuck.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from oasis_ops.actions import (
    ActionContext,
    ActionResult,
    audit,
    cancelled,
    evict,
    hard_kill,
    pause,
    plan_kill,
    recover,
    resume,
    set_concurrency,
)
from oasis_ops.commands import number_in, settings_from
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (use `pause` to stop the runner), got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="trial database: its sidecar gets the audit row, its control directory is used")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evict", help="soft-unload a model (keep_alive 0); exit 3 when it stays Stopping")
    p.add_argument("model")
    p.add_argument("--grace", type=number_in(float, 0, 3600), help="seconds it may stay Stopping (default: evict_grace_s)")
    _common(p)
    p.set_defaults(func=run_evict)

    p = sub.add_parser("kill-runner", help="SIGKILL the one verified runner process of a model")
    p.add_argument("model")
    p.add_argument("--pid", type=number_in(int, 1, 2**31 - 1), help="the runner pid when several serve the model (still fully verified)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show what would be killed; kill nothing")
    p.add_argument("--respawn", action="store_true", help="afterwards, send a tiny request and check a new runner answers")
    _common(p)
    p.set_defaults(func=run_kill)

    p = sub.add_parser("recover", help="evict, wait, hard-kill if still Stopping, check a new runner answers")
    p.add_argument("model")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--grace", type=number_in(float, 0, 3600), help="seconds the evict may stay Stopping (default: evict_grace_s)")
    p.add_argument("--no-ping", action="store_true", help="skip the test request at the end")
    _common(p)
    p.set_defaults(func=run_recover)

    p = sub.add_parser("concurrency", help="set the live runner's max concurrency (control channel)")
    p.add_argument("n", type=_positive_int)
    _common(p)
    p.set_defaults(func=run_concurrency)

    p = sub.add_parser("pause", help="pause the live runner (in-flight trials finish)")
    _common(p)
    p.set_defaults(func=run_pause)

    p = sub.add_parser("resume", help="resume the live runner")
    _common(p)
    p.set_defaults(func=run_resume)

    p = sub.add_parser("watchdog", help="run the watchdog headless (opt-in automatic recovery)")
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--on", action="store_true", help="switch the watchdog on (persisted), then run it")
    switch.add_argument("--off", action="store_true", help="switch the watchdog off (persisted) and exit")
    p.add_argument("--dry-run", action="store_true", help="with --on: only log what it would do")
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    p.add_argument("--interval", type=number_in(float, 0.01, 3600), help="seconds between ticks (default: sample_interval_s)")
    _common(p)
    p.set_defaults(func=run_watchdog)


def _context(args: argparse.Namespace) -> ActionContext:
    settings = settings_from(args, db=args.db)
    return ActionContext.from_settings(settings, db=args.db, requested_by="cli")


def report(result: ActionResult, as_json: bool) -> int:
    if as_json:
        print(json_text(result.as_dict()))
    elif result.ok:
        print(result.message)
    else:
        print(f"oasis-ops: {result.outcome}: {result.message}", file=sys.stderr)
    if result.detail.get("audit_error"):
        print(f"oasis-ops: warning: {result.detail['audit_error']}", file=sys.stderr)
    return result.exit_code


def _confirm(ctx: ActionContext, action: str, model: str, lines: list[str], params: dict[str, Any]) -> ActionResult | None:
    """Ask y/N on a TTY; None when confirmed, else the (audited) result: `cancelled` when the
    user answered anything but y (or Ctrl-D), `refused` when there is no terminal to ask on."""
    for line in lines:
        print(line)
    if not sys.stdin.isatty():
        message = "confirmation needed and no terminal to ask on: rerun with --yes"
        return audit(ctx.sidecar, ActionResult(action, model, "refused", message, {}, 0.0, params, ctx.requested_by))
    try:
        answer = input(f"{action} {model}? [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer in ("y", "yes"):
        return None
    said = f"answered {answer!r}" if answer else "no answer"
    return audit(ctx.sidecar, cancelled(action, model, f"{said} at the y/N prompt: nothing was done", params,
                                        ctx.requested_by))  # fmt: skip


def run_evict(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        return report(evict(ctx, args.model, args.grace), args.json)
    finally:
        ctx.close()


def run_kill(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        if args.dry_run or args.yes:
            result = hard_kill(ctx, args.model, args.pid, verify_respawn=args.respawn, dry_run=args.dry_run)
            if args.dry_run and not args.json:
                print("\n".join(result_plan_lines(ctx, result)))
            return report(result, args.json)
        plan = plan_kill(ctx, args.model, args.pid)
        if not plan.ok:  # nothing to confirm: hard_kill refuses (and audits) with the reason
            return report(hard_kill(ctx, args.model, args.pid), args.json)
        params = {"pid": plan.pid, "create_time": plan.create_time}
        refused = _confirm(ctx, "hard_kill", args.model, plan.describe(), params)
        if refused is not None:
            return report(refused, args.json)
        # exactly the process that was shown and confirmed: same pid and create time
        result = hard_kill(ctx, args.model, plan.pid, create_time=plan.create_time, verify_respawn=args.respawn)
        return report(result, args.json)
    finally:
        ctx.close()


def result_plan_lines(ctx: ActionContext, result: ActionResult) -> list[str]:
    plan = result.detail.get("plan") or {}
    if not plan.get("pid") or plan.get("refusal"):
        return []
    return [f"would SIGKILL pid {plan['pid']}: {' '.join(plan.get('cmdline') or [])}"]


def run_recover(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        if not args.yes:
            plan = plan_kill(ctx, args.model)
            lines = [f"Recover {args.model}: soft evict (keep_alive 0); if it stays Stopping, hard-kill:"]
            lines += ["  " + line for line in plan.describe()]
            refused = _confirm(ctx, "recover", args.model, lines, {"grace_s": args.grace})
            if refused is not None:
                return report(refused, args.json)
            # Escalate only against the runner the user just confirmed.
            return report(recover(ctx, args.model, grace_s=args.grace, ping=not args.no_ping,
                                  pid=plan.pid, create_time=plan.create_time), args.json)  # fmt: skip
        return report(recover(ctx, args.model, grace_s=args.grace, ping=not args.no_ping), args.json)
    finally:
        ctx.close()


def run_concurrency(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        return report(set_concurrency(ctx, args.n), args.json)
    finally:
        ctx.close()


def run_pause(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        return report(pause(ctx), args.json)
    finally:
        ctx.close()


def run_resume(args: argparse.Namespace) -> int:
    ctx = _context(args)
    try:
        return report(resume(ctx), args.json)
    finally:
        ctx.close()


def run_watchdog(args: argparse.Namespace) -> int:
    from oasis_ops.watchdog import Watchdog, host_probe_for, write_switch

    if args.dry_run and not args.on:
        raise UsageError("--dry-run goes with --on (the switch decides the mode)")
    settings = settings_from(args, db=args.db)
    watchdog = Watchdog.for_settings(settings, args.db)
    watchdog.host_probe = host_probe_for(settings)
    try:
        if args.on or args.off:
            switched = write_switch(watchdog.ctx.as_requester("cli"), enabled=bool(args.on), dry_run=bool(args.dry_run))
            code = report(switched, args.json)
            if args.off or code:
                return code
        interval = float(args.interval or settings.sample_interval_s)
        if interval <= 0:
            raise UsageError(f"--interval must be positive, got {interval:g}")
        print(f"oasis-ops watchdog: {watchdog.switch().describe()}; policy {json.dumps(watchdog.policy.as_dict())}",
              flush=True)  # fmt: skip
        worst = 0
        last_notes: list[str] = []
        while True:
            for result in watchdog.tick():
                worst = max(worst, report(result, args.json))
            if watchdog.notes != last_notes and not args.json:
                for note in watchdog.notes:
                    print(f"watchdog: {note}", flush=True)
                last_notes = list(watchdog.notes)
            if args.once:
                return worst
            time.sleep(interval)
    finally:
        watchdog.close()
        watchdog.ctx.close()
