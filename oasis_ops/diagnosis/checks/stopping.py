"""`stopping_deadlock`: a model Stopping for longer than `watchdog_stopping_s` while trials do not
complete or its runner's CPU stays busy.

Stopping alone proves nothing: a busy model's expiry goes stale while it works, and an unload
takes a moment. Ollama unloads (SIGKILLs the runner) as soon as no request holds it, so Stopping
that lasts means something holds a wedged runner: a client still connected to it, or retries
that keep reaching a runner that still answers its health check; or the killed runner cannot be
reaped (stuck in the kernel).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import (
    Finding,
    Telemetry,
    WindowContext,
    _median,
    _model_rows,
)
from oasis_ops.diagnosis.thresholds import BUSY_CPU_PERCENT, STOPPING_LEAD, STOPPING_LOOKAHEAD
from oasis_ops.moments import as_utc_datetime


@dataclass
class StoppingEpisode:
    model: str
    since: datetime
    last_seen: datetime
    samples: int
    still_stopping: bool
    runner_pid: int | None
    cpu_median: float | None
    rss_max: float | None

    @property
    def seconds(self) -> float:
        return (self.last_seen - self.since).total_seconds()


def _episode(rows: pd.DataFrame, idx: list[Any], model: str, still: bool) -> StoppingEpisode:
    part = rows.loc[idx]
    first = part.iloc[0]
    first_ts = as_utc_datetime(first["ts"])
    assert first_ts is not None
    since = as_utc_datetime(first.get("stopping_since")) or as_utc_datetime(first.get("expires_at")) or first_ts
    if since > first_ts or first_ts - since > timedelta(hours=12):
        since = first_ts  # an expiry in the future, or absurdly old: trust the sample time
    pids = pd.to_numeric(part["runner_pid"], errors="coerce").dropna()
    return StoppingEpisode(
        model=model,
        since=since,
        last_seen=as_utc_datetime(part.iloc[-1]["ts"]) or first_ts,
        samples=len(part),
        still_stopping=still,
        runner_pid=int(pids.iloc[-1]) if len(pids) else None,
        cpu_median=_median(part["runner_cpu_percent"]),
        rss_max=t.num(pd.to_numeric(part["runner_rss_bytes"], errors="coerce").max()),
    )


def stopping_episodes(models: pd.DataFrame, max_gap_s: float = 120.0) -> list[StoppingEpisode]:
    """Consecutive Stopping samples per model (a loaded/gone sample or a long gap ends one)."""
    episodes: list[StoppingEpisode] = []
    if models.empty:
        return episodes
    for model, rows in models.groupby("model", sort=False):
        rows = rows.sort_values("ts", kind="stable")
        current: list[Any] = []
        last_ts: pd.Timestamp | None = None
        for idx, row in rows.iterrows():
            ts = row["ts"]
            gap = last_ts is not None and (ts - last_ts).total_seconds() > max_gap_s
            if row["state"] == "stopping" and not gap:
                current.append(idx)
            else:
                if current:
                    episodes.append(_episode(rows, current, str(model), still=False))
                current = [idx] if row["state"] == "stopping" else []
            last_ts = ts
        if current:
            episodes.append(_episode(rows, current, str(model), still=True))
    return episodes


def check_stopping_deadlock(ctx: WindowContext) -> Finding | None:
    limit_s = float(ctx.settings.watchdog_stopping_s)
    horizon = ctx.end + STOPPING_LOOKAHEAD
    if ctx.next_start is not None:
        horizon = min(horizon, ctx.next_start)
    rows = _model_rows(ctx, ctx.start - STOPPING_LEAD, horizon)
    candidates = [e for e in stopping_episodes(rows) if e.seconds >= limit_s]
    if not candidates:
        return None
    ep = max(candidates, key=lambda e: e.seconds)
    # Are trials completing meanwhile? Compared with the run's pace before the window.
    completed: int | None = None
    expected: float | None = None
    if ctx.trials_between is not None:
        summary = ctx.trials_between(ep.since, ep.last_seen)
        completed = int(summary.get("ok") or 0)
        w = ctx.window
        before_minutes = (w.start - w.before_start).total_seconds() / 60
        if w.trials_before and before_minutes > 0:
            ok_before = w.trials_before * (1 - (w.failure_rate_before or 0.0))
            expected = ok_before / before_minutes * ep.seconds / 60
    stalled = completed is not None and (completed == 0 or (expected is not None and completed <= 0.1 * expected))
    busy = ep.cpu_median is not None and ep.cpu_median >= BUSY_CPU_PERCENT
    if not (stalled or busy):
        return None
    still = " and still Stopping at the last sample" if ep.still_stopping else ""
    evidence = [
        f"{ep.model} Stopping… from {t.hms(ep.since)} to {t.hms(ep.last_seen)} UTC ({t.duration(ep.seconds)}, "
        f"{t.count(ep.samples)} /api/ps samples){still}; the limit is {limit_s:g} s"
    ]
    if completed is not None:
        pace = f" (at the pace before the window: about {t.count(expected)})" if expected is not None else ""
        evidence.append(f"{t.count(completed)} trials completed while it was Stopping{pace}")
    if ep.cpu_median is not None:
        rss = f", {t.size(ep.rss_max)} RSS" if ep.rss_max else ""
        pid = f"runner pid {ep.runner_pid}" if ep.runner_pid else "runner"
        evidence.append(f"{pid} at {ep.cpu_median:.1f}% CPU (median while Stopping){rss}: busy, not unloading")
    evict = _evict_before(ctx, ep)
    if evict:
        evidence.append(evict)
    confidence = min(0.95, 0.6 + (0.2 if stalled else 0.0) + (0.15 if busy else 0.0))
    pid_hint = f" (pid {ep.runner_pid})" if ep.runner_pid else ""
    return Finding(
        "stopping_deadlock",
        "confirmed",
        confidence,
        evidence,
        f"Hard-kill the stuck runner{pid_hint}: `oasis-ops recover {ep.model}` (or `oasis-ops kill-runner {ep.model}`); "
        "`ollama serve` starts a fresh one on the next request. A soft evict (keep_alive 0) only unloads once no request "
        "holds the runner, and requests kept holding this one (a client still connected to the stuck generation, or "
        "retries that reuse a runner that still answers its health check and then wait on it). Turn the "
        "watchdog on (`oasis-ops watchdog --on`) so this happens after watchdog_stopping_s.",
        {
            "model": ep.model,
            "stopping_since": ep.since,
            "last_stopping_sample": ep.last_seen,
            "stopping_s": round(ep.seconds, 1),
            "still_stopping": ep.still_stopping,
            "samples": ep.samples,
            "trials_completed": completed,
            "trials_expected": round(expected, 1) if expected is not None else None,
            "runner_pid": ep.runner_pid,
            "runner_cpu_percent_median": ep.cpu_median,
            "runner_rss_bytes_max": ep.rss_max,
            "limit_s": limit_s,
        },
    )


def _evict_before(ctx: WindowContext, ep: StoppingEpisode) -> str | None:
    lo, hi = ep.since - timedelta(minutes=2), ep.since + timedelta(minutes=1)
    actions = Telemetry.between(ctx.telemetry.actions, lo, hi)
    if len(actions):
        evicts = actions[actions["action"].astype(str).str.contains("evict")]
        if len(evicts):
            row = evicts.iloc[0]
            by = f" by {row['requested_by']}" if isinstance(row.get("requested_by"), str) else ""
            return f"soft evict (keep_alive 0) requested at {t.hms(row['ts'])}{by} just before"
    harness = Telemetry.between(ctx.telemetry.harness, lo, hi)
    if len(harness):
        evicts = harness[harness["kind"] == "evict"]
        if len(evicts):
            return f"harness log at {t.hms(evicts.iloc[0]['ts'])}: {evicts.iloc[0]['detail']}"
    return None
