"""`oasis-ops incidents`: incident windows of a run and what caused them, with the evidence.

A thin layer over oasis_ops.diagnosis: windows are minutes that depart from the run's own
baseline; each gets findings (confirmed, or cold_start refuted) read from the telemetry sidecar.
"""

from __future__ import annotations

import argparse
import sys

from oasis_ops.commands import add_run_range_args, run_range
from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.incidents import Analysis, analyze
from oasis_ops.fmt import json_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help="find incident windows in a run and diagnose their causes")
    add_run_range_args(p)
    p.add_argument("--json", action="store_true", help="print the windows and findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings, start, end = run_range(args)
    analysis = analyze(settings.db, settings, start=start, end=end, run_id=args.run_id, model=args.model)
    if args.json:
        sys.stdout.write(json_text(analysis.as_json(), indent=1))
        sys.stdout.write("\n")
    else:
        print(format_text(analysis))
    return 0


def format_text(analysis: Analysis) -> str:
    scan = analysis.scan
    if analysis.span is not None:  # the run's span: the same text as the timeline, the page and the report
        what = analysis.span.label()
    else:
        what = f"{t.day_hm(scan.start)} .. {t.day_hm(scan.end)} UTC" + (f"  run {scan.run_id}" if scan.run_id else "")
    lines = [f"{analysis.db}  {what}  ({scan.baseline.minutes} minutes with trials)"]
    base = scan.baseline
    if base.p95_median_ms is not None:
        lines.append(
            f"baseline: per-minute p95 median {t.ms(base.p95_median_ms)}, robust sigma {t.ms(base.p95_sigma_ms)}; "
            f"failure rate {t.rate(base.failure_rate)}"
        )
    if not analysis.has_sidecar:
        lines.append(f"note: no telemetry sidecar at {analysis.sidecar}: windows only, no causes")
    elif analysis.memory is not None:
        lines.append(f"host memory: {analysis.memory.describe()}")
    if not analysis.incidents:
        lines.append("No incident window: every minute stayed within the run's own baseline.")
        return "\n".join(lines)
    for n, incident in enumerate(analysis.incidents, 1):
        w = incident.window
        p95 = ("≥ " if w.p95_censored else "") + t.ms(w.p95_ms_during)
        lines += [
            "",
            f"Window {n}: {t.day_hm(w.start)}–{t.hm(w.end)} UTC ({t.duration(w.duration)})"
            + (f", model {incident.model}" if incident.model else ""),
            f"  {t.count(w.failures)} of {t.count(w.trials)} trials failed ({t.rate(w.failure_rate)}); "
            f"p50 {t.ms(w.p50_ms_during)}, p95 {p95}",
            f"  before ({t.hm(w.before_start)}–{t.hm(w.start)}): {t.count(w.trials_before)} trials, "
            f"p50 {t.ms(w.p50_ms_before)}, p95 {t.ms(w.p95_ms_before)}, failure rate {t.rate(w.failure_rate_before)}",
        ]
        if not incident.findings:
            lines.append("  no cause found in the telemetry")
        for finding in incident.findings:
            mark = "CONFIRMED" if finding.status == "confirmed" else "REFUTED"
            lines.append(f"  [{mark} {finding.confidence:.2f}] {finding.id}: {finding.title}")
            lines += [f"      - {e}" for e in finding.evidence]
            lines.append(f"      action: {finding.action}")
    return "\n".join(lines)
