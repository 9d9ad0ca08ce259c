"""Durations ("90s", "6h", "1m"), times (ISO 8601, naive = UTC) and bucket widths."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from oasis_ops.errors import UsageError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$", re.I)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

# Bucket widths auto_bucket chooses from, narrowest first.
NICE_BUCKETS = ("1m", "2m", "5m", "10m", "15m", "30m", "1h", "2h", "3h", "6h", "12h", "1d", "7d")
MAX_BUCKETS = 1500
MAX_DURATION = timedelta(days=365_250)  # 1000 years: any longer is a typo, and date arithmetic overflows


def parse_duration(text: str) -> timedelta:
    """'6h', '90s', '1m', '1.5d', '250ms' (a bare number is seconds); UsageError otherwise."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise UsageError(f"not a duration: {text!r}", hint="use e.g. 90s, 15m, 6h, 2d")
    value = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    seconds = value * _UNIT_S[unit]
    if seconds <= 0:
        raise UsageError(f"duration must be positive: {text!r}")
    if seconds > MAX_DURATION.total_seconds():
        raise UsageError(f"duration too long: {text!r}", hint="at most 1000 years (365250d)")
    return timedelta(seconds=seconds)


def bucket_seconds(bucket: str) -> int:
    """Width of a rollup bucket in whole seconds (at least 1 s)."""
    seconds = parse_duration(bucket).total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise UsageError(f"bucket must be a whole number of seconds: {bucket!r}")
    return int(seconds)


def parse_time(text: str | datetime, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive = UTC), 'now', or a duration ago ('6h' = six hours before now); aware UTC."""
    if isinstance(text, datetime):
        return as_utc(text)
    raw = str(text).strip()
    current = as_utc(now) if now is not None else datetime.now(UTC)
    if raw.lower() == "now":
        return current
    if _DURATION_RE.match(raw) and not raw.replace(".", "").isdigit():
        try:
            return current - parse_duration(raw)
        except OverflowError:
            raise UsageError(f"{text!r} ago is before the year 1") from None
    try:
        parsed = datetime.fromisoformat(raw)  # Python 3.11 reads a trailing Z as UTC
    except ValueError:
        raise UsageError(f"not a time: {text!r}", hint="use ISO 8601, e.g. 2025-11-20T17:40:00Z, or 6h for six hours ago") from None
    return as_utc(parsed)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values are taken as UTC (the trial-table convention)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def auto_bucket(start: datetime, end: datetime, *, max_buckets: int = MAX_BUCKETS) -> str:
    """The narrowest nice bucket giving at most `max_buckets` buckets ('1m' up to ~24 h)."""
    span = max((as_utc(end) - as_utc(start)).total_seconds(), 0.0)
    for name in NICE_BUCKETS:
        if math.ceil(span / bucket_seconds(name)) <= max_buckets:
            return name
    days = math.ceil(span / 86400 / max_buckets)
    return f"{days}d"


def epoch_us(value: datetime) -> int:
    """Microseconds since the epoch (naive = UTC)."""
    return int((as_utc(value) - EPOCH) / timedelta(microseconds=1))


def from_epoch_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


def floor_to_bucket(value: datetime, width_s: int) -> datetime:
    """Start of the epoch-aligned bucket containing `value`."""
    epoch_us = int((as_utc(value) - EPOCH) / timedelta(microseconds=1))
    width_us = width_s * 1_000_000
    try:
        return EPOCH + timedelta(microseconds=(epoch_us // width_us) * width_us)
    except OverflowError:
        raise UsageError(f"{as_utc(value).isoformat()} is too close to the year 1 for {width_s} s buckets",
                         hint="start later, or use a narrower bucket") from None


def ceil_to_bucket(value: datetime, width_s: int) -> datetime:
    floored = floor_to_bucket(value, width_s)
    if floored == as_utc(value):
        return floored
    try:
        return floored + timedelta(seconds=width_s)
    except OverflowError:
        raise UsageError(f"{as_utc(value).isoformat()} is too close to the end of year 9999 for {width_s} s buckets") from None
