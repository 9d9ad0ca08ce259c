"""What a rule sees (Condition) and what the user gets (EarlyWarning)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oasis_ops.trials.records import stamp


def utc_of(seconds: float) -> datetime:
    """Epoch seconds (the rules' clock) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


KINDS = ("memory_exhaustion", "latency_drift", "stuck_stopping", "backlog", "vram_exhaustion")
WARN, CRITICAL = "warn", "critical"


@dataclass(frozen=True)
class Condition:
    """One rule's reading at one moment: the trouble it sees, with the numbers."""

    kind: str
    severity: str
    message: str
    evidence: dict[str, Any]
    action: str  # the recovery the CLI names: `concurrency 1`, `pause`, `recover MODEL`
    eta: datetime | None = None
    subject: str | None = None  # a model, for the per-model kinds


@dataclass
class EarlyWarning:
    """One warning episode: raised once (`at`), cleared once (`cleared_at`, None while active).

    `first_seen` is when its condition first held; it is raised `warn_min_duration_s` later if the
    condition held throughout. Message, evidence, eta and severity are the ones at raising time;
    `worst` is the highest severity the episode reached."""

    kind: str
    at: datetime
    severity: str
    message: str
    evidence: dict[str, Any]
    action: str
    eta: datetime | None
    first_seen: datetime
    subject: str | None = None
    cleared_at: datetime | None = None
    worst: str = WARN
    updates: int = 0
    latest: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": stamp(self.at),
            "kind": self.kind,
            "severity": self.severity,
            "eta": stamp(self.eta) if self.eta is not None else None,
            "message": self.message,
            "evidence": self.evidence,
            "action": self.action,
            "model": self.subject,
            "first_seen": stamp(self.first_seen),
            "cleared_at": stamp(self.cleared_at) if self.cleared_at is not None else None,
            "worst_severity": self.worst,
        }
