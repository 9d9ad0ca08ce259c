"""Number and time formatting shared by findings, preflight and the report (plain text)."""

from __future__ import annotations

import math
from datetime import UTC, timedelta
from typing import Any

from oasis_ops.moments import as_utc_datetime


def hm(value: Any) -> str:
    ts = as_utc_datetime(value)
    return "?" if ts is None else ts.astimezone(UTC).strftime("%H:%M")


def hms(value: Any) -> str:
    ts = as_utc_datetime(value)
    return "?" if ts is None else ts.astimezone(UTC).strftime("%H:%M:%S")


def day_hm(value: Any) -> str:
    ts = as_utc_datetime(value)
    return "?" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def span(start: Any, end: Any) -> str:
    """'17:58–18:04' (same day) in UTC."""
    return f"{hm(start)}–{hm(end)}"


def duration(seconds: float | timedelta | None) -> str:
    """'45 s', '20 min 17 s', '8 h 58 min'."""
    if seconds is None:
        return "?"
    s = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def count(n: Any) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "?"
    return f"{int(round(float(n))):,}"


def ms(value: float | None) -> str:
    """Latency: '17 ms', '4.1 s', '1 min 0 s'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return duration(value / 1000)


def rate(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0%"
    if value < 0.001:
        return f"{value * 100:.3f}%"
    if value < 0.1:
        return f"{value * 100:.2f}%"
    return f"{value * 100:.0f}%"


def size(n: float | None) -> str:
    """Decimal units, as Activity Monitor and `ollama ps` print them: '957 MB', '10.6 GB'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            if unit in ("B", "kB", "MB"):
                return f"{value:.0f} {unit}"
            return f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "?"
    return f"{a / b:.1f}x"


def num(value: Any) -> float | None:
    """A finite float or None."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or math.isinf(out) else out
