"""The sampler as it runs in a process: one sampler thread per sidecar, and the launcher's service.

One sampler per sidecar, machine-wide (`SamplerLock`: a second one fails with SidecarBusy), and
one sampler thread per process (`get_sampler()` is a lock-guarded, module-level registry). The
dashboard launcher (`oasis-ops dashboard` / `oasis-ops demo`, the process that starts Streamlit)
runs it as a thread through `SamplerService`, so telemetry is kept from start-up on, with or
without a browser; `oasis-ops sample` runs the same loop headless (core.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oasis_ops.errors import OasisOpsError, SidecarBusy
from oasis_ops.sampler.core import Sampler, log  # the sampler's logger, as before the split
from oasis_ops.settings import Settings
from oasis_ops.sidecar import sidecar_path_for

# --- one sampler thread per process -------------------------------------------------------------
RESTART_EVERY_S = 30.0  # a sampler thread that keeps dying is restarted at most this often
_REGISTRY: dict[str, Sampler] = {}
_REGISTRY_LOCK = threading.Lock()


def get_sampler(sidecar_path: str | os.PathLike[str], settings: Settings, **kwargs: Any) -> Sampler:
    """The running sampler of this sidecar in this process, started on first call.

    Raises SidecarBusy when another process samples that sidecar. A sampler whose thread died is
    replaced (its lock was released when it died).
    """
    key = os.path.realpath(Path(sidecar_path).expanduser())
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(key)
        if existing is not None and existing.alive:
            return existing
        sampler = Sampler(key, settings, **kwargs)
        sampler.start()
        _REGISTRY[key] = sampler
        return sampler


def stop_sampler(sidecar_path: str | os.PathLike[str]) -> None:
    key = os.path.realpath(Path(sidecar_path).expanduser())
    with _REGISTRY_LOCK:
        sampler = _REGISTRY.pop(key, None)
    if sampler is not None:
        sampler.stop()


def running_samplers() -> list[Sampler]:
    with _REGISTRY_LOCK:
        return [s for s in _REGISTRY.values() if s.alive]


class SamplerService:
    """The sampler as a `oasis_ops.server.Service` of the dashboard launcher.

    Runs as a thread of the launcher (`oasis-ops dashboard` / `oasis-ops demo`), not of
    Streamlit: Streamlit runs page scripts only when a browser connects, and a crash of the
    sampler must not take the dashboard down. `poll()` is always None for the same reason: a
    dead sampler shows on the Live page ("sampler is down"), it never stops the console.
    """

    name = "sampler"

    def __init__(self, settings: Settings, *, announce: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.sidecar_path = sidecar_path_for(settings.db, settings)
        self.announce = announce or (lambda line: log.warning("%s", line))
        self.sampler: Sampler | None = None
        self.exporter: Any = None  # oasis_ops.exporter's MetricsServer, when prometheus_listen is set
        self._last_restart = float("-inf")

    def start(self) -> None:
        try:
            self.sampler = get_sampler(self.sidecar_path, self.settings)
        except SidecarBusy as exc:
            self.announce(f"sampler: not started here: {exc}; the console shows that sampler's data")
        except OasisOpsError as exc:
            self.announce(f"sampler: not started: {exc}; the console works without live telemetry")
        if self.settings.prometheus_listen and self.sampler is not None:  # opt-in: the exporter beside this sampler
            from oasis_ops.exporter import start_exporter

            try:
                self.exporter = start_exporter(self.settings, self.sidecar_path)
                self.announce(f"Prometheus metrics at {self.exporter.url}")
            except OasisOpsError as exc:
                self.announce(f"exporter: not started: {exc}")

    def poll(self) -> int | None:
        """Always None (a dead sampler never stops the console), but a sampler thread that died
        is started again, at most once per RESTART_EVERY_S, and said on the launcher's output."""
        sampler = self.sampler
        if sampler is None or sampler.alive:
            return None
        now = time.monotonic()
        if now - self._last_restart < RESTART_EVERY_S:
            return None
        self._last_restart = now
        reason = getattr(sampler, "died", None) or sampler.last_error or "no error recorded"
        try:
            self.sampler = get_sampler(self.sidecar_path, self.settings)
            self.announce(f"sampler: its thread had stopped ({reason}); started again")
        except OasisOpsError as exc:
            self.announce(f"sampler: its thread had stopped ({reason}) and could not start again: {exc}")
        return None

    def stop(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        if self.sampler is not None:
            stop_sampler(self.sidecar_path)
            self.sampler = None
