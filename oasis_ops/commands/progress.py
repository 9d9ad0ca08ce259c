"""A one-line progress bar on stderr for long CLI work (ingest-logs over a big server.log).

Drawn only where someone watches (stderr is a terminal, or `--progress always`) and only for
inputs of at least `min_bytes`; redrawn at most every `interval` seconds; the line is cleared
when the work ends, so the command's own output stays clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

PROGRESS_MIN_BYTES = 4 << 20
WIDTH = 24


class ProgressBar:
    """`bar(label, done, total)`: bytes done of total; `close()` clears the line."""

    def __init__(self, stream: TextIO, *, min_bytes: int = PROGRESS_MIN_BYTES, interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.stream = stream
        self.min_bytes = min_bytes
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last = float("-inf")
        self._drawn = False
        self.lines_drawn = 0

    def __call__(self, label: str, done: int, total: int) -> None:
        if total < self.min_bytes:
            return
        now = self.clock()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        share = min(1.0, done / total) if total else 1.0
        filled = int(share * WIDTH)
        rate = done / max(now - self.started, 1e-6) / 1e6
        text = (
            f"\r{Path(label).name} [{'#' * filled}{'.' * (WIDTH - filled)}] {share * 100:3.0f}%"
            f"  {done / 1e6:,.1f}/{total / 1e6:,.1f} MB  {rate:,.0f} MB/s"
        )
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._drawn = True
        self.lines_drawn += 1

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def wanted(mode: str, stream: TextIO) -> bool:
    """`--progress auto|always|never`: auto draws only on a terminal."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
