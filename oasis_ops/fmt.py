"""Small text formatting shared by the CLI, the pages and the library's messages."""

from __future__ import annotations


def fmt_duration(seconds: float | None) -> str:
    """42s / 3m12s / 1h04m / 9d04h, like the Go durations users see in Ollama's own output."""
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def json_safe(value: object) -> object:
    """`value` with every NaN or infinite float (numpy's included) as None: JSON has no such
    numbers, and jq or JSON.parse reject Python's bare `NaN` / `Infinity`."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_text(value: object, *, indent: int | None = None) -> str:
    """The CLI's JSON: valid JSON always (no NaN/Infinity), anything else as its str()."""
    import json

    return json.dumps(json_safe(value), indent=indent, default=str, allow_nan=False)
