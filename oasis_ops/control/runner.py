"""Runner side of the control channel: what a harness adopts in a few lines.

    limiter = ResizableLimiter(4)
    with RunnerControl(control_dir_for("trials.duckdb"), limiter=limiter):
        ...  # workers do `with limiter: run_trial()`

A background thread polls `control.json` (every `poll_interval_s`, by mtime/size/inode, then by
version), applies `max_concurrency` and `paused` to the limiter, calls `on_change(request)`,
and writes `state.json` atomically: at once after a change, and as a heartbeat every
`heartbeat_interval_s`. The control.json present at start is applied too: the request stands
until someone changes it. If `on_change` raises or the request is invalid, nothing is applied
and state.json says why (`error`, `error_version`), so the dashboard reports a rejection
instead of waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from oasis_ops.control.files import (
    CONTROL_FILE,
    STATE_FILE,
    as_float,
    as_int,
    atomic_write_json,
    ensure_control_dir,
    read_json,
    utc_now,
)
from oasis_ops.control.limiter import Limiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlRequest:
    """A validated control.json; None fields were not set by the requester."""

    version: int
    max_concurrency: int | None
    paused: bool | None
    request_timeout_s: float | None
    requested_at: str | None
    requested_by: str | None


class InvalidRequest(ValueError):
    pass


def parse_request(data: dict[str, Any]) -> ControlRequest:
    version = as_int(data.get("version"))
    if version is None or version < 1:
        raise InvalidRequest(f"version must be an integer >= 1, got {data.get('version')!r}")
    max_concurrency = data.get("max_concurrency")
    if max_concurrency is not None and (as_int(max_concurrency) is None or as_int(max_concurrency) < 1):  # type: ignore[operator]
        raise InvalidRequest(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    paused = data.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise InvalidRequest(f"paused must be true or false, got {paused!r}")
    timeout = data.get("request_timeout_s")
    if timeout is not None and (as_float(timeout) is None or as_float(timeout) <= 0):  # type: ignore[operator]
        raise InvalidRequest(f"request_timeout_s must be a positive number, got {timeout!r}")
    requested_at, requested_by = data.get("requested_at"), data.get("requested_by")
    return ControlRequest(
        version=version,
        max_concurrency=as_int(max_concurrency) if max_concurrency is not None else None,
        paused=paused,
        request_timeout_s=as_float(timeout) if timeout is not None else None,
        requested_at=str(requested_at) if requested_at is not None else None,
        requested_by=str(requested_by) if requested_by is not None else None,
    )


class RunnerControl:
    """Polls the control directory in a background thread and acknowledges in state.json."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        limiter: Limiter | None = None,
        on_change: Callable[[ControlRequest], None] | None = None,
        poll_interval_s: float = 0.5,
        heartbeat_interval_s: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        extra_state: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.dir = Path(directory).expanduser()
        self.extra_state = extra_state  # more keys for state.json (the proxy: kind, queued, held)
        self.limiter = limiter
        self.on_change = on_change
        self.poll_interval_s = poll_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.applied_version = 0
        self.max_concurrency: int | None = limiter.limit if limiter is not None else None
        self.paused: bool = limiter.paused if limiter is not None else False
        self.request_timeout_s: float | None = None
        self.error: str | None = None
        self.error_version: int | None = None
        self._started_tasks = 0
        self._finished_tasks = 0
        self._counter_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control_key: tuple[int, int, int] | None = None
        self._started_at: datetime | None = None
        self._create_time = psutil.Process().create_time()

    # --- task counters, for harnesses that do not use our limiter --------------------------------
    def task_started(self) -> None:
        with self._counter_lock:
            self._started_tasks += 1

    def task_finished(self) -> None:
        with self._counter_lock:
            self._finished_tasks += 1

    @property
    def in_flight(self) -> int:
        if self.limiter is not None:
            return self.limiter.in_flight
        with self._counter_lock:
            return self._started_tasks - self._finished_tasks

    @property
    def completed(self) -> int:
        if self.limiter is not None:
            return self.limiter.completed
        with self._counter_lock:
            return self._finished_tasks

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> RunnerControl:
        if self._thread is not None:
            return self
        ensure_control_dir(self.dir)
        self._started_at = self.clock()
        self._stop.clear()
        self.poll_once()  # apply a standing request and announce ourselves before work starts
        self._thread = threading.Thread(target=self._run, name="oasis-ops-runner-control", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=max(5.0, 2 * self.poll_interval_s))
        self._write_state(stopped=True)

    def __enter__(self) -> RunnerControl:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        next_heartbeat = time.monotonic() + self.heartbeat_interval_s
        while not self._stop.wait(self.poll_interval_s):
            try:
                changed = self._check_control()
                now = time.monotonic()
                if changed or now >= next_heartbeat:
                    self._write_state()
                    next_heartbeat = now + self.heartbeat_interval_s
            except Exception:  # the poller must outlive any single bad poll
                log.exception("runner control poll failed")

    def poll_once(self) -> bool:
        """One poll and state write (the thread does this every poll_interval_s)."""
        changed = self._check_control()
        self._write_state()
        return changed

    # --- the work ------------------------------------------------------------------------------
    def _check_control(self) -> bool:
        """Apply a new control.json if there is one; True when state.json must be rewritten."""
        path = self.dir / CONTROL_FILE
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return False
        key = (info.st_mtime_ns, info.st_size, info.st_ino)
        if key == self._control_key:
            return False
        self._control_key = key
        data, note = read_json(path)
        if data is None:
            if note:
                log.warning("%s", note)
            return False
        try:
            request = parse_request(data)
        except InvalidRequest as exc:
            version = as_int(data.get("version"))
            if version is not None and version == self.applied_version:
                return False
            return self._reject(version, f"invalid control.json: {exc}")
        if request.version == self.applied_version:
            return False
        if self.on_change is not None:
            try:
                self.on_change(request)
            except Exception as exc:
                return self._reject(request.version, f"on_change failed: {type(exc).__name__}: {exc}")
        if self.limiter is not None:
            if request.max_concurrency is not None:
                self.limiter.set_limit(request.max_concurrency)
            if request.paused is True:
                self.limiter.pause()
            elif request.paused is False:
                self.limiter.resume()
        if request.max_concurrency is not None:
            self.max_concurrency = request.max_concurrency
        if request.paused is not None:
            self.paused = request.paused
        if request.request_timeout_s is not None:
            self.request_timeout_s = request.request_timeout_s
        self.applied_version = request.version
        self.error, self.error_version = None, None
        log.info(
            "applied control v%d: max_concurrency=%s paused=%s request_timeout_s=%s (by %s)",
            request.version, self.max_concurrency, self.paused, self.request_timeout_s, request.requested_by,
        )
        return True

    def _reject(self, version: int | None, message: str) -> bool:
        log.error("control v%s rejected: %s", version, message)
        self.error, self.error_version = message, version
        return True

    def state(self, *, stopped: bool = False) -> dict[str, Any]:
        now = self.clock()
        extra = self.extra_state() if self.extra_state is not None else {}
        return extra | {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "create_time": self._create_time,
            "started_at": self._started_at.isoformat() if self._started_at else None,
            "applied_version": self.applied_version,
            "max_concurrency": self.limiter.limit if self.limiter is not None else self.max_concurrency,
            "paused": self.limiter.paused if self.limiter is not None else self.paused,
            "request_timeout_s": self.request_timeout_s,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "heartbeat_at": now.isoformat(),
            "stopped_at": now.isoformat() if stopped else None,
            "error": self.error,
            "error_version": self.error_version,
        }

    def _write_state(self, *, stopped: bool = False) -> None:
        try:
            atomic_write_json(self.dir / STATE_FILE, self.state(stopped=stopped))
        except OSError as exc:  # a full disk must not take the harness down
            log.warning("cannot write %s: %s", self.dir / STATE_FILE, exc)
