"""A bounded, real memory hog: the memory_pressure fault when the emulator runs on the real host.

A child process of the emulator that holds anonymous memory, written page by page so it is
really resident, and follows the target (MB) it reads as lines on stdin; it frees everything
and exits when stdin closes (the emulator stopped or died). Bounds, whatever it is asked:
- never more than `--cap-mb` (the emulator's OASIS_EMU_HOG_CAP_MB, 1024 by default);
- never below FLOOR_MB of MemAvailable on the host: it stops growing (and gives memory back)
  rather than push the machine into the OOM killer.
"""

from __future__ import annotations

import argparse
import mmap
import os
import select
import sys

BLOCK_BYTES = 8 << 20
FLOOR_MB = 768.0
_PAGE = b"\x5a" * 4096


def mem_available_mb(proc_root: str = "/proc") -> float | None:
    try:
        with open(os.path.join(proc_root, "meminfo"), encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class Hog:
    def __init__(self, cap_mb: float, floor_mb: float = FLOOR_MB) -> None:
        self.cap_mb = cap_mb
        self.floor_mb = floor_mb
        self.blocks: list[mmap.mmap] = []

    @property
    def held_mb(self) -> float:
        return len(self.blocks) * BLOCK_BYTES / (1 << 20)

    def step(self, target_mb: float, max_blocks: int) -> None:
        """Move at most max_blocks towards min(target, cap), respecting the free-memory floor."""
        goal = max(0.0, min(target_mb, self.cap_mb))
        for _ in range(max_blocks):
            available = mem_available_mb()
            if available is not None and available < self.floor_mb and self.blocks:
                self.blocks.pop().close()  # the host is short: give back instead
                continue
            if self.held_mb + BLOCK_BYTES / (1 << 20) <= goal and (available is None or available - 8 >= self.floor_mb):
                block = mmap.mmap(-1, BLOCK_BYTES)
                for offset in range(0, BLOCK_BYTES, len(_PAGE)):
                    block[offset : offset + len(_PAGE)] = _PAGE
                self.blocks.append(block)
            elif self.held_mb > goal and self.blocks:
                self.blocks.pop().close()
            else:
                return

    def release(self) -> None:
        while self.blocks:
            self.blocks.pop().close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oasis-ops memory hog")
    parser.add_argument("--cap-mb", type=float, required=True)
    parser.add_argument("--rate-mb-s", type=float, default=64.0)
    args = parser.parse_args(argv)
    hog = Hog(args.cap_mb)
    target = 0.0
    blocks_per_tick = max(1, int(args.rate_mb_s * 0.1 / (BLOCK_BYTES / (1 << 20))))
    stdin = sys.stdin.buffer
    pending = b""
    try:
        while True:
            readable, _, _ = select.select([stdin], [], [], 0.1)
            if readable:
                data = os.read(stdin.fileno(), 4096)
                if not data:
                    return 0  # the emulator is gone: free everything
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    try:
                        target = float(line)
                    except ValueError:
                        continue
            hog.step(target, blocks_per_tick)
    finally:
        hog.release()


if __name__ == "__main__":
    raise SystemExit(main())
