"""Time formats of the logs: UTC offsets, naive local wall-clock times, RFC 3339 and ISO stamps,
Go durations.

Timestamps are stored as epoch microseconds (UTC). A naive local time (Gin access lines, Go
plain-logger lines, the harness's runner.log) is converted by a `LocalClock`: with a fixed
offset the conversion is arithmetic, without one it follows this machine's zone rules. Which
offset a server.log's naive lines take is decided in oasis_ops.logs.server.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from oasis_ops.errors import ConfigError

# --- offsets and clocks -------------------------------------------------------------------------
_OFFSET_RE = re.compile(r"^(?:UTC|Z|([+-])(\d{1,2})(?::?(\d{2}))?)$", re.I)


def parse_utc_offset(text: str) -> timezone | None:
    """'+01:00', '-0530', '+2', 'Z', 'UTC' -> a fixed timezone; '' -> None (local zone)."""
    text = (text or "").strip()
    if not text:
        return None
    m = _OFFSET_RE.match(text)
    if not m:
        raise ConfigError(f"not a UTC offset: {text!r}", hint="use e.g. +01:00, -05:30 or Z")
    if m.group(1) is None:
        return UTC
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59:
        raise ConfigError(f"UTC offset out of range: {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if m.group(1) == "-" else delta)


def tz_text(tz: timezone) -> str:
    offset = tz.utcoffset(None)
    if not offset:
        return "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class LocalClock:
    """Naive local wall-clock times -> epoch microseconds (UTC).

    With a fixed offset the conversion is arithmetic; without one it follows this machine's
    zone rules (so a log spanning a DST change converts each line with the offset of its day).
    """

    def __init__(self, offset: timezone | str | None = None) -> None:
        self.tz: timezone | None = parse_utc_offset(offset) if isinstance(offset, str) else offset
        self._cache: dict[tuple[int, int, int, int], int] = {}
        self._stamps: dict[str, int] = {}  # Gin "YYYY/MM/DD - HH" -> epoch µs of that hour

    def __repr__(self) -> str:
        return f"LocalClock({self.tz or 'local'})"

    def epoch_us(self, year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
        # Cached per hour: every zone's offset changes (if ever) on an hour boundary here.
        key = (year, month, day, hour)
        base = self._cache.get(key)
        if base is None:
            if not (0 <= minute <= 59 and 0 <= second <= 60):
                raise ValueError("minute or second out of range")
            if self.tz is not None:
                base = int(datetime(year, month, day, hour, tzinfo=self.tz).timestamp()) * 1_000_000
            else:
                datetime(year, month, day, hour)  # validates the fields
                base = int(time.mktime((year, month, day, hour, 0, 0, 0, 0, -1))) * 1_000_000
            if len(self._cache) > 100_000:  # bounded: one entry per distinct hour
                self._cache.clear()
            self._cache[key] = base
        elif not (0 <= minute <= 59 and 0 <= second <= 60):
            raise ValueError("minute or second out of range")
        return base + (minute * 60 + second) * 1_000_000

    def gin_epoch_us(self, stamp: str) -> int:
        """`2025/11/20 - 09:00:05` (exactly 21 characters) -> epoch µs; ValueError if malformed.
        The date and hour are converted once per hour (cached); minutes and seconds are added."""
        if len(stamp) != 21 or stamp[15] != ":" or stamp[18] != ":":
            raise ValueError(stamp)
        hour = stamp[:15]
        base = self._stamps.get(hour)
        if base is None:
            if stamp[4] != "/" or stamp[7] != "/" or stamp[10:13] != " - ":
                raise ValueError(stamp)
            base = self.epoch_us(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]), int(stamp[13:15]), 0, 0)
            if len(self._stamps) > 100_000:
                self._stamps.clear()
            self._stamps[hour] = base
        minute, second = int(stamp[16:18]), int(stamp[19:21])
        if not (0 <= minute <= 59 and 0 <= second <= 60):
            raise ValueError(stamp)
        return base + (minute * 60 + second) * 1_000_000


# --- stamps -------------------------------------------------------------------------------------
def epoch_us_to_datetime(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def rfc3339_us(text: str, clock: LocalClock) -> int:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:  # not what slog prints, but read it as local time
        base = clock.epoch_us(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
        return base + parsed.microsecond
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_abs_us(text: str) -> int:
    """An ISO time WITH a zone (docker/CRI/k8s/journald short-iso) -> epoch µs."""
    parsed = datetime.fromisoformat(text.replace(",", ".").replace(" ", "T", 1))
    if parsed.tzinfo is None:
        raise ValueError(text)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def offset_of(stamp: str) -> str | None:
    """The offset of an RFC 3339 slog time: '+01:00', '-06:00', 'Z'; None when naive."""
    if stamp[-1:] in ("Z", "z"):
        return "Z"
    tail = stamp[-6:]
    if len(tail) == 6 and tail[0] in "+-" and tail[3] == ":":
        return tail
    return None


# --- Go durations -------------------------------------------------------------------------------
_UNIT_NS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000,
            "µs": 1_000, "μs": 1_000, "us": 1_000, "ns": 1}  # fmt: skip
_DUR_FULL = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|h|m|s))+")
_DUR_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|h|m|s)")


_SUFFIX2 = {"ms": 1_000_000, "µs": 1_000, "μs": 1_000, "us": 1_000, "ns": 1}


def single_unit_ns(text: str) -> int | None:
    """Fast path for the common one-unit forms ('7.812337104s', '312.417µs'); None otherwise."""
    scale = _SUFFIX2.get(text[-2:])
    if scale is not None:
        number = text[:-2]
    elif text[-1:] == "s":
        number, scale = text[:-1], 1_000_000_000
    else:
        return None
    whole, _, frac = number.partition(".")
    if not whole.isascii() or not whole.isdigit() or (frac and not (frac.isascii() and frac.isdigit())):
        return None
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def go_duration_ms(text: str) -> float | None:
    """A Go time.Duration string ('4m8.239102s', '312.417µs', '1m0s', '0s') -> milliseconds.

    Summed in integer nanoseconds like Go itself, so the result is the nearest float to the
    exact value. None when `text` is not a duration.
    """
    fast = single_unit_ns(text)
    if fast is not None:
        return fast / 1_000_000
    if not _DUR_FULL.fullmatch(text):
        return None
    total_ns = 0
    for whole, frac, unit in _DUR_PART.findall(text):
        scale = _UNIT_NS[unit]
        total_ns += int(whole or 0) * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
    if text[0] == "-":
        total_ns = -total_ns
    return total_ns / 1_000_000
