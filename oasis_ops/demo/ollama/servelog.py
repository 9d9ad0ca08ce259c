"""server.log in Ollama's own line formats, and the Go-style time and duration renderings.

Three kinds of lines share one file, as in a real `server.log`:
- slog lines: `time=<RFC3339 ms, local offset> level=INFO source=file.go:N msg="..." key=value`;
- Gin access lines: `[GIN] 2006/01/02 - 15:04:05 | 200 |  7.812337104s |       127.0.0.1 | POST     "/api/chat"`;
- raw runner output (the runner's stderr, copied through untouched).
The formats follow Go's `log/slog` text handler, Gin's default formatter and `time.Duration.String`.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO


def local_now() -> datetime:
    return datetime.now().astimezone()


def _trim_fraction(digits: str) -> str:
    digits = digits.rstrip("0")
    return f".{digits}" if digits else ""


def go_duration(seconds: float) -> str:
    """`time.Duration.String()`: 312.417µs, 666.375868ms, 7.812337104s, 1m0s, 5h31m9s."""
    ns = int(round(seconds * 1e9))
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        prec, unit = (3, "µs") if u < 1_000_000 else (6, "ms")
        whole, frac = divmod(u, 10**prec)
        return f"{sign}{whole}{_trim_fraction(str(frac).zfill(prec))}{unit}"
    whole_s, frac = divmod(u, 1_000_000_000)
    hours, rest = divmod(whole_s, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{secs}{_trim_fraction(str(frac).zfill(9))}s"
    if hours or minutes:
        out = f"{minutes}m{out}"
    if hours:
        out = f"{hours}h{out}"
    return sign + out


def go_time_json(when: datetime) -> str:
    """Go's JSON time (RFC3339Nano): fraction without trailing zeros, `Z` for a zero offset."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # %Y is not zero-padded below year 1000 on every platform: Go's zero time is "0001-01-01T00:00:00Z".
    base = f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%S") + _trim_fraction(f"{when.microsecond:06d}")
    return base + _go_offset(when)


def _go_offset(when: datetime) -> str:
    offset = when.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def slog_time(when: datetime) -> str:
    """slog's text handler time: RFC3339 with milliseconds and the local offset."""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond // 1000:03d}" + _go_offset(when)


def _slog_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or any(c.isspace() or c in '="\\' or not c.isprintable() for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def slog_line(level: str, source: str, msg: str, attrs: dict[str, object] | None = None,
              when: datetime | None = None) -> str:
    parts = [f"time={slog_time(when or local_now())}", f"level={level}", f"source={source}",
             f"msg={_slog_value(msg)}"]
    for key, value in (attrs or {}).items():
        parts.append(f"{key}={_slog_value(value)}")
    return " ".join(parts)


def gin_line(status: int, latency_s: float, client: str, method: str, path: str,
             when: datetime | None = None) -> str:
    """Gin's default access line; like Gin, latencies over a minute lose their fraction."""
    if latency_s > 60:
        latency_s = float(int(latency_s))
    stamp = (when or local_now()).strftime("%Y/%m/%d - %H:%M:%S")
    return (f"[GIN] {stamp} | {status:3d} | {go_duration(latency_s):>13} | {client:>15} | "
            f"{method:<7}  {json.dumps(path)}")


class ServerLog:
    """Append-only, thread-safe writer of one server.log (flushed per line, like Ollama's)."""

    def __init__(self, path: Path, *, echo: TextIO | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._echo = echo

    def raw(self, line: str) -> None:
        line = line.rstrip("\r\n")
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line + "\n")
            self._file.flush()
            if self._echo is not None:
                try:
                    self._echo.write(line + "\n")
                    self._echo.flush()
                except (OSError, ValueError):
                    self._echo = None

    def slog(self, level: str, source: str, msg: str, **attrs: object) -> None:
        self.raw(slog_line(level, source, msg, attrs))

    def gin(self, status: int, latency_s: float, client: str, method: str, path: str) -> None:
        self.raw(gin_line(status, latency_s, client, method, path))

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def server_config_env(env: dict[str, str]) -> str:
    """The `env="map[...]"` value of the `server config` line (keys sorted, as Go prints maps)."""
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(env.items())) + "]"
