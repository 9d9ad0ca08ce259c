"""Control-channel test helpers: a real runner process (RunnerControl + ResizableLimiter + a
thread pool) and readers for the log it writes.

Run as a script: `python tests/helpers_control.py pool CONTROL_DIR LOG [--workers 8] [--task-s 0.3]
[--limit 2]` runs a worker pool until CONTROL_DIR/stop exists; every task start and end, and
every limit/pause/resume applied, is one JSON line in LOG. `spam CONTROL_DIR N` writes N
control requests and N state files as fast as it can (for torn-read tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from oasis_ops.control import ControlChannel, ResizableLimiter, RunnerControl  # noqa: E402
from oasis_ops.control.files import atomic_write_json  # noqa: E402


class EventLog:
    def __init__(self, path: Path) -> None:
        self._handle = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, **event: Any) -> None:
        event.setdefault("t", time.time())
        with self._lock:
            self._handle.write(json.dumps(event) + "\n")
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class LoggingLimiter(ResizableLimiter):
    """Logs each applied change with the number of acquisitions made so far (exact, not timed)."""

    def __init__(self, limit: int, log: EventLog) -> None:
        super().__init__(limit)
        self.log = log

    def _acquired(self) -> int:
        with self._cond:
            return self.in_flight + self.completed

    def set_limit(self, limit: int) -> None:
        super().set_limit(limit)
        self.log.write(ev="limit", limit=limit, in_flight=self.in_flight, acquired=self._acquired())

    def pause(self) -> None:
        super().pause()  # from here on no acquisition can happen, so the count below is final
        self.log.write(ev="paused", in_flight=self.in_flight, acquired=self._acquired())

    def resume(self) -> None:
        acquired = self._acquired()  # before resuming: every acquisition made while paused
        super().resume()
        self.log.write(ev="resumed", acquired=acquired)


def run_pool(control_dir: Path, log_path: Path, workers: int, task_s: float, limit: int) -> int:
    log = EventLog(log_path)
    limiter = LoggingLimiter(limit, log)
    stop = threading.Event()
    running = [0]
    running_lock = threading.Lock()
    task_ids = iter(range(10**9))

    def worker() -> None:
        while not stop.is_set():
            if not limiter.acquire(timeout=0.1):
                continue
            try:
                with running_lock:
                    task = next(task_ids)
                    running[0] += 1
                    now_running = running[0]
                log.write(ev="start", task=task, running=now_running)
                started = time.monotonic()
                time.sleep(task_s)  # the "model call": never interrupted by a limit change
                with running_lock:
                    running[0] -= 1
                log.write(ev="end", task=task, duration_s=time.monotonic() - started)
            finally:
                limiter.release()

    control = RunnerControl(control_dir, limiter=limiter, poll_interval_s=0.5, heartbeat_interval_s=0.5)
    control.start()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    log.write(ev="ready")
    while not (control_dir / "stop").exists():
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    control.stop()
    log.write(ev="exit", completed=limiter.completed)
    log.close()
    return 0


def spam(control_dir: Path, count: int) -> int:
    channel = ControlChannel(control_dir)
    filler = "x" * 8000  # large files make a torn (non-atomic) write easy to catch
    for i in range(count):
        channel.request(max_concurrency=1 + i % 7, requested_by=f"spam-{i}-{filler}")
        atomic_write_json(control_dir / "state.json", {"pid": 1, "applied_version": i, "filler": filler})
    return 0


# --- reading the pool's log --------------------------------------------------------------------
def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def intervals(events: list[dict[str, Any]]) -> dict[int, tuple[float, float | None]]:
    """task -> (start, end or None while still running)."""
    out: dict[int, tuple[float, float | None]] = {}
    for event in events:
        if event["ev"] == "start":
            out[event["task"]] = (event["t"], None)
        elif event["ev"] == "end":
            out[event["task"]] = (out[event["task"]][0], event["t"])
    return out


def max_concurrency(events: list[dict[str, Any]], t0: float, t1: float) -> int:
    """The most tasks running at once at any instant in [t0, t1], from the pool's own log."""
    points = []
    for start, end in intervals(events).values():
        end_t = float("inf") if end is None else end
        if end_t <= t0 or start >= t1:
            continue
        points.append((max(start, t0), 1))
        points.append((min(end_t, t1), -1))
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    pool = sub.add_parser("pool")
    pool.add_argument("control_dir", type=Path)
    pool.add_argument("log", type=Path)
    pool.add_argument("--workers", type=int, default=8)
    pool.add_argument("--task-s", type=float, default=0.3)
    pool.add_argument("--limit", type=int, default=2)
    spam_parser = sub.add_parser("spam")
    spam_parser.add_argument("control_dir", type=Path)
    spam_parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.mode == "pool":
        return run_pool(args.control_dir, args.log, args.workers, args.task_s, args.limit)
    return spam(args.control_dir, args.count)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
