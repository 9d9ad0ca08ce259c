"""The live path: the sampler evaluates the warning rules every `EVERY_S` on what it has stored
(the same rules and tracker as `oasis-ops warnings`), writes each raised or cleared episode to
the sidecar's `warnings` table (and an `events` row), and hands it to the notifier.

On start the open episodes of the sidecar (raised in the last LOOKBACK, not cleared) are taken
over, so a restarted sampler neither raises them twice nor leaves them open for ever."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from oasis_ops.earlywarning.engine import WarningTracker
from oasis_ops.earlywarning.inputs import LOOKBACK, load_inputs
from oasis_ops.earlywarning.model import EarlyWarning
from oasis_ops.earlywarning.notify import Notifier
from oasis_ops.moments import as_utc_datetime
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar

log = logging.getLogger(__name__)

EVERY_S = 30.0  # the history scan's step: ~65 ms of reads and rules each time, 0.2% of a core
TAKE_OVER = timedelta(hours=6)


def warning_row(warning: EarlyWarning, change: str, ts: datetime) -> dict[str, Any]:
    return {"ts": ts, "change": change, "kind": warning.kind, "subject": warning.subject, "severity": warning.severity,
            "first_seen": warning.first_seen, "eta": warning.eta, "message": warning.message, "evidence": warning.evidence,
            "action": warning.action}  # fmt: skip


def open_warnings(sidecar: Sidecar, now: datetime, since: timedelta = TAKE_OVER) -> list[EarlyWarning]:
    """Episodes raised since `now - since` and not cleared, oldest first."""
    rows = sidecar.warnings_since(now - since, now + timedelta(seconds=1))
    if rows.empty:
        return []
    active: dict[tuple[str, str | None, datetime], EarlyWarning] = {}
    for row in rows.itertuples(index=False):
        first = as_utc_datetime(row.first_seen)
        subject = row.subject if isinstance(row.subject, str) else None
        key = (str(row.kind), subject, first)
        if row.change == "cleared":
            active.pop(key, None)  # type: ignore[arg-type]
            continue
        evidence = row.evidence
        if isinstance(evidence, str):
            import json

            try:
                evidence = json.loads(evidence)
            except ValueError:
                evidence = {}
        active[key] = EarlyWarning(str(row.kind), as_utc_datetime(row.ts), str(row.severity), str(row.message),  # type: ignore[index, arg-type]
                                   evidence if isinstance(evidence, dict) else {}, str(row.action),
                                   as_utc_datetime(row.eta), first, subject, worst=str(row.severity))  # type: ignore[arg-type]  # fmt: skip
    return list(active.values())


class LiveWarnings:
    """Owned by the sampler; `tick(now, mono)` is cheap when not due."""

    def __init__(self, sidecar: Sidecar, settings: Settings, *, trials: Callable[[], Any] | None = None,
                 notifier: Notifier | None = None, every_s: float = EVERY_S) -> None:  # fmt: skip
        self.sidecar = sidecar
        self.settings = settings
        self.every_s = every_s
        self.notifier = notifier or Notifier(str(settings.notify_webhook_url), bool(settings.notify_desktop))
        self.tracker = WarningTracker(settings)
        self._last = float("-inf")
        self._trials = trials or (lambda: None)  # the trial DB's TrialSource (the sampler's), or None
        self._taken_over = False

    def tick(self, now: datetime, mono: float) -> tuple[list[dict[str, Any]], list[tuple[EarlyWarning, str]]]:
        """Evaluate when due; returns (rows for the `warnings` table, (warning, change) pairs)."""
        if mono - self._last < self.every_s:
            return [], []
        self._last = mono
        if not self._taken_over:
            self._taken_over = True
            for warning in open_warnings(self.sidecar, now):
                self.tracker.adopt(warning)
        source = self._trials()
        run_id = source.latest_run() if source is not None else None
        inputs = load_inputs(self.sidecar, source, now - timedelta(seconds=1), now + timedelta(seconds=1), run_id=run_id)
        raised, cleared = self.tracker.update(now.timestamp(), inputs)
        changes = [(w, "raised") for w in raised] + [(w, "cleared") for w in cleared]
        for warning, change in changes:
            self.notifier.notify(warning, change)
        return [warning_row(w, c, now) for w, c in changes], changes

    def close(self) -> None:
        self.notifier.close(timeout_s=1.0)


assert LOOKBACK >= timedelta(minutes=80)  # the latency baseline's hour, its gap and the trial lag
