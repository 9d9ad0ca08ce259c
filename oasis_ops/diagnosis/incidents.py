"""Incidents: windows (windows.py) plus their findings (findings.py), from a trial DB and its sidecar."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from oasis_ops.diagnosis.findings import (
    STOPPING_LOOKAHEAD,
    Finding,
    Telemetry,
    WindowContext,
    diagnose,
    pick_model,
)
from oasis_ops.diagnosis.windows import IncidentWindow, WindowScan, find_windows
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from oasis_ops.trials import TrialSource

TELEMETRY_LEAD = timedelta(hours=1)


@dataclass
class Incident:
    window: IncidentWindow
    findings: list[Finding]
    model: str | None

    @property
    def confirmed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "confirmed"]

    @property
    def refuted(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "refuted"]

    def as_dict(self) -> dict[str, Any]:
        return {**self.window.as_dict(), "model": self.model, "findings": [f.as_dict() for f in self.findings]}


@dataclass
class Analysis:
    db: Path
    sidecar: Path
    scan: WindowScan
    telemetry: Telemetry
    incidents: list[Incident] = field(default_factory=list)

    @property
    def has_sidecar(self) -> bool:
        return self.sidecar.exists()

    def as_json(self) -> list[dict[str, Any]]:
        """The `oasis-ops incidents --json` document: a list of windows with their findings."""
        return [i.as_dict() for i in self.incidents]


def analyze(
    db: str | os.PathLike[str],
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    run_id: str | None = None,
    model: str | None = None,
    source: TrialSource | None = None,
    sidecar_path: str | os.PathLike[str] | None = None,
) -> Analysis:
    """Find the incident windows of a run (default: the latest) and diagnose each one."""
    own = source is None
    src = source if source is not None else TrialSource(Path(db), settings)
    try:
        scan = find_windows(src, settings, start=start, end=end, run_id=run_id, model=model)
        sidecar = Sidecar(sidecar_path or sidecar_path_for(db, settings), settings)
        telemetry = Telemetry.load(sidecar, scan.start - TELEMETRY_LEAD, scan.end + STOPPING_LOOKAHEAD)
        analysis = Analysis(Path(db), sidecar.path, scan, telemetry)
        for n, window in enumerate(scan.windows):
            next_start = scan.windows[n + 1].start if n + 1 < len(scan.windows) else None

            def counter(a: datetime, b: datetime, _run: str | None = scan.run_id, _model: str | None = model) -> dict[str, Any]:
                return src.summary(a, b, run_id=_run, model=_model)

            ctx = WindowContext(window, telemetry, settings, counter, next_start, pick_model(telemetry, window))
            analysis.incidents.append(Incident(window, diagnose(ctx), ctx.model))
        return analysis
    finally:
        if own:
            src.close()
