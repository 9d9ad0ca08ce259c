"""The five warning rules. Each reads `WarningInputs` up to time `t` (epoch seconds) and nothing
after it, and returns the conditions it sees then (EarlyWarning episodes are the engine's job).

Constants are the rules' shape; the thresholds a user may want to move are settings
(`warn_*`, README)."""

from __future__ import annotations

from typing import Any

import numpy as np

from oasis_ops.diagnosis import text as tx
from oasis_ops.earlywarning.inputs import WarningInputs
from oasis_ops.earlywarning.model import CRITICAL, WARN, Condition, utc_of
from oasis_ops.earlywarning.trend import theil_sen
from oasis_ops.settings import Settings

MEMORY_WINDOW_S = 600.0  # the trend is fitted over the last ten minutes of host samples
MEMORY_MIN_POINTS = 6
MEMORY_MIN_SPAN_S = 180.0  # and over at least three minutes of them
STALE_S = 120.0  # no sample this recent: the rule says nothing (a stopped sampler is not a forecast)
SWAP_RATE_S = 120.0
CRITICAL_ETA_S = 900.0  # exhaustion within 15 minutes is critical
CRITICAL_PRESSURE = 90.0
HOLD_FACTOR = 2.0  # an open episode holds until its signal is this much weaker than it took to raise it
SWAPPING_PER_S = 100.0  # swap-outs per second (pages) sustained over SWAP_RATE_S...
SWAPPING_PRESSURE = 50.0  # ...under this pressure or more: out of memory already
RECENT_MINUTES = 3  # the latest known trial minutes, against...
BASELINE_MINUTES = 60  # ...the run's own hour before them,
BASELINE_GAP_MINUTES = 10  # ending this long before them (a slow drift is not its own baseline)
MIN_BASELINE_MINUTES = 10
CRITICAL_LATENCY_RATIO = 3.0
RUNNER_WINDOW_S = 180.0
BUSY_CPU = 50.0  # a runner this busy is serving work
SPILL_CPU = 90.0  # ...and this busy while /api/ps says 100% GPU is the flash-attention spill signature
ACTIVE_RUN_S = 900.0  # a trial started this recently: the run still has work
VRAM_FLOOR_SHARE = 0.03  # a GPU with 3% of its memory free has no room left for a layer or a KV cache



def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def memory_exhaustion(t: float, inputs: WarningInputs, settings: Settings, hold: float | None = None) -> list[Condition] | None:
    """None when it cannot tell (too few or stale host samples). While an episode is open
    (`hold`), it holds until the forecast leaves twice the horizon (hysteresis)."""
    host = inputs.host
    lo = int(np.searchsorted(host.t, t - MEMORY_WINDOW_S, side="right"))
    hi = int(np.searchsorted(host.t, t, side="right"))
    if hi - lo < MEMORY_MIN_POINTS or host.t[hi - 1] - host.t[lo] < MEMORY_MIN_SPAN_S or t - host.t[hi - 1] > STALE_S:
        return None
    trend = theil_sen(host.t[lo:hi], host.free[lo:hi])
    now_free = _median(host.free[max(lo, hi - 3) : hi])
    if trend is None or now_free is None:
        return None
    k = int(np.searchsorted(host.t, host.t[hi - 1] - SWAP_RATE_S, side="left"))
    swap_rate = None
    if hi - 1 > k and np.isfinite(host.swapouts[hi - 1]) and np.isfinite(host.swapouts[k]):
        delta = host.swapouts[hi - 1] - host.swapouts[k]
        swap_rate = float(delta / (host.t[hi - 1] - host.t[k])) if delta >= 0 else None  # a reset counter: no rate
    pressure = float(host.pressure[hi - 1]) if np.isfinite(host.pressure[hi - 1]) else None
    floor = float(settings.warn_memory_floor_gb) * 1e9
    horizon_s = float(settings.warn_horizon_min) * 60.0 * (HOLD_FACTOR if hold is not None else 1.0)
    # Already out of memory: at the floor, or swapping hard under pressure (macOS keeps inactive
    # pages "reclaimable" while it swaps: free + reclaimable can stay high through the worst).
    swapping = swap_rate is not None and swap_rate >= SWAPPING_PER_S and pressure is not None and pressure >= SWAPPING_PRESSURE
    if now_free <= floor or swapping:
        eta_s = 0.0
    elif trend.high < 0:  # falling, and the band of the pairwise slopes says so too
        eta_s = (now_free - floor) / -trend.slope
        if eta_s > horizon_s:
            return []
    else:
        return []
    evidence: dict[str, Any] = {
        "free_bytes": int(now_free),
        "floor_bytes": int(floor),
        "slope_bytes_per_min": round(trend.slope * 60),
        "slope_band_bytes_per_min": [round(trend.low * 60), round(trend.high * 60)],
        "fit_window_s": MEMORY_WINDOW_S,
        "samples": trend.points,
        "minutes_left": round(eta_s / 60, 1),
    }
    evidence["swapouts_per_s"] = round(swap_rate, 1) if swap_rate is not None else None
    evidence["pressure"] = pressure
    eta = utc_of(t + eta_s)
    severity = CRITICAL if eta_s <= CRITICAL_ETA_S or (pressure is not None and pressure >= CRITICAL_PRESSURE) else WARN
    if swapping and now_free > floor:
        head = f"memory exhausted: the host is swapping with {tx.size(now_free)} free or reclaimable"
    elif eta_s == 0:
        head = f"free memory {tx.size(now_free)} is at the {tx.size(floor)} floor"
    else:
        head = (f"free memory {tx.size(now_free)}, falling {tx.size(-trend.slope * 60)}/min: at the {tx.size(floor)} floor "
                f"in ~{tx.duration(eta_s)} ({eta:%H:%M} UTC)")  # fmt: skip
    extra = []
    if swap_rate:
        extra.append(f"{swap_rate:,.0f} swap-outs/s")
    if pressure is not None and pressure > 0:
        extra.append(f"pressure {pressure:.0f}/100")
    message = head + (f"; {', '.join(extra)}" if extra else "")
    return [Condition("memory_exhaustion", severity, message, evidence, "concurrency 1", eta)]


def vram_exhaustion(t: float, inputs: WarningInputs, settings: Settings, hold: float | None = None) -> list[Condition] | None:
    """Free VRAM of each GPU fitted as host memory is (Theil-Sen over the last ten minutes): at
    the floor (3% of the GPU free) now, or reaching it within the horizon. A model that no longer
    fits spills layers to the CPU and slows several-fold (the `vram_spill` finding). None when no
    GPU was read recently (a Mac, a CPU box: nothing to forecast)."""
    seen = False
    out: list[Condition] = []
    for name, gpu in inputs.gpus.items():
        lo = int(np.searchsorted(gpu.t, t - MEMORY_WINDOW_S, side="right"))
        hi = int(np.searchsorted(gpu.t, t, side="right"))
        if hi - lo < MEMORY_MIN_POINTS or gpu.t[hi - 1] - gpu.t[lo] < MEMORY_MIN_SPAN_S or t - gpu.t[hi - 1] > STALE_S:
            continue
        seen = True
        total = _median(gpu.total[lo:hi])
        now_free = _median(gpu.free[max(lo, hi - 3) : hi])
        trend = theil_sen(gpu.t[lo:hi], gpu.free[lo:hi])
        if total is None or now_free is None or trend is None:
            continue
        floor = VRAM_FLOOR_SHARE * total
        horizon_s = float(settings.warn_horizon_min) * 60.0 * (HOLD_FACTOR if hold is not None else 1.0)
        if now_free <= floor:
            eta_s = 0.0
        elif trend.high < 0:
            eta_s = (now_free - floor) / -trend.slope
            if eta_s > horizon_s:
                continue
        else:
            continue
        eta = utc_of(t + eta_s)
        evidence: dict[str, Any] = {"gpu": name, "free_bytes": int(now_free), "total_bytes": int(total), "floor_bytes": int(floor),
                                    "slope_bytes_per_min": round(trend.slope * 60), "samples": trend.points,
                                    "minutes_left": round(eta_s / 60, 1)}  # fmt: skip
        if eta_s == 0:
            message = f"{name}: {tx.size(now_free)} of {tx.size(total)} VRAM free: a model that needs more spills layers to the CPU"
        else:
            message = (f"{name}: {tx.size(now_free)} VRAM free, falling {tx.size(-trend.slope * 60)}/min: full in "
                       f"~{tx.duration(eta_s)} ({eta:%H:%M} UTC); a model that no longer fits spills to the CPU")  # fmt: skip
        severity = CRITICAL if eta_s <= CRITICAL_ETA_S else WARN
        # pausing keeps trials from timing out on a spilled model while VRAM is freed (other models unloaded)
        out.append(Condition("vram_exhaustion", severity, message, evidence, "pause", eta, name))
    return out if seen else None


def _runner_signature(t: float, inputs: WarningInputs) -> tuple[str | None, float | None, bool]:
    """(busiest model, its median runner CPU over RUNNER_WINDOW_S, 100% GPU by /api/ps) up to t."""
    best: tuple[str | None, float | None, bool] = (None, None, False)
    for name, series in inputs.models.items():
        lo = int(np.searchsorted(series.t, t - RUNNER_WINDOW_S, side="right"))
        hi = int(np.searchsorted(series.t, t, side="right"))
        if hi <= lo:
            continue
        cpu = _median(series.cpu[lo:hi])
        if cpu is not None and (best[1] is None or cpu > best[1]):
            best = (name, cpu, bool(series.all_gpu[lo:hi].mean() >= 0.5))
    return best


def _known(inputs: WarningInputs, t: float, settings: Settings) -> tuple[float, int]:
    """(the end of the trial minutes known at t, how many minutes are known): a minute is known
    `warn_trial_lag_s` after it ends, when its slowest trial has finished or timed out."""
    known_end = t - float(settings.warn_trial_lag_s)
    return known_end, int(np.searchsorted(inputs.trials.minute, known_end - 60.0, side="right"))


def _baseline_span(known_end: float, hold: float | None, settings: Settings) -> tuple[float, float]:
    end = known_end - BASELINE_GAP_MINUTES * 60.0
    if hold is not None:  # an episode is open: its baseline stays the one from before it
        end = min(end, hold - float(settings.warn_trial_lag_s) - BASELINE_GAP_MINUTES * 60.0)
    return end - BASELINE_MINUTES * 60.0, end


def latency_drift(t: float, inputs: WarningInputs, settings: Settings, hold: float | None = None) -> list[Condition] | None:
    m = inputs.trials
    known_end, k = _known(inputs, t, settings)
    recent = [i for i in range(k - 1, -1, -1) if m.minute[i] >= known_end - 600.0 and np.isfinite(m.p95[i])][:RECENT_MINUTES]
    if len(recent) < RECENT_MINUTES:
        return None  # no recent latencies (every trial failing, or none): it cannot tell
    base_start, base_end = _baseline_span(known_end, hold, settings)
    base = (m.minute >= base_start) & (m.minute + 60.0 <= base_end) & np.isfinite(m.p95)
    if int(base.sum()) < MIN_BASELINE_MINUTES:
        return None
    base_p50, base_p95 = _median(m.p50[base]), _median(m.p95[base])
    rec_p50, rec_p95 = _median(m.p50[recent]), _median(m.p95[recent])
    if None in (base_p50, base_p95, rec_p50, rec_p95) or not base_p50 or not base_p95:
        return []
    ratio = float(settings.warn_latency_ratio)
    if hold is not None:  # hysteresis: an open episode holds down to half the rise that raised it
        ratio = 1 + (ratio - 1) / HOLD_FACTOR
    r95, r50 = rec_p95 / base_p95, rec_p50 / base_p50  # type: ignore[operator]
    if r95 < ratio or r50 < 1 + (ratio - 1) / 2:
        return []
    model, cpu, all_gpu = _runner_signature(t, inputs)
    spill = cpu is not None and cpu >= SPILL_CPU and all_gpu
    evidence: dict[str, Any] = {
        "p50_ms": round(rec_p50, 2), "p95_ms": round(rec_p95, 2),  # type: ignore[arg-type]
        "baseline_p50_ms": round(base_p50, 2), "baseline_p95_ms": round(base_p95, 2),  # type: ignore[arg-type]
        "p95_ratio": round(r95, 2), "recent_minutes": RECENT_MINUTES, "baseline_minutes": int(base.sum()),
        "runner_cpu_percent": round(cpu, 1) if cpu is not None else None, "flash_spill_signature": spill,
        "model": model if spill else None,
    }  # fmt: skip
    message = (f"latency rising: p95 {tx.ms(rec_p95)} ({r95:.1f}x the run's {tx.ms(base_p95)}), p50 {tx.ms(rec_p50)} "
               f"(was {tx.ms(base_p50)}) over the last {RECENT_MINUTES} known minutes")  # fmt: skip
    action = "concurrency 1"
    if spill:
        message += (f"; {model}'s runner at {cpu:.0f}% CPU while /api/ps says 100% GPU: the flash-attention spill signature "
                    "(restart Ollama with OLLAMA_FLASH_ATTENTION=0)")  # fmt: skip
        action = "pause"
    severity = CRITICAL if r95 >= CRITICAL_LATENCY_RATIO else WARN
    return [Condition("latency_drift", severity, message, evidence, action)]  # one per run: a new signature is no new episode


def stuck_stopping(t: float, inputs: WarningInputs, settings: Settings) -> list[Condition] | None:
    threshold = float(settings.watchdog_stopping_s)
    known_end, k = _known(inputs, t, settings)
    starts = inputs.trials.minute[:k]
    active_run = bool(len(starts)) and starts[-1] + 60.0 >= known_end - ACTIVE_RUN_S
    out: list[Condition] = []
    stale = False
    for name, series in inputs.models.items():
        hi = int(np.searchsorted(series.t, t, side="right"))
        if hi == 0 or t - series.t[hi - 1] > STALE_S:
            stale = stale or hi > 0
            continue
        if not series.stopping[hi - 1]:
            continue
        since = series.stopping_since[hi - 1]
        if not np.isfinite(since):
            since = series.t[hi - 1]
        stopping_for = t - since
        if stopping_for < threshold:
            continue
        lo = int(np.searchsorted(series.t, t - RUNNER_WINDOW_S, side="right"))
        cpu = _median(series.cpu[lo:hi])
        busy = cpu is not None and cpu >= BUSY_CPU
        if not (active_run or busy):
            continue  # nothing waits on it: the run is over and its runner idle
        why = []
        if active_run:
            why.append("the run still has work")
        if busy:
            why.append(f"its runner at {cpu:.0f}% CPU")
        evidence = {"stopping_since": utc_of(since).strftime("%Y-%m-%dT%H:%M:%SZ"), "stopping_for_s": round(stopping_for, 1),
                    "threshold_s": threshold, "runner_cpu_percent": round(cpu, 1) if cpu is not None else None,
                    "run_active": active_run}  # fmt: skip
        message = f"{name} Stopping for {tx.duration(stopping_for)} (over {tx.duration(threshold)}) while {' and '.join(why)}"
        out.append(Condition("stuck_stopping", CRITICAL, message, evidence, f"recover {name}", None, name))
    return None if stale and not out else out


def backlog(t: float, inputs: WarningInputs, settings: Settings, hold: float | None = None) -> list[Condition] | None:
    m = inputs.trials
    known_end, k = _known(inputs, t, settings)
    last_minute = np.floor(known_end / 60.0) * 60.0 - 60.0  # the newest whole known minute
    if k == 0 or m.minute[k - 1] < last_minute - ACTIVE_RUN_S:
        return []  # no trial for a long while: a run that ended, not a backlog
    recent_from = last_minute - (RECENT_MINUTES - 1) * 60.0
    recent = (m.minute >= recent_from) & (m.minute <= last_minute)
    recent_rate = float(m.trials[recent].sum()) / RECENT_MINUTES
    base_start, base_end = _baseline_span(known_end, hold, settings)
    base = (m.minute >= base_start) & (m.minute + 60.0 <= base_end)
    if int(base.sum()) < MIN_BASELINE_MINUTES:
        return None
    span_min = (m.minute[base][-1] - m.minute[base][0]) / 60.0 + 1.0
    base_rate = float(m.trials[base].sum()) / span_min
    if base_rate <= 0 or recent_rate > float(settings.warn_backlog_ratio) * base_rate:
        return []
    model, cpu, _ = _runner_signature(t, inputs)
    if cpu is None:
        return None  # no runner telemetry: a backlog cannot be told from a harness that slowed down
    if cpu < BUSY_CPU:
        return []  # the runner idles: the harness slowed down or stopped, nothing is stuck
    evidence = {"trials_per_min": round(recent_rate, 2), "baseline_trials_per_min": round(base_rate, 2),
                "runner_cpu_percent": round(cpu, 1), "model": model}  # fmt: skip
    message = (f"trials starting at {recent_rate:.1f}/min against the run's {base_rate:.1f}/min while {model}'s runner stays "
               f"at {cpu:.0f}% CPU: work is piling up in flight")  # fmt: skip
    return [Condition("backlog", WARN, message, evidence, "concurrency 1")]


def evaluate(t: float, inputs: WarningInputs, settings: Settings, holds: dict[str, float] | None = None) -> tuple[list[Condition], set[str]]:
    """Every rule at time t: (the conditions seen, the kinds that could not tell). `holds`: kind ->
    first_seen of its open episode (its baseline stays the one from before it)."""
    holds = holds or {}
    readings = {
        "memory_exhaustion": memory_exhaustion(t, inputs, settings, holds.get("memory_exhaustion")),
        "latency_drift": latency_drift(t, inputs, settings, holds.get("latency_drift")),
        "stuck_stopping": stuck_stopping(t, inputs, settings),
        "backlog": backlog(t, inputs, settings, holds.get("backlog")),
        "vram_exhaustion": vram_exhaustion(t, inputs, settings, holds.get("vram_exhaustion")),
    }
    conditions = [c for found in readings.values() if found for c in found]
    return conditions, {kind for kind, found in readings.items() if found is None}
