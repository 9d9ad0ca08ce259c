"""The sampler's GPU reads: VRAM and utilisation per GPU, and each runner's VRAM.

Read every `every_s` (the sampler's process interval, 2 s); a machine that showed no GPU is
asked again only every `idle_every_s` (60 s): a Mac (unified memory, shown as host memory) or a
CPU box pays one failed library load a minute, and a GPU that appears (a driver loaded later)
is still found. The newest snapshot answers `vram_of(pid)` for the model rows of every tick.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

IDLE_EVERY_S = 60.0


class GpuReader:
    def __init__(self, probe: Any, *, every_s: float, idle_every_s: float = IDLE_EVERY_S) -> None:
        self.probe = probe  # oasis_ops.probes.gpu.GpuProbe (or a test's)
        self.every_s = every_s
        self.idle_every_s = idle_every_s
        self.last: Any = None  # the newest GpuSnapshot
        self._next = float("-inf")

    def due(self, mono: float) -> bool:
        return mono >= self._next

    def read(self, mono: float, ts: datetime) -> list[dict[str, Any]]:
        """Read now if due: the gpu_samples rows (at `ts`), else []. Never raises."""
        if not self.due(mono):
            return []
        snapshot = self.probe.read()
        self.last = snapshot
        self._next = mono + (self.every_s if snapshot.gpus else self.idle_every_s)
        return [{**row, "ts": ts} for row in snapshot.as_rows()]

    def vram_of(self, pid: int | None) -> int | None:
        """VRAM held by `pid` at the newest read (None: no GPU, or not reported)."""
        if pid is None or self.last is None or not self.last.gpus:
            return None
        return self.last.vram_of(pid)  # type: ignore[no-any-return]
