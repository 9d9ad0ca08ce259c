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
