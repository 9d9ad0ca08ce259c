"""The post-mortem report's content, as blocks that oasis_ops.diagnosis.render writes as Markdown
(charts as SVG files beside it) or one self-contained HTML file.

It is written the way a careful engineer writes one: summary, impact (the healthy period
against the window), timeline, root causes with their evidence, what was ruled out, memory in
vm_stat's own terms, runner state changes, actions taken, encoder versus generation timings,
what to change, and how it was produced. Charts are inline SVG drawn by oasis_ops.diagnosis.svg:
no network, no JavaScript, so the file opens offline and prints.

Both formats render the same blocks, so they say the same thing: the run's start, end and
duration are the run's span (oasis_ops.trials.span, the same text as the Timeline page, the
timeline CLI and `oasis-ops incidents`), and host memory numbers carry where they come from
(REAL, RECORDED or SIMULATED: Analysis.memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from oasis_ops import __version__
from oasis_ops.diagnosis import svg
from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.findings import Telemetry, WindowContext, _detail, timing_comparison
from oasis_ops.diagnosis.incidents import Analysis, Incident, analyze
from oasis_ops.diagnosis.thresholds import STOPPING_LOOKAHEAD
from oasis_ops.errors import ConfigError
from oasis_ops.logs.timefmt import parse_utc_offset
from oasis_ops.moments import as_utc_datetime
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials import TrialSource
from oasis_ops.trials.span import range_parts

CONTEXT_BEFORE = timedelta(minutes=90)
CONTEXT_AFTER = timedelta(minutes=30)
MAX_TIMELINE = 40
MAX_TABLE_ROWS = 30
MEMORY_STEP = timedelta(minutes=15)
SHORT = {
    "stopping_deadlock": "the runner stuck in Stopping… (a soft-evict deadlock)",
    "memory_pressure": "host memory pressure",
    "flash_attention_cpu_spill": "flash attention spilling the compute graph to the CPU",
    "cold_start": "cold start",
    "client_timeout_only": "a client-side timeout (the server answered in time)",
}

# A block of the report, rendered to Markdown or HTML alike.
Block = tuple[Any, ...]


@dataclass
class Chart:
    name: str  # file stem suffix for Markdown: <report stem>-<name>.svg
    title: str
    svg: str
    caption: str


@dataclass
class PostMortem:
    title: str
    blocks: list[Block] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    analysis: Analysis | None = None

    def add(self, *block: Any) -> None:
        self.blocks.append(block)


# --- helpers --------------------------------------------------------------------------------------
def _local_zone(settings: Settings) -> timezone | None:
    try:
        return parse_utc_offset(str(settings.log_utc_offset or ""))
    except ConfigError:
        return None


def _with_local(ts: datetime, zone: timezone | None) -> str:
    if zone is None:
        return f"{t.hm(ts)} UTC"
    local = ts.astimezone(zone)
    return f"{t.hm(ts)} UTC ({local:%H:%M} local)"


def _period(start: datetime, end: datetime) -> str:
    """'2025-11-20 09:00:01–18:04:59': a period by the display rule of oasis_ops.trials.span."""
    a, b, _ = range_parts(start, end)
    return f"{a}–{b}"


def _run_bounds(analysis: Analysis) -> tuple[datetime, datetime]:
    """The run's start and end (its span) when the analysis covers a whole run, else the range."""
    span = analysis.span
    return (span.start, span.end) if span is not None else (analysis.scan.start, analysis.scan.end)


def _run_text(analysis: Analysis) -> str:
    """'2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)'."""
    start, end = _run_bounds(analysis)
    a, b, d = range_parts(start, end)
    return f"{a} → {b} UTC ({d})"


def _summary_row(label: str, s: dict[str, Any], start: datetime, end: datetime, *, seconds: bool = False) -> list[str]:
    """One impact row; `seconds` for periods bounded by the run's own start or end (its span, shown
    to the second as everywhere else), minutes for the windows' minute-grid periods."""
    return [
        label,
        _period(start, end) if seconds else f"{t.day_hm(start)}–{t.hm(end)}",
        t.count(s.get("trials")),
        t.count(s.get("failures")),
        t.rate(s.get("failure_rate")),
        t.ms(s.get("p50_ms")),
        t.ms(s.get("p95_ms")),
    ]


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [] if frame.empty else frame.to_dict("records")


def _primary(analysis: Analysis) -> Incident | None:
    if not analysis.incidents:
        return None
    return max(analysis.incidents, key=lambda i: (i.window.failures, i.window.trials))


# --- the content ----------------------------------------------------------------------------------
def build_report(
    db: str | os.PathLike[str],
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    run_id: str | None = None,
    model: str | None = None,
    now: datetime | None = None,
) -> PostMortem:
    """Analyse the run (default: the latest) and write the report's content."""
    with TrialSource(Path(db), settings) as source:
        analysis = analyze(db, settings, start=start, end=end, run_id=run_id, model=model, source=source)
        scan = analysis.scan
        totals = source.summary(scan.start, scan.end, run_id=scan.run_id, model=model) if scan.end > scan.start else {}
        incident = _primary(analysis)
        analysis.warnings = _early_warnings(analysis, source, settings, model)
        after: dict[str, Any] = {}
        if incident is not None and scan.end > incident.window.end:
            after = source.summary(incident.window.end, scan.end, run_id=scan.run_id, model=model)
    return _compose(analysis, settings, totals, after, incident, now or datetime.now(UTC))


def _early_warnings(analysis: Analysis, source: TrialSource, settings: Settings, model: str | None) -> list[Any]:
    """What the console's early warning raised, or would have raised, over the run (the same scan
    as `oasis-ops warnings`: causal, every 30 s)."""
    from oasis_ops.earlywarning.engine import scan_warnings
    from oasis_ops.earlywarning.inputs import load_inputs

    scan = analysis.scan
    if scan.end <= scan.start:
        return []
    sidecar = Sidecar(analysis.sidecar, settings) if analysis.has_sidecar else None
    end = scan.end + STOPPING_LOOKAHEAD
    inputs = load_inputs(sidecar, source, scan.start, end, run_id=scan.run_id, model=model)
    return scan_warnings(inputs, scan.start, end, settings)[0]


def _warning_lead(analysis: Analysis, incident: Incident | None, zone: timezone | None) -> str | None:
    """'The first early warning came at ..., N minutes before the window opened' or None."""
    if not analysis.warnings:
        return None
    first = analysis.warnings[0]
    what = f"**{first.kind.replace('_', ' ')}** ({first.message})"
    if incident is None:
        return f"The console's early warning raised {len(analysis.warnings)} warning(s); the first at {_with_local(first.at, zone)}: {what}."
    lead = (incident.window.start - first.at).total_seconds()
    when = (f"{t.duration(lead)} before the window opened" if lead > 0 else
            f"{t.duration(-lead)} after the window opened (nothing was seen coming earlier)")  # fmt: skip
    return (f"First early warning {_with_local(first.at, zone)}, {when}: {what}; the recommended action was "
            f"`oasis-ops {first.action}`.")


def _warnings_table(pm: PostMortem, analysis: Analysis) -> None:
    pm.add("h2", "Early warnings")
    if not analysis.warnings:
        pm.add("p", "The early-warning rules (`oasis-ops warnings`) raised nothing over this run: no memory forecast, latency "
               "drift, stuck Stopping or backlog held long enough to warn.")  # fmt: skip
        return
    rows = [[t.hms(w.at), w.kind, w.severity, t.hm(w.eta) if w.eta else "", w.message, f"oasis-ops {w.action}",
             t.hms(w.cleared_at) if w.cleared_at else "active at the end"] for w in analysis.warnings[:MAX_TABLE_ROWS]]  # fmt: skip
    pm.add("table", ["raised (UTC)", "kind", "severity", "eta", "what was seen", "action", "cleared"], rows)


def _compose(analysis: Analysis, settings: Settings, totals: dict[str, Any], after: dict[str, Any],
             incident: Incident | None, now: datetime) -> PostMortem:  # fmt: skip
    scan = analysis.scan
    zone = _local_zone(settings)
    model = incident.model if incident else scan.model
    run = scan.run_id or "(all runs)"
    if incident is None:
        pm = PostMortem(f"Run report: {run}, {_run_text(analysis)} — no incident", analysis=analysis)
    else:
        w = incident.window
        pm = PostMortem(f"Post-mortem: {model or 'model'} run {run}, {t.day_hm(w.start)}–{t.hm(w.end)} UTC", analysis=analysis)
    pm.add("meta", f"Generated {t.day_hm(now)} UTC by oasis-ops {__version__} from `{analysis.db}` and its telemetry "
           f"sidecar `{analysis.sidecar}`" + ("" if analysis.has_sidecar else " (missing: no causes could be checked)") + ".")  # fmt: skip
    _summary(pm, analysis, totals, incident, zone)
    lead = _warning_lead(analysis, incident, zone)
    if lead:
        pm.add("p", lead)
    if incident is None:
        _impact_whole(pm, analysis, totals)
        _warnings_table(pm, analysis)
        _charts(pm, analysis, None)
        _method(pm, analysis, settings)
        return pm
    _impact(pm, analysis, totals, after, incident)
    _timeline(pm, analysis, incident, zone)
    _warnings_table(pm, analysis)
    _causes(pm, incident)
    _memory(pm, analysis, incident)
    _runner_states(pm, analysis, incident)
    _actions(pm, analysis, incident)
    _timings(pm, analysis, incident, settings)
    _changes(pm, incident)
    _charts(pm, analysis, incident)
    if len(analysis.incidents) > 1:
        _other_windows(pm, analysis, incident)
    _method(pm, analysis, settings)
    return pm


def _summary(pm: PostMortem, analysis: Analysis, totals: dict[str, Any], incident: Incident | None, zone: timezone | None) -> None:
    scan = analysis.scan
    pm.add("h2", "Summary")
    if incident is None:
        pm.add("p", f"Run {scan.run_id or '(all)'} ran {_run_text(analysis)}: "
               f"{t.count(totals.get('trials'))} trials, failure rate {t.rate(totals.get('failure_rate'))}, p50 "
               f"{t.ms(totals.get('p50_ms'))}, p95 {t.ms(totals.get('p95_ms'))}. No minute departed from the run's own "
               "baseline (robust p95 and failure-rate thresholds): there is no incident to explain.")  # fmt: skip
        return
    w = incident.window
    healthy = t.duration(w.start - w.before_start)
    confirmed = incident.confirmed
    refuted = incident.refuted
    p95 = ("at least " if w.p95_censored else "") + t.ms(w.p95_ms_during)
    text = (
        f"After {healthy} of healthy operation (p50 {t.ms(w.p50_ms_before)}, p95 {t.ms(w.p95_ms_before)}, failure rate "
        f"{t.rate(w.failure_rate_before)}), run {scan.run_id or '(all)'} on {incident.model or 'its model'} failed "
        f"{t.count(w.failures)} of {t.count(w.trials)} trials ({t.rate(w.failure_rate)}) between {_with_local(w.start, zone)} and "
        f"{_with_local(w.end, zone)}; {t.count(w.timeouts)} of them timed out, and the window's p95 was {p95}."
    )
    pm.add("p", text)
    if confirmed:
        names = [f"**{SHORT.get(f.id, f.id)}**" for f in confirmed]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        stacked = "Three stacked faults" if len(confirmed) == 3 else f"{len(confirmed)} fault(s)"
        pm.add("p", f"{stacked} are confirmed by the telemetry: {joined}. Each is listed below with the numbers that "
               "show it and what to do about it.")  # fmt: skip
    else:
        pm.add("p", "The telemetry confirms no known cause: the window is real, but the sidecar holds no evidence for any "
               "of the checked faults (see *How this report was made*).")  # fmt: skip
    for f in refuted:
        pm.add("p", f"The {SHORT.get(f.id, f.id)} theory is **refuted**: " + "; ".join(f.evidence) + ".")
    deadlock = next((f for f in confirmed if f.id == "stopping_deadlock"), None)
    if deadlock and deadlock.values.get("still_stopping"):
        pm.add("p", f"At the end of the data ({t.hms(deadlock.values.get('last_stopping_sample'))} UTC) the runner was still stuck "
               f"in Stopping… and no trial had landed since {t.hm(w.end)} UTC: the run does not recover by itself.")  # fmt: skip
    pm.add("p", f"Run totals: {t.count(totals.get('ok'))} trials succeeded and {t.count(totals.get('failures'))} failed "
           f"({t.rate(totals.get('failure_rate'))}) over {_run_text(analysis)}.")  # fmt: skip
    _invalid_latency(pm, totals)
    _memory_label(pm, analysis, "Host memory numbers in this report (here and in the evidence below) are ")


def _impact_whole(pm: PostMortem, analysis: Analysis, totals: dict[str, Any]) -> None:
    pm.add("h2", "Impact")
    pm.add("table", ["period", "time (UTC)", "trials", "failures", "failure rate", "p50", "p95"],
           [_summary_row("whole run", totals, *_run_bounds(analysis), seconds=True)])  # fmt: skip
    _invalid_latency(pm, totals)


def _invalid_latency(pm: PostMortem, totals: dict[str, Any]) -> None:
    """Said once: trials whose latency is NaN, infinite, negative or absurd (the SQL leaves them out)."""
    if totals.get("invalid_latency"):
        pm.add("p", f"{totals['invalid_latency']:,} trials with an invalid latency (NaN, infinite, negative or over 1e11 ms) "
               "are counted as trials but left out of every latency figure.")  # fmt: skip


def _impact(pm: PostMortem, analysis: Analysis, totals: dict[str, Any], after: dict[str, Any], incident: Incident) -> None:
    w = incident.window
    pm.add("h2", "Impact: the healthy period against the window")
    before = {"trials": w.trials_before, "failures": round(w.trials_before * (w.failure_rate_before or 0)),
              "failure_rate": w.failure_rate_before, "p50_ms": w.p50_ms_before, "p95_ms": w.p95_ms_before}  # fmt: skip
    during = {"trials": w.trials, "failures": w.failures, "failure_rate": w.failure_rate, "p50_ms": w.p50_ms_during, "p95_ms": w.p95_ms_during}
    rows = [_summary_row("healthy, before", before, w.before_start, w.start), _summary_row("incident window", during, w.start, w.end)]
    if w.p95_censored:
        rows[1][6] = "≥ " + rows[1][6]
    if after.get("trials"):
        rows.append(_summary_row("after", after, w.end, _run_bounds(analysis)[1], seconds=True))
    rows.append(_summary_row("whole run", totals, *_run_bounds(analysis), seconds=True))
    pm.add("table", ["period", "time (UTC)", "trials", "failures", "failure rate", "p50", "p95"], rows)
    notes = []
    if w.p95_censored:
        notes.append("Timed-out trials have no latency of their own; the window's p95 is at least the request timeout.")
    if w.failure_rate_before is not None and w.failure_rate and w.failure_rate_before > 0:
        notes.append(f"The failure rate rose {w.failure_rate / w.failure_rate_before:,.0f}-fold.")
    notes.extend(f"Why this window: {r}." for r in w.reasons)
    for note in notes:
        pm.add("p", note)


def capped_timeline(entries: list[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
    """At most MAX_TIMELINE entries: the first ones, and always the last (how it ended)."""
    if len(entries) > MAX_TIMELINE:
        return entries[: MAX_TIMELINE - 1] + [entries[-1]]
    return entries


def _timeline(pm: PostMortem, analysis: Analysis, incident: Incident, zone: timezone | None) -> None:
    w = incident.window
    tel = analysis.telemetry
    lo, hi = w.start - CONTEXT_BEFORE, w.end + CONTEXT_AFTER
    entries: list[tuple[datetime, str]] = [
        (w.before_start, f"healthy operation: p50 {t.ms(w.p50_ms_before)}, p95 {t.ms(w.p95_ms_before)}"),
        (w.start, f"**incident window opens**: {t.count(w.failures)} of {t.count(w.trials)} trials started before {t.hm(w.end)} fail"),
        (w.end, "incident window closes (last failing minute)"),
    ]
    for row in _rows(Telemetry.between(tel.events, lo, hi)):
        detail = _detail(row.get("detail"))
        kind = str(row["kind"])
        who = f"{row['model']} " if isinstance(row.get("model"), str) else ""
        if kind == "pressure":
            entries.append((row["ts"], f"memory pressure {detail.get('from', '?')} → **{detail.get('to', '?')}**"))
        elif kind in ("loaded", "stopping", "gone"):
            extra = f" (runner pid {detail['runner_pid']})" if detail.get("runner_pid") else ""
            word = "Stopping…" if kind == "stopping" else kind
            entries.append((row["ts"], f"{who}{word}{extra}"))
        elif kind in ("runner_pid_changed", "ollama_unreachable", "ollama_back"):
            entries.append((row["ts"], f"{who}{kind.replace('_', ' ')}"))
    for row in _rows(Telemetry.between(tel.actions, lo, hi)):
        entries.append((row["ts"], f"action **{row['action']}** {row.get('target') or ''} by {row.get('requested_by') or '?'}: {row.get('outcome') or '?'}"))
    harness = Telemetry.between(tel.harness, lo, hi)
    if len(harness):
        timeouts = harness[harness["kind"] == "timeout"]
        if len(timeouts):
            first = timeouts.iloc[0]
            entries.append((first["ts"], f"harness: first timeout in runner.log: {first['detail']}"))
        for row in _rows(harness[harness["kind"] == "evict"]):
            entries.append((row["ts"], f"harness: {row['detail']}"))
        slow = harness[(harness["kind"] == "ok") & (pd.to_numeric(harness["latency_ms"], errors="coerce") > 60_000)]
        for row in _rows(slow.head(3)):
            entries.append((row["ts"], f"harness: trial {row['trial']} finally ok after {t.ms(row['latency_ms'])}"))
    logs = Telemetry.between(tel.log_events, lo, hi)
    for row in _rows(logs[logs["kind"].isin(["runner_start", "runner_gone", "signal_killed", "oom"])] if len(logs) else logs):
        entries.append((row["ts"], f"server.log: {row['msg']}"))
    for f in incident.confirmed:
        if f.id == "stopping_deadlock" and f.values.get("still_stopping"):
            entries.append((as_utc_datetime(f.values["last_stopping_sample"]) or w.end, "last sample: still Stopping…, no trial since the window"))  # fmt: skip
    entries = capped_timeline(sorted(entries, key=lambda e: e[0]))
    pm.add("h2", "Timeline")
    if zone is not None:
        pm.add("p", f"Times in UTC; the logs' local time is UTC{zone.tzname(None)[3:] if zone.tzname(None) else ''}.")
    pm.add("ul", [f"**{t.hms(ts)}** — {what}" for ts, what in entries])


def _causes(pm: PostMortem, incident: Incident) -> None:
    pm.add("h2", "Root causes (confirmed, with evidence)")
    if not incident.confirmed:
        pm.add("p", "None confirmed.")
    for f in incident.confirmed:
        if f.id == "memory_pressure":
            _memory_label(pm, pm.analysis, "Host memory below: ")
        pm.add("finding", f)
    if incident.refuted:
        pm.add("h2", "Ruled out")
        for f in incident.refuted:
            pm.add("finding", f)
    ids = {f.id for f in incident.confirmed}
    if {"stopping_deadlock", "memory_pressure", "flash_attention_cpu_spill"} <= ids:
        pm.add("p", "How they stack: flash attention kept the compute graph on the CPU all along (latent while memory was "
               "plentiful); as free memory ran out and swap-outs climbed, generation stalled behind disk I/O and trials hit "
               "the request timeout; the harness's soft evict then waited on a stuck request and left the runner in "
               "Stopping… for good. Fixing flash attention makes the pressure far less likely to bite; hard-killing a runner "
               "stuck in Stopping… makes it recoverable.")  # fmt: skip


def _memory(pm: PostMortem, analysis: Analysis, incident: Incident) -> None:
    w = incident.window
    host = Telemetry.between(analysis.telemetry.host, w.start - timedelta(hours=1), w.end + CONTEXT_AFTER)
    pm.add("h2", "Memory, in vm_stat's terms")
    _memory_label(pm, analysis, "These samples are ")
    if host.empty:
        pm.add("p", "No host samples in the sidecar around the window.")
        return
    rows = []
    checkpoint = w.start - timedelta(hours=1)
    checkpoint = checkpoint.replace(minute=(checkpoint.minute // 15) * 15, second=0, microsecond=0)
    stops = []
    while checkpoint <= w.end + CONTEXT_AFTER:
        stops.append(checkpoint)
        checkpoint += MEMORY_STEP
    stops += [w.start, w.end]
    seen: set[Any] = set()
    for stop in sorted(stops):
        at = host[host["ts"] <= pd.Timestamp(stop)]
        if at.empty:
            continue
        row = at.iloc[-1]
        if row["ts"] in seen:
            continue
        seen.add(row["ts"])
        page = t.num(row.get("page_size"))
        free = t.num(row.get("pages_free"))
        free_bytes = free * page if free is not None and page else t.num(row.get("mem_free_bytes"))
        mark = " (window opens)" if stop == w.start else " (window closes)" if stop == w.end else ""
        rows.append([f"{t.hms(row['ts'])}{mark}", t.count(free), t.count(page), f"{(free_bytes or 0) / 1024 / 1024:,.0f}",
                     t.count(row.get("swapouts")), t.size(t.num(row.get("swap_used_bytes"))), _pressure(row)])  # fmt: skip
    pm.add("table", ["sample (UTC)", "Pages free", "page size (B)", "free (MiB)", "Swapouts", "swap used", "pressure"], rows)
    pm.add("p", "Pages free × page size is free memory; the page size is read from vm_stat's own header (16,384 bytes on "
           "Apple Silicon: multiplying by 4096 would understate free memory four times). Swapouts is vm_stat's cumulative "
           "counter: its slope is what matters.")  # fmt: skip


def _memory_label(pm: PostMortem, analysis: Analysis | None, lead: str) -> None:
    """Say where the host memory numbers come from (REAL, RECORDED or SIMULATED), next to them."""
    memory = analysis.memory if analysis is not None else None
    if memory is not None:
        pm.add("p", f"{lead}**{memory.badge}**: {memory.describe().split(': ', 1)[-1]}.")


def _pressure(row: dict[str, Any] | pd.Series) -> str:
    value = t.num(row.get("pressure"))
    if value is None:
        return "?"
    source = str(row.get("source") or "")
    if source.startswith("macos"):
        return {0.0: "normal", 50.0: "warn", 100.0: "critical"}.get(value, f"{value:.0f}")
    return f"{value:.0f}/100"


def _runner_states(pm: PostMortem, analysis: Analysis, incident: Incident) -> None:
    w = incident.window
    tel = analysis.telemetry
    lo, hi = w.start - CONTEXT_BEFORE, w.end + CONTEXT_AFTER
    pm.add("h2", "Runner state changes")
    events = Telemetry.between(tel.events, lo, hi)
    events = events[events["kind"].isin(["loaded", "stopping", "gone", "runner_pid_changed"])] if len(events) else events
    models = Telemetry.between(tel.models, lo, hi)
    if incident.model and len(models):
        models = models[models["model"] == incident.model]
    rows = []
    for row in _rows(events)[:MAX_TABLE_ROWS]:
        d = _detail(row.get("detail"))
        rows.append([t.hms(row["ts"]), str(row["kind"]), str(row.get("model") or ""), str(d.get("runner_pid") or ""),
                     f"{d['runner_cpu_percent']:.1f}%" if isinstance(d.get("runner_cpu_percent"), int | float) else "",
                     t.size(d.get("runner_rss_bytes")) if d.get("runner_rss_bytes") else ""])  # fmt: skip
    if rows:
        pm.add("table", ["time (UTC)", "change", "model", "runner pid", "runner CPU", "runner RSS"], rows)
    else:
        pm.add("p", "No model state change was recorded around the window.")
    if len(models):
        phases = []
        for label, a, b in (("before the window", lo, w.start), ("in the window", w.start, w.end), ("after the window", w.end, hi)):
            part = Telemetry.between(models, a, b)
            if part.empty:
                continue
            states = ", ".join(f"{k} {v}" for k, v in part["state"].value_counts().items())
            cpu = pd.to_numeric(part["runner_cpu_percent"], errors="coerce").median()
            rss = pd.to_numeric(part["runner_rss_bytes"], errors="coerce").max()
            pids = sorted({int(p) for p in pd.to_numeric(part["runner_pid"], errors="coerce").dropna()})
            phases.append([label, f"{t.hm(a)}–{t.hm(b)}", str(len(part)), states, ", ".join(map(str, pids)) or "?",
                           f"{cpu:.0f}%" if pd.notna(cpu) else "?", t.size(t.num(rss))])  # fmt: skip
        pm.add("p", "What /api/ps and the runner process looked like, per phase:")
        pm.add("table", ["phase", "time (UTC)", "samples", "states", "runner pid", "median CPU", "max RSS"], phases)


def _actions(pm: PostMortem, analysis: Analysis, incident: Incident) -> None:
    w = incident.window
    tel = analysis.telemetry
    lo, hi = w.start - CONTEXT_BEFORE, w.end + CONTEXT_AFTER
    pm.add("h2", "Actions taken")
    actions = Telemetry.between(tel.actions, lo, hi)
    rows = [[t.hms(r["ts"]), str(r["action"]), str(r.get("target") or ""), str(r.get("requested_by") or ""), str(r.get("outcome") or ""),
             t.ms(t.num(r.get("duration_ms")))] for r in _rows(actions)[:MAX_TABLE_ROWS]]  # fmt: skip
    harness = Telemetry.between(tel.harness, lo, hi)
    evicts = _rows(harness[harness["kind"] == "evict"]) if len(harness) else []
    if rows:
        pm.add("table", ["time (UTC)", "action", "target", "by", "outcome", "took"], rows)
    else:
        pm.add("p", "No recovery action is in the oasis-ops audit log for this period (no evict, kill, concurrency or pause change "
               "was made through oasis-ops).")  # fmt: skip
    if evicts:
        pm.add("ul", [f"**{t.hms(r['ts'])}** — the harness itself: {r['detail']}" for r in evicts])


def _timings(pm: PostMortem, analysis: Analysis, incident: Incident, settings: Settings) -> None:
    ctx = WindowContext(incident.window, analysis.telemetry, settings, model=incident.model)
    before, during = timing_comparison(ctx)
    pm.add("h2", "Encoder versus generation timing (server.log)")
    if not before["n"] and not during["n"]:
        pm.add("p", "No llama-server timing lines were ingested for this period (older Ollama versions do not log them at INFO).")
        return

    def cell(v: float | None) -> str:
        return "–" if v is None else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"

    rows = [
        ["requests with timings", t.count(before["n"]), t.count(during["n"])],
        ["image encoder (ms, median)", cell(before["encode_ms"]), cell(during["encode_ms"])],
        ["generation: eval (ms, median)", cell(before["eval_ms"]), cell(during["eval_ms"])],
        ["generation: eval per token (ms, median)", cell(before["eval_ms_per_token"]), cell(during["eval_ms_per_token"])],
    ]
    pm.add("table", ["", "before the window", "in the window"], rows)
    enc_b, enc_d, tok_b, tok_d = before["encode_ms"], during["encode_ms"], before["eval_ms_per_token"], during["eval_ms_per_token"]
    if enc_b and enc_d and tok_b and tok_d:
        pm.add("p", f"The image encoder, whose working set is small and sensitive to cold weights, ran at {enc_d:.0f} ms in the "
               f"window against {enc_b:.0f} ms before ({enc_d / enc_b:.1f}x); generation, which streams through the KV cache, "
               f"took {tok_d:,.1f} ms per token against {tok_b:.1f} ms ({tok_d / tok_b:,.1f}x). The time went into generation.")  # fmt: skip


def _changes(pm: PostMortem, incident: Incident) -> None:
    pm.add("h2", "What to change")
    items = [f"**{f.title}** — {f.action}" for f in incident.confirmed]
    items += [
        "Run `oasis-ops preflight --model MODEL` before every long run; it blocks on critical memory pressure, a model stuck "
        "Stopping… or too little free memory, and warns about flash attention on Apple Silicon and concurrency above 1.",
        "Keep telemetry running for every run (`oasis-ops sample` or the dashboard) so the next post-mortem writes itself.",
    ]
    pm.add("ol", items)


def _charts(pm: PostMortem, analysis: Analysis, incident: Incident | None) -> None:
    scan = analysis.scan
    tel = analysis.telemetry
    if incident is not None:
        w = incident.window
        lo, hi = max(scan.start, w.start - CONTEXT_BEFORE), w.end + CONTEXT_AFTER
        shade = [(w.start, w.end, "incident")]
    else:
        lo, hi, shade = scan.start, scan.end, []
    markers: list[tuple[datetime, str]] = []
    for row in _rows(Telemetry.between(tel.events, lo, hi)):
        if row["kind"] in ("stopping", "gone", "runner_pid_changed"):
            markers.append((as_utc_datetime(row["ts"]), f"{row['kind']} {t.hm(row['ts'])}"))  # type: ignore[arg-type]
    for row in _rows(Telemetry.between(tel.actions, lo, hi)):
        markers.append((as_utc_datetime(row["ts"]), f"{row['action']} {t.hm(row['ts'])}"))  # type: ignore[arg-type]
    markers = markers[:6]
    rollup = scan.rollup
    if len(rollup):
        minutes = [as_utc_datetime(m) for m in rollup["minute"]]
        steps = [b - a for a, b in zip(minutes, minutes[1:], strict=False) if a is not None and b is not None and b > a]
        bucket = min(steps) if steps else timedelta(minutes=1)  # a sparse rollup skips empty buckets: not joined
        p50 = list(zip(minutes, rollup["p50_ms"].tolist(), strict=True))
        p95 = list(zip(minutes, rollup["p95_ms"].tolist(), strict=True))
        rates = [(m, (float(r) * 100 if pd.notna(r) else None)) for m, r in zip(minutes, rollup["failure_rate"], strict=True)]
        chart = svg.time_chart(
            "Trial latency per minute (log scale) and failure rate",
            [svg.Series("p50", "#1f77b4", p50, max_step=bucket), svg.Series("p95", "#ff7f0e", p95, max_step=bucket),  # type: ignore[arg-type]
             svg.Series("failure rate (%)", "#d62728", rates, kind="step", axis="right", max_step=bucket)],  # type: ignore[arg-type]
            start=lo, end=hi, left=svg.Axis("latency", log=True, fmt=svg.fmt_ms_tick),
            right=svg.Axis("failure rate", fmt=lambda v: f"{v:g}%", minimum=0, maximum=100), shade=shade, markers=markers,
        )  # fmt: skip
        pm.charts.append(Chart("latency", "Latency and failures", chart,
                               "p50 and p95 of trials per minute (by start time) and the share that failed; the shaded span is the incident window."))  # fmt: skip
    host = Telemetry.between(tel.host, lo - timedelta(minutes=30), hi)
    if len(host):
        page = pd.to_numeric(host["page_size"], errors="coerce")
        free = (pd.to_numeric(host["pages_free"], errors="coerce") * page).fillna(pd.to_numeric(host["mem_free_bytes"], errors="coerce"))
        ts = [as_utc_datetime(v) for v in host["ts"]]
        gaps = sorted(b - a for a, b in zip(ts, ts[1:], strict=False) if a is not None and b is not None and b > a)
        sampler_gap = max(gaps[len(gaps) // 2] * 5, timedelta(minutes=1)) if gaps else None  # the sampler was down
        chart = svg.time_chart(
            "Free memory and swap-outs",
            [svg.Series("free memory (GB)", "#2ca02c", list(zip(ts, (free / 1e9).tolist(), strict=True)), max_step=sampler_gap),  # type: ignore[arg-type]
             svg.Series("Swapouts (pages, cumulative)", "#9467bd", list(zip(ts, pd.to_numeric(host["swapouts"], errors="coerce").tolist(), strict=True)),  # type: ignore[arg-type]
                        axis="right", max_step=sampler_gap)],
            start=lo - timedelta(minutes=30), end=hi, left=svg.Axis("free memory (GB)", fmt=lambda v: f"{v:g}"),
            right=svg.Axis("Swapouts", fmt=svg.fmt_count_tick), shade=shade, markers=markers,
        )  # fmt: skip
        where = f" Host memory: {analysis.memory.describe()}." if analysis.memory is not None else ""
        pm.charts.append(Chart("memory", "Memory", chart, "Pages free × page size, and vm_stat's cumulative Swapouts counter." + where))
    timings = Telemetry.between(tel.timings, lo, hi)
    if len(timings):
        ts = [as_utc_datetime(v) for v in timings["ts"]]
        chart = svg.time_chart(
            "Image encoder vs generation (eval) per request, from server.log",
            [svg.Series("eval (ms)", "#ff7f0e", list(zip(ts, pd.to_numeric(timings["eval_ms"], errors="coerce").tolist(), strict=True)), kind="dots"),  # type: ignore[arg-type]
             svg.Series("image encode (ms)", "#1f77b4", list(zip(ts, pd.to_numeric(timings["image_encode_ms"], errors="coerce").tolist(), strict=True)), kind="dots")],  # type: ignore[arg-type]
            start=lo, end=hi, left=svg.Axis("milliseconds", log=True, fmt=svg.fmt_ms_tick), shade=shade, markers=markers,
        )  # fmt: skip
        pm.charts.append(Chart("timings", "Encoder versus generation", chart,
                               "Each dot is one request's llama-server timing: a warm encoder stays flat while generation slows."))  # fmt: skip
    if pm.charts:
        pm.add("h2", "Charts")
        for chart_obj in pm.charts:
            pm.add("chart", chart_obj)


def _other_windows(pm: PostMortem, analysis: Analysis, primary: Incident) -> None:
    pm.add("h2", "Other incident windows")
    rows = []
    for inc in analysis.incidents:
        if inc is primary:
            continue
        w = inc.window
        causes = ", ".join(f.id for f in inc.confirmed) or "no cause confirmed"
        rows.append([f"{t.day_hm(w.start)}–{t.hm(w.end)}", t.count(w.trials), t.count(w.failures), t.rate(w.failure_rate), t.ms(w.p95_ms_during), causes])
    pm.add("table", ["window (UTC)", "trials", "failures", "failure rate", "p95", "confirmed causes"], rows)


def _method(pm: PostMortem, analysis: Analysis, settings: Settings) -> None:
    b = analysis.scan.baseline
    pm.add("h2", "How this report was made")
    pm.add("ul", [
        f"Windows: minutes whose p95 is {settings.incident_threshold_sigma:g} robust sigma above the run's median per-minute p95 "
        f"({t.ms(b.p95_median_ms)}, sigma {t.ms(b.p95_sigma_ms)} from the median absolute deviation), or whose failure rate reaches "
        f"{settings.incident_min_failure_rate:.0%} (or 10x the baseline {t.rate(b.failure_rate)}); merged across gaps of 2 minutes.",
        "Causes: checked against the telemetry sidecar (host memory and /api/ps samples, state events, the audit log) and the "
        "ingested server.log and harness log; a cause is reported only with evidence, cold start also when the data refutes it.",
        f"Reproduce: `oasis-ops incidents --db {analysis.db} --json`; the numbers above are its `evidence` and `values`.",
    ])  # fmt: skip


__all__ = ["Chart", "PostMortem", "build_report"]
