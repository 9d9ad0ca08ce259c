"""What every recovery action returns: an ActionResult, with one outcome and its exit code.

Outcomes and CLI exit codes (issue 5): done 0, dry_run 0, refused 1, cancelled 1, failed 1,
stuck 3, not_acknowledged 3. Bad usage (exit 2) never gets this far: it is a UsageError.

`refused` is oasis-ops saying no (nothing safe to do, no audit log, no terminal to confirm on);
`cancelled` is the user saying no (closed the confirmation dialog, pressed Cancel, answered the
CLI's y/N with anything but y). Neither does anything; both are audited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["done", "refused", "cancelled", "failed", "stuck", "not_acknowledged", "dry_run"]
OUTCOMES: tuple[str, ...] = ("done", "refused", "cancelled", "failed", "stuck", "not_acknowledged", "dry_run")
EXIT_CODES: dict[str, int] = {
    "done": 0,
    "dry_run": 0,
    "refused": 1,
    "cancelled": 1,
    "failed": 1,
    "stuck": 3,
    "not_acknowledged": 3,
}
REQUESTERS = ("cli", "ui", "watchdog")


@dataclass
class ActionResult:
    """One action attempt, as shown to the user and written to the audit log."""

    action: str  # evict | hard_kill | recover | concurrency | pause | resume | watchdog
    target: str | None  # a model name, or "runner" for control-channel actions
    outcome: str  # one of OUTCOMES
    message: str  # one line for people
    detail: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    requested_by: str = "cli"
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    audited: bool = False  # an audit row was written

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    @property
    def ok(self) -> bool:
        return self.outcome in ("done", "dry_run")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts.isoformat(),
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "params": self.params,
            "requested_by": self.requested_by,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 1),
            "audited": self.audited,
        }


class Stopwatch:
    """Monotonic elapsed milliseconds since creation (durations never follow wall-clock jumps)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


def cancelled(action: str, target: str | None, message: str, params: dict[str, Any] | None = None,
              requested_by: str = "cli") -> ActionResult:  # fmt: skip
    """The result of a confirmation the user declined: outcome `cancelled` (never `refused`)."""
    return ActionResult(action, target, "cancelled", message, {}, 0.0, dict(params or {}), requested_by)
