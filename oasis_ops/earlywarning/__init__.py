"""Early warning: see a failure coming from the sidecar and the trial table, causally.

Every rule reads only data up to its own evaluation time, so the same code runs live (the
sampler, every tick) and over history (`oasis-ops warnings`, the report). Kinds:
`memory_exhaustion` (a robust trend of free memory reaching the floor within the horizon),
`latency_drift` (p50/p95 rising against the run's own earlier minutes; the flash-attention spill
signature named when the runner's CPU is pinned while /api/ps says 100% GPU), `stuck_stopping`
(a model Stopping past the threshold while the run still has work) and `backlog` (trials
starting far below the run's own pace while the runner stays busy). A condition must hold for
`warn_min_duration_s` before its warning is raised and be gone for `warn_clear_s` before it
clears: one noisy sample, one swap-out burst or one dip that recovers raises nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oasis_ops.earlywarning.engine import WarningTracker, scan_warnings
    from oasis_ops.earlywarning.model import EarlyWarning

__all__ = ["EarlyWarning", "WarningTracker", "scan_warnings"]

_WHERE = {"EarlyWarning": "model", "WarningTracker": "engine", "scan_warnings": "engine"}


def __getattr__(name: str) -> Any:  # numpy and pandas only when a warning is computed
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"oasis_ops.earlywarning.{_WHERE[name]}"), name)
    raise AttributeError(name)
