"""Episodes: a condition raises a warning once it has held `warn_min_duration_s`, and the warning
clears once the condition has been gone `warn_clear_s`. The same tracker runs live (one `update`
per sampler tick) and over history (`scan_warnings`, one `update` every `step_s`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from oasis_ops.earlywarning.inputs import WarningInputs
from oasis_ops.earlywarning.model import CRITICAL, Condition, EarlyWarning, utc_of
from oasis_ops.earlywarning.rules import evaluate
from oasis_ops.settings import Settings

DEFAULT_STEP_S = 30.0
MAX_STEPS = 20_000  # a history scan evaluates at most this many moments; wider ranges take longer steps

Key = tuple[str, str | None]
IMMEDIATE = frozenset({"stuck_stopping"})



@dataclass
class WarningTracker:
    settings: Settings
    episodes: list[EarlyWarning] = field(default_factory=list)  # every raised warning, in raising order
    _pending: dict[Key, float] = field(default_factory=dict)  # condition first seen, not raised yet
    _active: dict[Key, EarlyWarning] = field(default_factory=dict)
    _gone_since: dict[Key, float] = field(default_factory=dict)  # an active warning's condition absent since

    @property
    def active(self) -> list[EarlyWarning]:
        return list(self._active.values())

    def adopt(self, warning: EarlyWarning) -> None:
        """Take over an open episode (a restarted sampler's, from the sidecar): it clears as usual."""
        self._active[(warning.kind, warning.subject)] = warning

    def update(self, t: float, inputs: WarningInputs) -> tuple[list[EarlyWarning], list[EarlyWarning]]:
        """Evaluate every rule at `t` (epoch s); returns (raised now, cleared now)."""
        holds = {kind: w.first_seen.timestamp() for (kind, _), w in self._active.items()}
        holds.update({kind: first for (kind, _), first in self._pending.items() if kind not in holds})
        seen: dict[Key, Condition] = {}
        conditions, unknown = evaluate(t, inputs, self.settings, holds)
        for condition in conditions:
            seen.setdefault((condition.kind, condition.subject), condition)
        raised, cleared = [], []
        for key, condition in seen.items():
            self._gone_since.pop(key, None)
            warning = self._active.get(key)
            if warning is not None:
                warning.updates += 1
                warning.latest = {"at": utc_of(t).strftime("%Y-%m-%dT%H:%M:%SZ"), "message": condition.message,
                                  "eta": condition.eta.strftime("%Y-%m-%dT%H:%M:%SZ") if condition.eta else None}  # fmt: skip
                if condition.severity == CRITICAL:
                    warning.worst = CRITICAL
                continue
            first = self._pending.setdefault(key, t)
            # stuck_stopping's rule already waits watchdog_stopping_s: no second wait
            if condition.kind in IMMEDIATE or t - first >= float(self.settings.warn_min_duration_s):
                del self._pending[key]
                warning = EarlyWarning(condition.kind, utc_of(t), condition.severity, condition.message, condition.evidence,
                                       condition.action, condition.eta, utc_of(first), condition.subject, worst=condition.severity)  # fmt: skip
                self._active[key] = warning
                self.episodes.append(warning)
                raised.append(warning)
        for key in [k for k in self._pending if k not in seen]:
            del self._pending[key]  # broke (or went unseen) before it had held long enough: nothing raised
        for key, warning in list(self._active.items()):
            if key in seen or key[0] in unknown:
                continue  # still there, or no data to say it is gone (a stopped sampler clears nothing)
            gone = self._gone_since.setdefault(key, t)
            if t - gone >= float(self.settings.warn_clear_s):
                warning.cleared_at = utc_of(t)
                del self._active[key]
                del self._gone_since[key]
                cleared.append(warning)
        return raised, cleared


def scan_warnings(inputs: WarningInputs, start: datetime, end: datetime, settings: Settings,
                  step_s: float = DEFAULT_STEP_S) -> tuple[list[EarlyWarning], list[str]]:  # fmt: skip
    """The warnings the console raised, or would have raised, over [start, end): evaluated every
    `step_s` with only the data up to each moment. Returns (warnings, notes)."""
    notes = list(inputs.notes)
    t0, t1 = start.timestamp(), end.timestamp()
    if (t1 - t0) / step_s > MAX_STEPS:
        step_s = (t1 - t0) / MAX_STEPS
        notes.append(f"a long range: evaluated every {step_s:,.0f} s instead of every {DEFAULT_STEP_S:.0f} s")
    tracker = WarningTracker(settings)
    t = math.ceil(t0 / step_s) * step_s  # on whole steps (17:36:00, not 17:36:01): the same moments for any start
    while t < t1:
        tracker.update(t, inputs)
        t += step_s
    return tracker.episodes, notes


def first_failing_minute(inputs: WarningInputs, min_trials: int = 3) -> datetime | None:
    """The first minute in which most trials failed (with at least `min_trials` trials)."""
    m = inputs.trials
    for i in range(len(m.minute)):
        if m.trials[i] >= min_trials and m.failures[i] / m.trials[i] > 0.5:
            return utc_of(float(m.minute[i]))
    return None
