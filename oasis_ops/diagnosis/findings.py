"""Diagnosis: evidence-based findings for one incident window.

Each check reads the telemetry sidecar (host and /api/ps samples, events, actions, ingested
server.log and harness log) around the window and either returns a Finding with the numbers
that support it, or nothing. The write-up's reasoning, automated:

- `stopping_deadlock`: a model Stopping for longer than `watchdog_stopping_s` while trials do not
  complete or its runner's CPU stays busy (Stopping alone is ambiguous: see reference/ollama.md).
- `memory_pressure`: at least two of: free memory down tenfold within the hour before (to under
  5% of RAM), swap-outs climbing (>= 10,000 pages in that hour), pressure warn or critical.
- `flash_attention_cpu_spill`: flash attention on (the newest server.log line that says so; or
  unset on Apple Silicon, where Ollama turns it on for gemma) AND either the runner's CPU high
  while the split says 100% GPU, or generation (eval ms per token) slowing while the image
  encoder stays as fast as before.
- `cold_start`: confirmed by the model leaving /api/ps, a runner respawn, load lines or a cold
  encoder in the window; refuted (and reported as such) when the model was listed in every
  sample of the window with one runner and no load line, and the encoder stayed warm.
- `client_timeout_only`: the harness timed out while the server's own access log shows every
  inference request of the window answered within the request timeout.

No finding is reported without evidence; the only refuted finding reported is cold_start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.windows import IncidentWindow
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar

ORDER = ("stopping_deadlock", "memory_pressure", "flash_attention_cpu_spill", "cold_start", "client_timeout_only")
TITLES = {
    "stopping_deadlock": "Runner stuck in “Stopping…” (soft-evict deadlock)",
    "memory_pressure": "Host memory pressure",
    "flash_attention_cpu_spill": "Flash attention spilling the compute graph to the CPU",
    "cold_start": "Cold start (model reloads)",
    "client_timeout_only": "Client-side timeout only (the server answered in time)",
}

MEMORY_LOOKBACK = timedelta(hours=1)
MODEL_LOOKBACK = timedelta(minutes=60)
STOPPING_LOOKAHEAD = timedelta(minutes=30)  # a deadlock usually starts when the window ends
STOPPING_LEAD = timedelta(minutes=5)
COLD_LEAD = timedelta(minutes=2)
BUSY_CPU_PERCENT = 80.0
FREE_DROP_FACTOR = 10.0
LOW_FREE_FRACTION = 0.05
LOW_FREE_BYTES = 2_000_000_000  # when total memory is unknown
SWAP_CLIMB_PAGES = 10_000
PRESSURE_HIGH = 50.0
EVAL_SLOWDOWN = 2.5
ENCODER_WARM_RATIO = 1.5
ENCODER_COLD_RATIO = 3.0
DEFAULT_TIMEOUT_MS = 60_000.0
NON_INFERENCE_PATHS = {"/", "/api/ps", "/api/version", "/api/show", "/api/tags", "/api/pull", "/api/push", "/api/delete", "/api/copy"}

TrialCounter = Callable[[datetime, datetime], dict[str, Any]]


@dataclass
class Finding:
    id: str
    status: str  # "confirmed" | "refuted"
    confidence: float  # 0..1: how sure we are of the status
    evidence: list[str]
    action: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES.get(self.id, self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "confidence": round(self.confidence, 2),
            "evidence": list(self.evidence),
            "values": _jsonable(self.values),
            "action": self.action,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | pd.Timestamp):
        return t.as_dt(value).isoformat() if t.as_dt(value) else None  # type: ignore[union-attr]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and (np.isnan(value) or np.isinf(value)):
        return None
    return value


# --- telemetry --------------------------------------------------------------------------------
def _ts_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if "ts" in frame.columns and len(frame):
        frame = frame.copy()
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame


@dataclass
class Telemetry:
    """Every sidecar row the diagnosis needs around a range, read once (bounded)."""

    host: pd.DataFrame
    models: pd.DataFrame
    events: pd.DataFrame
    actions: pd.DataFrame
    requests: pd.DataFrame
    timings: pd.DataFrame
    log_events: pd.DataFrame
    harness: pd.DataFrame
    config: pd.DataFrame  # newest flash-attention-relevant log lines before the range end

    @classmethod
    def load(cls, sidecar: Sidecar, since: datetime, until: datetime, max_rows: int = 200_000) -> Telemetry:
        def q(name: str) -> pd.DataFrame:
            return _ts_sorted(sidecar.query(name, since=since, until=until, max_rows=max_rows))

        return cls(
            host=_ts_sorted(sidecar.host_samples_since(since, until, max_rows)),
            models=_ts_sorted(sidecar.model_samples_since(since, until, max_rows)),
            events=_ts_sorted(sidecar.events_since(since, until, max_rows)),
            actions=_ts_sorted(sidecar.actions_since(since, until, max_rows)),
            requests=q("diag_log_requests_between"),
            timings=q("diag_log_timings_between"),
            log_events=q("diag_log_events_between"),
            harness=q("diag_harness_between"),
            config=_ts_sorted(sidecar.query("diag_log_config_before", until=until)),
        )

    @staticmethod
    def between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
        if frame.empty or "ts" not in frame.columns:
            return frame
        ts = frame["ts"]
        return frame[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))]

    def config_before(self, end: datetime) -> pd.DataFrame:
        return self.config[self.config["ts"] < pd.Timestamp(end)] if len(self.config) else self.config


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _median(values: Any) -> float | None:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype="float64")
    return float(np.median(arr)) if arr.size else None


def apple_silicon(host: pd.DataFrame) -> bool:
    """macOS samples with 16 KiB pages: an Apple Silicon Mac."""
    if host.empty or "source" not in host.columns:
        return False
    mac = host[host["source"].astype(str).str.startswith("macos")]
    return bool(len(mac)) and bool((pd.to_numeric(mac["page_size"], errors="coerce") == 16384).any())


# --- context ----------------------------------------------------------------------------------
@dataclass
class WindowContext:
    window: IncidentWindow
    telemetry: Telemetry
    settings: Settings
    trials_between: TrialCounter | None = None
    next_start: datetime | None = None  # the next window's start (bounds the look-ahead)
    model: str | None = None

    @property
    def start(self) -> datetime:
        return self.window.start

    @property
    def end(self) -> datetime:
        return self.window.end

    def before_start(self, lookback: timedelta) -> datetime:
        return max(self.window.before_start, self.start - lookback)


def pick_model(telemetry: Telemetry, window: IncidentWindow) -> str | None:
    if window.model:
        return window.model
    models = Telemetry.between(telemetry.models, window.start - MODEL_LOOKBACK, window.end + STOPPING_LOOKAHEAD)
    if models.empty:
        return None
    return str(models["model"].value_counts().index[0])


def _model_rows(ctx: WindowContext, start: datetime, end: datetime) -> pd.DataFrame:
    rows = Telemetry.between(ctx.telemetry.models, start, end)
    if ctx.model is not None and len(rows):
        rows = rows[rows["model"] == ctx.model]
    return rows


# --- stopping_deadlock ------------------------------------------------------------------------
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
    first_ts = t.as_dt(first["ts"])
    assert first_ts is not None
    since = t.as_dt(first.get("stopping_since")) or t.as_dt(first.get("expires_at")) or first_ts
    if since > first_ts or first_ts - since > timedelta(hours=12):
        since = first_ts  # an expiry in the future, or absurdly old: trust the sample time
    pids = pd.to_numeric(part["runner_pid"], errors="coerce").dropna()
    return StoppingEpisode(
        model=model,
        since=since,
        last_seen=t.as_dt(part.iloc[-1]["ts"]) or first_ts,
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
        "`ollama serve` starts a fresh one on the next request. A soft evict (keep_alive 0) cannot finish while a "
        "request is stuck. Turn the watchdog on (`oasis-ops watchdog --on`) so this happens after watchdog_stopping_s.",
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


# --- memory_pressure --------------------------------------------------------------------------
def _free_bytes(host: pd.DataFrame) -> pd.Series:
    pages = pd.to_numeric(host.get("pages_free"), errors="coerce")
    page_size = pd.to_numeric(host.get("page_size"), errors="coerce")
    from_pages = pages * page_size
    free = pd.to_numeric(host.get("mem_free_bytes"), errors="coerce")
    return from_pages.fillna(free)


def _counter_increase(values: pd.Series) -> float:
    """Increase of a cumulative counter, skipping resets."""
    diffs = pd.to_numeric(values, errors="coerce").dropna().diff().dropna()
    return float(diffs[diffs > 0].sum())


def _pressure_words(value: float | None, source: str) -> str:
    if value is None:
        return "?"
    if source.startswith("macos"):
        level = {0.0: "normal", 50.0: "warn", 100.0: "critical"}.get(float(value))
        if level:
            return f"{value:.0f}/100 (kern.memorystatus_vm_pressure_level {level})"
    return f"{value:.0f}/100" + (" (PSI some avg10)" if source.startswith("linux") else "")


def check_memory_pressure(ctx: WindowContext) -> Finding | None:
    host = Telemetry.between(ctx.telemetry.host, ctx.start - MEMORY_LOOKBACK, ctx.end)
    if len(host) < 2:
        return None
    host = host.assign(free=_free_bytes(host).to_numpy())
    before = host[host["ts"] < pd.Timestamp(ctx.start)]
    near = host[host["ts"] >= pd.Timestamp(ctx.start - timedelta(minutes=5))]
    if near.empty:
        near = host.tail(1)
    source = str(host["source"].dropna().iloc[-1]) if host["source"].notna().any() else ""
    evidence: list[str] = []
    values: dict[str, Any] = {"source": source}
    signals = 0

    # free memory: the hour's high point before the window against the low point near it
    free_ok = host["free"].notna()
    high_pool = before[before["free"].notna()] if before["free"].notna().any() else host[free_ok]
    low_pool = near[near["free"].notna()]
    if len(high_pool) and len(low_pool):
        high = high_pool.loc[high_pool["free"].idxmax()]
        low = low_pool.loc[low_pool["free"].idxmin()]
        total = t.num(pd.to_numeric(host["mem_total_bytes"], errors="coerce").max())
        low_limit = total * LOW_FREE_FRACTION if total else LOW_FREE_BYTES
        factor = float(high["free"]) / max(float(low["free"]), 1.0)
        values.update(free_high_bytes=float(high["free"]), free_high_at=high["ts"], free_low_bytes=float(low["free"]),
                      free_low_at=low["ts"], free_drop_factor=round(factor, 1), mem_total_bytes=total)  # fmt: skip
        dropped = factor >= FREE_DROP_FACTOR and float(low["free"]) <= low_limit
        if dropped:
            signals += 1
            page_size = t.num(low.get("page_size"))
            if page_size and t.num(high.get("pages_free")) is not None and t.num(low.get("pages_free")) is not None:
                values.update(pages_free_high=int(high["pages_free"]), pages_free_low=int(low["pages_free"]), page_size=int(page_size))
                of_total = f" of {t.size(total)}" if total else ""
                evidence.append(
                    f"Pages free: {t.count(high['pages_free'])} at {t.hm(high['ts'])} → {t.count(low['pages_free'])} at "
                    f"{t.hm(low['ts'])} UTC (page size {t.count(page_size)} bytes: {t.size(high['free'])} → "
                    f"{t.size(low['free'])} free{of_total}, {factor:.0f}x less)"
                )
            else:
                evidence.append(
                    f"free memory {t.size(high['free'])} at {t.hm(high['ts'])} → {t.size(low['free'])} at {t.hm(low['ts'])} UTC "
                    f"({factor:.0f}x less)"
                )

    # swap-outs: the cumulative counter over the hour, and its pace over the last 15 minutes
    swap = host[pd.to_numeric(host["swapouts"], errors="coerce").notna()]
    if len(swap) >= 2:
        climbed = _counter_increase(swap["swapouts"])
        recent = swap[swap["ts"] >= pd.Timestamp(ctx.end - timedelta(minutes=15))]
        recent_minutes = (recent["ts"].iloc[-1] - recent["ts"].iloc[0]).total_seconds() / 60 if len(recent) >= 2 else 0
        per_min = _counter_increase(recent["swapouts"]) / recent_minutes if recent_minutes > 0 else None
        first, last = swap.iloc[0], swap.iloc[-1]
        span_min = (last["ts"] - first["ts"]).total_seconds() / 60
        values.update(swapouts_first=int(first["swapouts"]), swapouts_last=int(last["swapouts"]),
                      swapouts_increase=int(climbed), swapouts_per_min_recent=round(per_min, 1) if per_min is not None else None)  # fmt: skip
        if climbed >= SWAP_CLIMB_PAGES:
            signals += 1
            pace = f"; {t.count(per_min)}/min over the last 15 min" if per_min else ""
            evidence.append(
                f"Swapouts: {t.count(first['swapouts'])} at {t.hm(first['ts'])} → {t.count(last['swapouts'])} at "
                f"{t.hm(last['ts'])} UTC (+{t.count(climbed)} pages in {span_min:.0f} min{pace})"
            )
        used = t.num(pd.to_numeric(host["swap_used_bytes"], errors="coerce").max())
        if used:
            values["swap_used_bytes_max"] = used

    # pressure now
    pressure = pd.to_numeric(near["pressure"], errors="coerce")
    if pressure.notna().any():
        top = float(pressure.max())
        values["pressure_max"] = top
        if top >= PRESSURE_HIGH:
            signals += 1
            at = near.loc[pressure.idxmax(), "ts"]
            high_rows = near[pressure >= PRESSURE_HIGH]
            evidence.append(
                f"memory pressure {_pressure_words(top, source)} at {t.hms(at)} UTC; warn or worse in "
                f"{len(high_rows)} of {len(near)} samples from {t.hm(near['ts'].iloc[0])} to {t.hm(near['ts'].iloc[-1])}"
            )
    if signals < 2:
        return None
    if values.get("swap_used_bytes_max"):
        evidence.append(f"swap in use: up to {t.size(values['swap_used_bytes_max'])}")
    values["signals"] = signals
    return Finding(
        "memory_pressure",
        "confirmed",
        0.8 if signals == 2 else 0.95,
        evidence,
        "Lower the run's concurrency to 1 (`oasis-ops concurrency 1 --db ...`) and free memory before resuming; "
        "let the watchdog's memory guard act (watchdog_min_free_gb, watchdog_max_pressure); start long runs only "
        "after `oasis-ops preflight` passes (at least ~8 GB free).",
        values,
    )


# --- flash_attention_cpu_spill ----------------------------------------------------------------
def flash_setting(ctx: WindowContext) -> tuple[bool | None, str]:
    """(on?, where we read it): the newest server.log line that says, else Apple Silicon's default."""
    config = ctx.telemetry.config_before(ctx.end)
    for _, row in config.sort_values("ts", ascending=False).iterrows() if len(config) else []:
        detail = _detail(row["detail"])
        value = detail.get("flash_attention")
        if value is None:
            continue
        at = t.day_hm(row["ts"])
        if row["kind"] == "server_config":
            raw = _detail(detail.get("env")).get("OLLAMA_FLASH_ATTENTION", "?")
            return bool(value), f"server.log server config at {at} UTC: OLLAMA_FLASH_ATTENTION={raw}"
        if row["kind"] == "load_request":
            raw = _detail(detail.get("request")).get("FlashAttention", "?")
            return bool(value), f"server.log load request at {at} UTC: FlashAttention:{raw}"
        return bool(value), f"server.log runner start at {at} UTC: --flash-attn {detail.get('flash_attn', '?')}"
    if apple_silicon(ctx.telemetry.host):
        return True, "not set in any log line; on Apple Silicon Ollama enables it for gemma models by default"
    return None, "unknown"


def _timing_stats(timings: pd.DataFrame) -> dict[str, float | None]:
    if timings.empty:
        return {"n": 0.0, "encode_ms": None, "eval_ms": None, "eval_ms_per_token": None}
    eval_ms = pd.to_numeric(timings["eval_ms"], errors="coerce")
    tokens = pd.to_numeric(timings["eval_tokens"], errors="coerce")
    per_token = (eval_ms / tokens.where(tokens > 0)).dropna()
    return {
        "n": float(len(timings)),
        "encode_ms": _median(timings["image_encode_ms"]),
        "eval_ms": _median(eval_ms),
        "eval_ms_per_token": _median(per_token),
    }


def timing_comparison(ctx: WindowContext) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Median encoder / eval timings (server.log) before the window and during it."""
    before = Telemetry.between(ctx.telemetry.timings, ctx.before_start(timedelta(hours=1)), ctx.start)
    during = Telemetry.between(ctx.telemetry.timings, ctx.start, ctx.end)
    return _timing_stats(before), _timing_stats(during)


def check_flash_spill(ctx: WindowContext, memory_confirmed: bool) -> Finding | None:
    on, where = flash_setting(ctx)
    if not on:
        return None
    inferred = where.startswith("not set")
    evidence = [f"flash attention on ({where})"]
    values: dict[str, Any] = {"flash_attention": True, "flash_source": where}
    # (a) runner CPU high while the memory split says 100% GPU
    cpu_sig = False
    rows = _model_rows(ctx, ctx.start, ctx.end)
    if len(rows):
        loaded = rows[rows["state"] == "loaded"]
        size = pd.to_numeric(loaded["size_bytes"], errors="coerce")
        vram = pd.to_numeric(loaded["size_vram_bytes"], errors="coerce")
        gpu = loaded[(size > 0) & (vram == size)]
        cpu = _median(gpu["runner_cpu_percent"]) if len(gpu) else None
        if cpu is not None and cpu >= BUSY_CPU_PERCENT:
            cpu_sig = True
            earlier = _model_rows(ctx, ctx.before_start(MODEL_LOOKBACK), ctx.start)
            cpu_before = _median(earlier[earlier["state"] == "loaded"]["runner_cpu_percent"]) if len(earlier) else None
            before_txt = f"; {cpu_before:.0f}% before the window" if cpu_before is not None else ""
            pid = pd.to_numeric(gpu["runner_pid"], errors="coerce").dropna()
            who = f"runner pid {int(pid.iloc[-1])}" if len(pid) else "the runner"
            evidence.append(
                f"{who} at {cpu:.0f}% CPU (median, {t.span(ctx.start, ctx.end)} UTC, {len(gpu)} samples) while /api/ps "
                f"reported 100% GPU (size_vram = size = {t.size(float(size[gpu.index].iloc[-1]))}){before_txt}"
            )
            values.update(runner_cpu_percent_median=cpu, runner_cpu_percent_before=cpu_before, processor="100% GPU")
    # (b) generation slowing while the encoder stays warm
    gen_sig = False
    before, during = timing_comparison(ctx)
    b_tok, d_tok = before["eval_ms_per_token"], during["eval_ms_per_token"]
    b_enc, d_enc = before["encode_ms"], during["encode_ms"]
    if b_tok and d_tok and b_enc and d_enc and d_tok >= EVAL_SLOWDOWN * b_tok and d_enc <= ENCODER_WARM_RATIO * b_enc + 5:
        gen_sig = True
        evidence.append(
            f"generation slowed: eval {d_tok:,.1f} ms/token median in the window vs {b_tok:,.1f} ms/token before "
            f"({d_tok / b_tok:,.1f}x), while the image encoder stayed at {d_enc:.0f} ms ({b_enc:.0f} ms before)"
        )
        values.update(eval_ms_per_token_before=b_tok, eval_ms_per_token_during=d_tok, encode_ms_before=b_enc, encode_ms_during=d_enc)
    if not (cpu_sig or gen_sig):
        return None
    confidence = 0.6 + (0.2 if cpu_sig else 0.0) + (0.15 if gen_sig else 0.0) - (0.15 if inferred else 0.0)
    if gen_sig and not cpu_sig and memory_confirmed:
        confidence -= 0.2
        evidence.append("memory pressure alone can also slow generation: the runner-CPU signature is missing")
    return Finding(
        "flash_attention_cpu_spill",
        "confirmed",
        max(0.3, min(0.95, confidence)),
        evidence,
        "Turn flash attention off and restart Ollama: `launchctl setenv OLLAMA_FLASH_ATTENTION 0`, quit and reopen "
        "Ollama (Linux: set OLLAMA_FLASH_ATTENTION=0 in the service's environment); `oasis-ops preflight` checks it. "
        "Upstream: ollama issues #15368 and #15634 (100% GPU reported while the graph runs on the CPU).",
        values,
    )


# --- cold_start -------------------------------------------------------------------------------
def check_cold_start(ctx: WindowContext) -> Finding | None:
    lo, hi = ctx.start - COLD_LEAD, ctx.end
    model = ctx.model
    events = Telemetry.between(ctx.telemetry.events, lo, hi)
    if model is not None and len(events):
        events = events[(events["model"] == model) | events["model"].isna()]
    gone = events[events["kind"] == "gone"] if len(events) else events
    respawn_events = events[events["kind"] == "runner_pid_changed"] if len(events) else events
    rows = _model_rows(ctx, ctx.start, ctx.end)
    pids = sorted({int(p) for p in pd.to_numeric(rows["runner_pid"], errors="coerce").dropna()}) if len(rows) else []
    logs = Telemetry.between(ctx.telemetry.log_events, lo, hi)
    loads = logs[logs["kind"].isin(["runner_start", "runner_started", "load_request"])] if len(logs) else logs
    load_seconds = [s for s in (_detail(d).get("seconds") for d in loads["detail"]) if isinstance(s, int | float)] if len(loads) else []
    before, during = timing_comparison(ctx)
    b_enc, d_enc = before["encode_ms"], during["encode_ms"]
    enc_cold = bool(b_enc and d_enc and d_enc >= ENCODER_COLD_RATIO * b_enc and d_enc - b_enc >= 50)
    enc_warm = bool(b_enc and d_enc and d_enc <= ENCODER_WARM_RATIO * b_enc + 5)

    name = model or "the model"
    evidence: list[str] = []
    signals = 0
    if len(gone):
        signals += 1
        evidence.append(f"{name} left /api/ps {len(gone)} time(s) in the window (first at {t.hms(gone['ts'].iloc[0])} UTC)")
    if len(respawn_events) or len(pids) > 1:
        signals += 1
        chain = " → ".join(str(p) for p in pids) if len(pids) > 1 else f"{len(respawn_events)} change(s)"
        evidence.append(f"runner respawned in the window: pid {chain}")
    if len(loads):
        signals += 1
        slowest = f"; load took up to {max(load_seconds):.1f} s" if load_seconds else ""
        evidence.append(f"server.log: {len(loads)} runner start / load lines in the window{slowest}")
    if enc_cold:
        signals += 1
        evidence.append(f"image encoder {d_enc:.0f} ms median in the window vs {b_enc:.0f} ms before (cold weights)")
    values: dict[str, Any] = {"model": model, "runner_pids": pids, "load_lines": len(loads), "gone_events": len(gone),
                              "encode_ms_before": b_enc, "encode_ms_during": d_enc}  # fmt: skip
    if signals >= 2 and (len(gone) or len(respawn_events) or len(pids) > 1 or len(loads)):
        return Finding(
            "cold_start",
            "confirmed",
            min(0.95, 0.55 + 0.12 * signals),
            evidence,
            "Keep the model resident: send keep_alive -1 (or set OLLAMA_KEEP_ALIVE=-1), do not evict between trials, "
            "and leave room for it under OLLAMA_MAX_LOADED_MODELS; warm it up with one request before the run.",
            values,
        )
    # Refutation: listed in every sample, one runner, no load line, encoder warm.
    if model is None or len(rows) < 3 or signals or not _covers(rows, ctx.start, ctx.end):
        return None
    if b_enc is not None and d_enc is not None and not enc_warm:
        return None
    states = rows["state"].value_counts()
    loaded_n = int(states.get("loaded", 0))
    stopping_n = int(states.get("stopping", 0))
    size = pd.to_numeric(rows["size_bytes"], errors="coerce")
    vram = pd.to_numeric(rows["size_vram_bytes"], errors="coerce")
    all_gpu = bool(((size > 0) & (vram == size)).all())
    split = ", 100% GPU" if all_gpu else ""
    listed = "listed loaded" if stopping_n == 0 else f"listed ({loaded_n} loaded, {stopping_n} Stopping…)"
    evidence = [f"{model} {listed} in every /api/ps sample {t.span(ctx.start, ctx.end)} (n={len(rows)}){split}"]
    if pids:
        evidence.append(f"one runner throughout (pid {pids[0]}); no runner start or load line in server.log in the window")
    else:
        evidence.append("no runner start or load line in server.log in the window")
    if enc_warm:
        evidence.append(f"image encoder {d_enc:.0f} ms median in the window vs {b_enc:.0f} ms before: the weights were warm")
    return Finding(
        "cold_start",
        "refuted",
        0.9 if enc_warm else 0.75,
        evidence,
        "Not a cold start: the model stayed loaded and warm, so the time went into generation. Look at the confirmed findings.",
        {**values, "samples": len(rows), "loaded_samples": loaded_n, "stopping_samples": stopping_n, "all_gpu": all_gpu},
    )


def _covers(rows: pd.DataFrame, start: datetime, end: datetime) -> bool:
    """The samples cover the window without a hole (so 'every sample' means something)."""
    ts = rows["ts"].sort_values()
    gaps = ts.diff().dropna().dt.total_seconds()
    typical = float(gaps.median()) if len(gaps) else 60.0
    allowed = max(3 * typical, 30.0)
    head = (ts.iloc[0] - pd.Timestamp(start)).total_seconds()
    tail = (pd.Timestamp(end) - ts.iloc[-1]).total_seconds()
    return bool(head <= allowed and tail <= allowed and (gaps <= allowed).all())


# --- client_timeout_only ----------------------------------------------------------------------
def check_client_timeout(ctx: WindowContext) -> Finding | None:
    harness = Telemetry.between(ctx.telemetry.harness, ctx.start, ctx.end)
    timeouts = harness[harness["kind"] == "timeout"] if len(harness) else harness
    if len(timeouts) < 3:
        return None
    timeout_ms = _median(timeouts["latency_ms"]) or DEFAULT_TIMEOUT_MS
    requests = Telemetry.between(ctx.telemetry.requests, ctx.start, ctx.end + timedelta(minutes=1))
    if len(requests):
        requests = requests[~requests["path"].isin(NON_INFERENCE_PATHS)]
    if len(requests) < 3:
        return None
    latency = pd.to_numeric(requests["latency_ms"], errors="coerce")
    status = pd.to_numeric(requests["status"], errors="coerce")
    answered = (status >= 200) & (status < 300)
    if latency.max() >= timeout_ms or answered.mean() < 0.9:
        return None
    evidence = [
        f"harness: {len(timeouts)} trials timed out after {t.ms(timeout_ms)} in {t.span(ctx.start, ctx.end)} UTC (runner.log)",
        f"server: all {len(requests)} inference requests of the window answered within {t.ms(float(latency.max()))} "
        f"(Gin p95 {t.ms(float(latency.quantile(0.95)))}, {int(answered.sum())} with status 2xx)",
    ]
    return Finding(
        "client_timeout_only",
        "confirmed",
        0.9 if len(requests) >= len(timeouts) else 0.75,
        evidence,
        "The server is not the bottleneck: look at the client side (the harness's request timeout and retries, a "
        "proxy, an event loop blocked in the harness). Raise request_timeout_s only if calls are legitimately long.",
        {"harness_timeouts": len(timeouts), "timeout_ms": timeout_ms, "server_requests": len(requests),
         "server_latency_ms_max": float(latency.max()), "server_latency_ms_p95": float(latency.quantile(0.95))},  # fmt: skip
    )


# --- all together -----------------------------------------------------------------------------
def diagnose(ctx: WindowContext) -> list[Finding]:
    """Every finding with evidence for one window, in a fixed order (confirmed first)."""
    if ctx.model is None:
        ctx.model = pick_model(ctx.telemetry, ctx.window)
    found: list[Finding] = []
    for check in (check_stopping_deadlock, check_memory_pressure):
        finding = check(ctx)
        if finding:
            found.append(finding)
    memory = any(f.id == "memory_pressure" for f in found)
    for extra in (check_flash_spill(ctx, memory), check_cold_start(ctx), check_client_timeout(ctx)):
        if extra:
            found.append(extra)
    found.sort(key=lambda f: (f.status != "confirmed", ORDER.index(f.id)))
    return found


__all__ = [
    "ORDER",
    "TITLES",
    "Finding",
    "StoppingEpisode",
    "Telemetry",
    "WindowContext",
    "diagnose",
    "flash_setting",
    "pick_model",
    "stopping_episodes",
    "timing_comparison",
]
