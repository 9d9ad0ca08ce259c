"""Incidents: windows (windows.py) plus their findings (findings.py), from a trial DB and its sidecar.

An Analysis also carries the run's span (TrialSource.run_span: the one start, end and duration
every surface shows) when the range analysed is a whole run, and where its host memory numbers
come from (MemorySource: real, recorded or simulated), so every surface labels them alike.
"""

from __future__ import annotations

import math
import os
import re
import socket
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
from oasis_ops.errors import OasisOpsError
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from oasis_ops.trials import TrialSource
from oasis_ops.trials.records import LATENCY_DECIMALS
from oasis_ops.trials.span import RunSpan

TELEMETRY_LEAD = timedelta(hours=1)
# Keys holding milliseconds (p95_ms_during, eval_ms_per_token_before, ...): machine output gives
# them to 0.01 ms, like `oasis-ops timeline --format json`.
_MS_KEY = re.compile(r"(^|_)ms(_|$)")
SIMULATED_SOURCE = "simulated"


def round_ms(value: Any, key: str = "") -> Any:
    """`value` with every float under a millisecond key rounded to 0.01 ms (recursively)."""
    if isinstance(value, dict):
        return {k: round_ms(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_ms(v, key) for v in value]
    if isinstance(value, float) and _MS_KEY.search(key) and math.isfinite(value):
        return round(value, LATENCY_DECIMALS)
    return value


@dataclass(frozen=True)
class MemorySource:
    """Where the host memory numbers of an analysis come from, said next to them.

    kind: `real` (sampled on this machine), `recorded` (sampled elsewhere, or the demo replay's
    reconstruction of the write-up's Mac: not this machine's memory) or `simulated` (the demo
    emulator's simulated host)."""

    kind: str
    source: str | None  # host_samples.source: linux:/proc, macos:vm_stat, simulated
    host: str | None  # the sampler's host name (sampler_status.host)
    replay: bool = False

    @property
    def badge(self) -> str:
        return self.kind.upper()

    def describe(self) -> str:
        """One line, e.g. 'RECORDED: the write-up's host memory as rebuilt by `oasis-ops demo
        replay` (eval-mbp.local, macos:vm_stat), not this machine's'."""
        where = ", ".join(x for x in (self.host, self.source) if x)
        where = f" ({where})" if where else ""
        if self.kind == "simulated":
            return f"SIMULATED: the demo emulator's simulated host{where}, not a real machine's memory"
        if self.replay:
            return (f"RECORDED: the write-up's host memory as reconstructed by `oasis-ops demo replay`{where}; "
                    "not this machine's")  # fmt: skip
        if self.kind == "real":
            return f"REAL: sampled on this machine{where} by the oasis-ops sampler"
        return f"RECORDED: sampled during the run on another machine{where}; not this machine's memory"


def memory_source(telemetry: Telemetry, sidecar: Sidecar, run_id: str | None) -> MemorySource | None:
    """Label the host samples of `telemetry` (None when there are none)."""
    host_rows = telemetry.host
    if host_rows is None or len(host_rows) == 0:
        return None
    sources = [str(s) for s in host_rows["source"].dropna().unique()] if "source" in host_rows else []
    return label_memory(sources[-1] if sources else None, sidecar, run_id)


def label_memory(source: str | None, sidecar: Sidecar, run_id: str | None) -> MemorySource:
    """REAL, RECORDED or SIMULATED for host samples of `source` in `sidecar` (of run `run_id`):
    simulated by their source; real when the sampler that wrote them ran on this machine;
    recorded otherwise, and the demo replay (its run, written by another host) says so."""
    if source == SIMULATED_SOURCE:
        return MemorySource("simulated", source, None)
    host: str | None = None
    try:
        beat = sidecar.sampler_heartbeat() if sidecar.path.exists() else None
        host = beat.host if beat is not None else None
    except OasisOpsError:
        host = None
    # imported late: only the replay's run name is needed
    from oasis_ops.demo.replay import RUN_ID as REPLAY_RUN_ID

    here = socket.gethostname()
    replay = run_id == REPLAY_RUN_ID and host is not None and host != here
    kind = "real" if host is not None and host == here and not replay else "recorded"
    return MemorySource(kind, source, host, replay)


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
        """The window and its findings; milliseconds to 0.01 ms (machine output)."""
        return round_ms({**self.window.as_dict(), "model": self.model, "findings": [f.as_dict() for f in self.findings]})


@dataclass
class Analysis:
    db: Path
    sidecar: Path
    scan: WindowScan
    telemetry: Telemetry
    incidents: list[Incident] = field(default_factory=list)
    span: RunSpan | None = None  # the run's span, when the range analysed is a whole run
    memory: MemorySource | None = None  # where the host memory numbers come from
    warnings: list[Any] = field(default_factory=list)  # early-warning episodes (oasis_ops.earlywarning), when scanned

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
        analysis.span = run_span_of(src, scan.run_id, model, scan.start, scan.end)
        analysis.memory = memory_source(telemetry, sidecar, scan.run_id)
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


def run_span_of(source: TrialSource, run_id: str | None, model: str | None, start: datetime, end: datetime) -> RunSpan | None:
    """The span of the run a range shows (TrialSource.run_span), or None when the range is not a
    whole run (several runs, or only part of one)."""
    if run_id is None and source.mapping.has_run_id:
        return None
    span = source.run_span(run_id=run_id, model=model)
    return span if span is not None and span.covered_by(start, end) else None
