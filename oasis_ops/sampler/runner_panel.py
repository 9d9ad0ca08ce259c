"""The llama-server runner panel: a model's runner in the Live header, and its signals per bucket.

`runner_state()` is the newest runner_samples row of a model's runner as the header shows it,
`runner_line()` the one Markdown line under the model (slots busy, tokens/s, tokens in flight; red
when a busy slot makes no progress or the runner does not answer /slots); `runner_buckets()` the
runner's signals per chart bucket (the Live chart's runner panel and the Timeline). A sidecar
older than migration 004 has no runner data, which is not an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from oasis_ops.errors import SchemaError
from oasis_ops.fmt import fmt_duration
from oasis_ops.sampler.reads import _age, _num, _query, _reader, _ts
from oasis_ops.sidecar import Sidecar

RUNNER_COLUMNS = ["minute", "tokens_per_s", "slots_busy", "slots_total", "tokens_in_flight", "requests_deferred",
                  "stalled_for_s", "stalled_slots", "not_answering_for_s", "not_answering"]  # fmt: skip


@dataclass(frozen=True)
class RunnerState:
    """The newest runner_samples row of a model's llama-server runner, as the header shows it."""

    sampled_at: datetime
    age_s: float
    runner_pid: int | None
    reachable: bool
    error: str | None
    slots_total: int | None
    slots_busy: int | None
    tokens_in_flight: int | None
    tokens_per_s: float | None
    rate_source: str | None
    requests_deferred: int | None
    metrics_enabled: bool | None
    stalled_for_s: float | None
    stalled_slots: int
    not_answering_for_s: float | None
    worst_slot: dict[str, Any] | None  # the busy slot longest without progress (id, n_decoded, no_progress_s)

    @property
    def alarm(self) -> bool:
        """Red: not answering, or a busy slot without progress past the sampler's threshold."""
        return not self.reachable or self.stalled_slots > 0


def runner_state(row: dict[str, Any], now: datetime) -> RunnerState:
    sampled = _ts(row["ts"])
    assert sampled is not None
    slots = row.get("slots")
    try:
        parsed = json.loads(slots) if isinstance(slots, str) else slots
    except ValueError:
        parsed = None
    parsed = parsed if isinstance(parsed, list) else []
    busy = [s for s in parsed if isinstance(s, dict) and s.get("busy") and s.get("no_progress_s") is not None]
    worst = max(busy, key=lambda s: float(s["no_progress_s"])) if busy else None
    stalled = _num(row.get("stalled_slots"))
    return RunnerState(
        sampled_at=sampled, age_s=_age(sampled, now) or 0.0, runner_pid=_num(row.get("runner_pid")),
        reachable=bool(row.get("reachable")), error=row.get("error"), slots_total=_num(row.get("slots_total")),
        slots_busy=_num(row.get("slots_busy")), tokens_in_flight=_num(row.get("tokens_in_flight")),
        tokens_per_s=_num(row.get("tokens_per_s")), rate_source=row.get("rate_source"),
        requests_deferred=_num(row.get("requests_deferred")), metrics_enabled=_num(row.get("metrics_enabled")),
        stalled_for_s=_num(row.get("stalled_for_s")), stalled_slots=int(stalled or 0),
        not_answering_for_s=_num(row.get("not_answering_for_s")), worst_slot=worst,
    )  # fmt: skip


_TIMEOUT_RE = re.compile(r"within ([0-9.]+) s")


def _secs(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else fmt_duration(value)


def _rate(value: float | None) -> str:
    if value is None:
        return "– tok/s"
    return f"{value:,.0f} tok/s" if value >= 10 else f"{value:.1f} tok/s"


def runner_line(runner: RunnerState | None) -> str | None:
    """One Markdown line on a model's llama-server runner: 'slots 1/2 busy · 37 tok/s · 120 tokens
    in flight'; red when a busy slot makes no progress or the runner does not answer /slots."""
    if runner is None:
        return None
    if not runner.reachable:
        match = _TIMEOUT_RE.search(runner.error or "")
        waited = runner.not_answering_for_s
        since = f", for {_secs(waited)}" if waited else ""
        if match:
            return f":red[**runner not answering /slots ({match.group(1)} s timeout){since}**]"
        return f":red[**runner not answering /slots{since}**]: {runner.error or 'no answer'}"
    if runner.slots_total is None:
        what = runner.error or "no usable answer"
        return f":orange[runner /slots gave nothing usable: {what}]"
    parts = [f"slots **{runner.slots_busy}/{runner.slots_total} busy**"]
    busy = bool(runner.slots_busy)
    if busy or runner.tokens_per_s:
        # /slots shows only the tasks in flight at each look: tokens of tasks that start and end
        # between two looks are missed, so that rate is a lower bound.
        parts.append(("≥ " if runner.rate_source == "slots" else "") + _rate(runner.tokens_per_s)
                     + (" :gray[(from /slots: tasks seen at each look)]" if runner.rate_source == "slots" else ""))
    if busy:
        parts.append(f"{runner.tokens_in_flight or 0:,} tokens in flight")
    else:
        parts.append("idle")
    if runner.requests_deferred:
        parts.append(f"{runner.requests_deferred:,} deferred")
    if runner.stalled_slots > 0 and runner.worst_slot is not None:
        slot = runner.worst_slot
        seconds = float(slot["no_progress_s"])
        what = f"no token for {_secs(seconds)}" if slot.get("n_decoded") else f"no progress for {_secs(seconds)} (still on its prompt)"
        return f":red[**slot {slot.get('id')} busy, {what}**] · " + " · ".join(parts)
    return " · ".join(parts)


def runner_buckets(sidecar: Sidecar, start: datetime, end: datetime, bucket_s: int,
                   con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:  # fmt: skip
    """llama-server runner signals per bucket over [start, end) (RUNNER_COLUMNS, `minute` the
    bucket start; only buckets with a read): an empty frame when no runner was read."""
    width_us = int(bucket_s) * 1_000_000
    if con is None:
        with _reader(sidecar) as own:
            return runner_buckets(sidecar, start, end, bucket_s, own) if own is not None else pd.DataFrame(columns=RUNNER_COLUMNS)
    try:
        frame = _query(sidecar, con, "sampler_q_runner_buckets", since=start, until=end, width_us=width_us)
    except SchemaError:
        return pd.DataFrame(columns=RUNNER_COLUMNS)  # a sidecar older than migration 004
    if frame.empty:
        return pd.DataFrame(columns=RUNNER_COLUMNS)
    frame["minute"] = pd.to_datetime(frame["bucket_us"], unit="us", utc=True)
    out = frame.reindex(columns=RUNNER_COLUMNS)
    for column in RUNNER_COLUMNS[1:-1]:
        out[column] = out[column].astype("float64")
    out["not_answering"] = out["not_answering"].fillna(False).astype(bool)
    return out
