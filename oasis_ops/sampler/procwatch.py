"""A cheaper process list for the sampler: a full scan now and then, the known processes between.

A full psutil scan reads the command line of every process on the machine (~10 ms for ~100
processes here). Between full scans (every FULL_SCAN_S, or at once when something changed) only
the Ollama processes the last full scan found are measured again (RSS, CPU %, threads: well
under a millisecond). Something changed means: a known process is gone or its PID was reused,
or the sampler asked (`force()`: a model appeared or left, or a model has no runner matched).
CPU % is measured on one psutil.Process object per (pid, create_time), kept between calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import psutil

from oasis_ops.probes import ProcessRecord, PsutilProcesses
from oasis_ops.probes.processes import ProcessList, serve_pid_for  # noqa: F401 (serve_pid_for: re-exported)

FULL_SCAN_S = 30.0


class RunnerWatch:
    """Callable like PsutilProcesses (a ProcessList), for ModelProbe."""

    def __init__(
        self,
        full_scan: ProcessList | None = None,
        *,
        full_scan_s: float = FULL_SCAN_S,
        monotonic: Callable[[], float] = time.monotonic,
        on_full_scan: Callable[[list[ProcessRecord]], None] | None = None,
    ) -> None:
        self.full_scan = full_scan or PsutilProcesses(with_environ=False)
        self.on_full_scan = on_full_scan
        self.full_scan_s = full_scan_s
        self.monotonic = monotonic
        self.full_scans = 0
        self.light_scans = 0
        self._known: list[ProcessRecord] = []
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._last_full = float("-inf")
        self._force = True

    def force(self) -> None:
        """Make the next call a full scan."""
        self._force = True

    def __call__(self) -> list[ProcessRecord]:
        now = self.monotonic()
        if self._force or now - self._last_full >= self.full_scan_s:
            return self._full(now)
        measured = [self._measure(r) for r in self._known]
        if any(m is None for m in measured):  # one is gone (or its PID was reused): look again
            return self._full(now)
        self.light_scans += 1
        return [m for m in measured if m is not None]

    def _full(self, now: float) -> list[ProcessRecord]:
        self._force = False
        self._last_full = now
        self.full_scans += 1
        self._known = [r for r in self.full_scan() if r.create_time]
        if self.on_full_scan is not None:
            self.on_full_scan(self._known)
        alive = {(r.pid, r.create_time) for r in self._known}
        for key in list(self._procs):  # bounded: only processes still known
            if key not in alive:
                del self._procs[key]
        out = []
        for record in self._known:
            measured = self._measure(record)
            out.append(measured if measured is not None else record)
        return out

    def _measure(self, record: ProcessRecord) -> ProcessRecord | None:
        """The record with fresh RSS / CPU % / threads; None when the process is gone."""
        key = (record.pid, record.create_time)
        first_look = key not in self._procs
        try:
            proc = self._procs.get(key) or psutil.Process(record.pid)
            with proc.oneshot():
                if abs(proc.create_time() - record.create_time) > 0.01:
                    self._procs.pop(key, None)
                    return None
                cpu = proc.cpu_percent(interval=None)
                rss = proc.memory_info().rss
                threads = proc.num_threads()
            self._procs[key] = proc
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._procs.pop(key, None)
            return None
        except (psutil.AccessDenied, OSError):
            return record  # another user's process: known, not measurable
        return replace(record, rss_bytes=int(rss), cpu_percent=None if first_look else float(cpu), num_threads=int(threads))
