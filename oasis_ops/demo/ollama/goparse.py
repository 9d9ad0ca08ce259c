"""Go-style parsing the way Ollama does it: durations, keep_alive values, booleans.

Sources (read at the release tags, see profiles.py): `api/types.go` (Duration.UnmarshalJSON),
`envconfig/config.go` (OLLAMA_KEEP_ALIVE, boolean variables), Go's `time.ParseDuration` and
`strconv.ParseBool`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from oasis_ops.errors import UsageError

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class KeepAliveError(UsageError):
    """A keep_alive Ollama would reject (its message is Go's)."""


def parse_go_duration(text: str) -> float:
    """Go's `time.ParseDuration`, in seconds: "5m", "1h30m", "0", "-1m", "250ms"."""
    raw = text
    sign = -1.0 if text.startswith("-") else 1.0
    text = text[1:] if text[:1] in "+-" else text
    if text == "0":
        return 0.0
    if not text:
        raise KeepAliveError(f'time: invalid duration "{raw}"')
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            if re.fullmatch(r"\d+\.?\d*", text[pos:]):
                raise KeepAliveError(f'time: missing unit in duration "{raw}"')
            raise KeepAliveError(f'time: invalid duration "{raw}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: Any, default_s: float) -> float:
    """A request's keep_alive in seconds; `math.inf` means forever (any negative value).

    api.Duration.UnmarshalJSON: a JSON number is seconds (300, 1.5, -1); a string must be a Go
    duration ("5m", "-1m", "0"; a bare "300" is an error: missing unit); any other JSON type is
    rejected with `Unsupported type: '<Go type>'` (a 400).
    """
    if value is None:
        return default_s
    if isinstance(value, bool):
        raise KeepAliveError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        go_type = "map[string]interface {}" if isinstance(value, dict) else "[]interface {}"
        raise KeepAliveError(f"Unsupported type: '{go_type}'")
    return math.inf if seconds < 0 else seconds


def parse_env_keep_alive(text: str, default_s: float = 300.0) -> float:
    """OLLAMA_KEEP_ALIVE (envconfig.KeepAlive): a Go duration, else a whole number of seconds,
    else the default 5m, silently; negative is forever."""
    text = text.strip()
    if not text:
        return default_s
    try:
        seconds = parse_go_duration(text)
    except KeepAliveError:
        try:
            seconds = float(int(text, 10))
        except ValueError:
            return default_s
    return math.inf if seconds < 0 else seconds


def parse_go_bool(text: str) -> bool:
    """An OLLAMA_* boolean: strconv.ParseBool, where Ollama counts an unparsable value as true."""
    return text.strip() not in ("0", "f", "F", "false", "FALSE", "False")
