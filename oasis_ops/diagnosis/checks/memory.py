"""`memory_pressure`: at least two of: free memory down tenfold within the hour before (to under
5% of RAM), swap-outs climbing (>= 10,000 pages in that hour), pressure warn or critical.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import Finding, Telemetry, WindowContext
from oasis_ops.diagnosis.thresholds import (
    FREE_DROP_FACTOR,
    LOW_FREE_BYTES,
    LOW_FREE_FRACTION,
    MEMORY_LOOKBACK,
    PRESSURE_HIGH,
    SWAP_CLIMB_PAGES,
)


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
