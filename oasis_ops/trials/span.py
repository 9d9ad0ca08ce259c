"""A run's start, end and duration: one definition, one display rule (issue 11, item 4).

Definitions (computed by TrialSource.run_span / run_spans from the per-(run, model) groups, the
only place they are computed):
- start    = the first trial's started_at;
- end      = the latest moment a trial ended: finished_at, else started_at + latency, else
             started_at (a trial with neither is taken to end when it started);
- duration = end - start.
`last_started` (the newest started_at) is kept apart: per-bucket rollups count trials by start,
so a range that holds every trial of a run ends just after it.

Display rule, used by every surface (run picker, timeline CLI header, incidents, the Timeline
summary, the Markdown and HTML reports): start and end are truncated to the whole second (UTC),
and the duration shown is the difference of the two shown times, so the three numbers always
agree with each other ("2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)").
Machine output keeps full precision for times (ISO 8601) and milliseconds for durations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from oasis_ops.trials.timeparse import as_utc

ARROW = "→"


def whole_second(value: datetime) -> datetime:
    """`value` in UTC, truncated to the whole second (the display rule)."""
    return as_utc(value).replace(microsecond=0)


def duration_text(seconds: float | int | timedelta) -> str:
    """Whole seconds as '58 s', '4 min 58 s', '9 h 4 min 58 s', '2 d 3 h 0 min 5 s' (truncated)."""
    total = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    s = max(0, int(total))
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h {minutes} min {secs} s"
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def range_parts(start: datetime, end: datetime) -> tuple[str, str, str]:
    """(start, end, duration) as shown: '2025-11-20 09:00:01', '18:04:59' (the date again only
    when it differs), '9 h 4 min 58 s'. The duration is the difference of the shown times."""
    a, b = whole_second(start), whole_second(end)
    start_text = f"{a:%Y-%m-%d %H:%M:%S}"
    end_text = f"{b:%H:%M:%S}" if b.date() == a.date() else f"{b:%Y-%m-%d %H:%M:%S}"
    return start_text, end_text, duration_text(b - a)


def range_text(start: datetime, end: datetime) -> str:
    """'2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)': any span of time, by the display rule."""
    a, b, d = range_parts(start, end)
    return f"{a} {ARROW} {b} UTC ({d})"


@dataclass(frozen=True)
class RunSpan:
    """One run's (or, without a run_id column, the table's) span; see the module docstring."""

    run_id: str | None
    start: datetime  # first trial's started_at (UTC)
    end: datetime  # latest trial end (finished_at, else started_at + latency, else started_at)
    last_started: datetime  # newest started_at
    trials: int
    failures: int
    models: tuple[str, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def start_text(self) -> str:
        return range_parts(self.start, self.end)[0]

    @property
    def end_text(self) -> str:
        return range_parts(self.start, self.end)[1]

    @property
    def duration_text(self) -> str:
        return range_parts(self.start, self.end)[2]

    @property
    def shown_duration_s(self) -> int:
        """The duration shown, in whole seconds (shown end - shown start)."""
        return int((whole_second(self.end) - whole_second(self.start)).total_seconds())

    def text(self) -> str:
        """'2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)'."""
        return range_text(self.start, self.end)

    def label(self) -> str:
        """'run oasis-20251120: 2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)'; 'all trials: ...'
        for the span of every trial (no run id column, or the newest trials carry none)."""
        return f"run {self.run_id}: {self.text()}" if self.run_id is not None else f"all trials: {self.text()}"

    def covered_by(self, start: datetime, end: datetime) -> bool:
        """True when [start, end) holds every trial start of the run (the range *is* the run)."""
        return as_utc(start) <= self.start and as_utc(end) > self.last_started

    def as_dict(self) -> dict[str, Any]:
        """Machine form: ISO 8601 times (full precision), the duration in seconds to the millisecond."""
        return {
            "run_id": self.run_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "duration_s": round(self.duration.total_seconds(), 3),
            "last_started": self.last_started.isoformat(),
            "trials": self.trials,
            "failures": self.failures,
            "models": list(self.models),
        }


__all__ = ["RunSpan", "duration_text", "range_parts", "range_text", "whole_second"]
