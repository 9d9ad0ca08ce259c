"""Dashboard side of the control channel (DESIGN.md Contract 3).

We write `control.json` (the request); the runner writes `state.json` (what it applied, plus a
heartbeat). A change is done only when the runner's `applied_version` reaches the version we
wrote: `wait_applied()` never pretends, it raises NotAcknowledged with what it saw.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from oasis_ops.control.files import (
    CONTROL_FILE,
    REQUEST_LOCK_FILE,
    STATE_FILE,
    as_float,
    as_int,
    atomic_write_json,
    check_control_dir,
    ensure_control_dir,
    parse_time,
    read_json,
    utc_now,
)
from oasis_ops.errors import NotAcknowledged, UsageError

DEFAULT_STALE_AFTER_S = 5.0  # the runner heartbeats every ~1 s


@dataclass(frozen=True)
class RunnerState:
    """state.json as the runner wrote it, plus what we computed from it."""

    pid: int | None
    host: str | None
    create_time: float | None
    applied_version: int
    max_concurrency: int | None
    paused: bool | None
    request_timeout_s: float | None
    in_flight: int | None
    completed: int | None
    heartbeat_at: datetime | None
    started_at: datetime | None
    stopped_at: datetime | None
    error: str | None
    error_version: int | None
    heartbeat_age_s: float | None
    pid_alive: bool | None  # None: cannot tell (another host)
    alive: bool  # pid alive (or unknowable) and heartbeat fresh and not stopped
    kind: str = "harness"  # "proxy": the oasis-ops proxy applies the requests
    queued: int | None = None  # requests waiting (the proxy's queue)
    held: str | None = None  # why the proxy holds requests (a recovery in progress), if it does

    def describe(self) -> str:
        age = "no heartbeat" if self.heartbeat_age_s is None else f"last heartbeat {self.heartbeat_age_s:.0f} s ago"
        who = "proxy" if self.kind == "proxy" else "runner"
        if self.alive:
            status = f"{who} alive"
        elif self.stopped_at is not None:
            status = f"{who} stopped"
        elif self.pid_alive is False:
            status = f"{who} gone (pid {self.pid} is not running)"
        else:
            status = f"{who} not responding"
        counts = ", ".join(
            part for part in (
                f"{self.in_flight} in flight" if self.in_flight is not None else "",
                f"{self.queued} queued" if self.queued is not None else "",
                f"holding new requests: {self.held}" if self.held else "",
                f"{self.completed:,} completed" if self.completed is not None else "",
            ) if part
        )  # fmt: skip
        return (
            f"{status} (pid {self.pid}, {age}; applied request v{self.applied_version}: "
            f"{concurrency_wording(None, self.max_concurrency)}, {pause_wording(None, self.paused, alive=self.alive)}"
            + (f"; {counts}" if counts else "") + ")"
        )


def pause_wording(requested: bool | None, applied: bool | None, *, alive: bool = True) -> str:
    """Paused or running, in words: 'paused', 'running', 'pause requested, not yet applied',
    'resume requested, not yet applied (still paused)', or 'no runner state yet' ('(last known)'
    is added when the runner is not alive)."""
    if applied is None:
        if requested is None:
            return "no runner state yet"
        return ("pause" if requested else "resume") + " requested, no runner has applied it"
    if requested is not None and requested != applied:
        return "pause requested, not yet applied" if requested else "resume requested, not yet applied (still paused)"
    word = "paused" if applied else "running"
    return word if alive else f"{word} (last known)"


def concurrency_wording(requested: int | None, applied: int | None) -> str:
    """'max concurrency 4', or 'max concurrency 2 requested, not yet applied (runner at 4)'."""
    if applied is None:
        return "max concurrency unknown" if requested is None else f"max concurrency {requested} requested, no runner has applied it"
    if requested is not None and requested != applied:
        return f"max concurrency {requested} requested, not yet applied (runner at {applied})"
    return f"max concurrency {applied}"


def _pid_alive(pid: int | None, create_time: float | None, host: str | None) -> bool | None:
    if pid is None or pid <= 0:  # 0 / -1 are not processes (psutil.Process(-1) raises ValueError)
        return None
    if host and host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 1.0:
            return False  # the pid was reused by another process
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    except (ValueError, OverflowError):  # a pid beyond pid_t: cannot be running
        return False


def _time_field(data: dict[str, Any], key: str, notes: list[str]) -> datetime | None:
    """parse_time(), noting a present value that is not a usable time (treated as absent)."""
    value = data.get(key)
    parsed = parse_time(value)
    if parsed is None and value not in (None, ""):
        notes.append(f"{STATE_FILE}: {key} {_short(value)} is not a usable time; treated as absent")
    return parsed


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def parse_state(
    data: dict[str, Any],
    now: datetime,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    notes: list[str] | None = None,
) -> RunnerState:
    """Interpret a state.json object leniently: a missing or mistyped field becomes None
    (a present but unusable pid or time also adds a line to `notes`)."""
    notes = [] if notes is None else notes
    raw_pid = data.get("pid")
    pid = raw_pid if isinstance(raw_pid, int) and not isinstance(raw_pid, bool) and raw_pid > 0 else None
    if pid is None and raw_pid is not None:
        notes.append(f"{STATE_FILE}: pid {_short(raw_pid)} is not a process id; treated as absent")
    host = data.get("host") if isinstance(data.get("host"), str) else None
    create_time = as_float(data.get("create_time"))
    heartbeat_at = _time_field(data, "heartbeat_at", notes)
    age = (now - heartbeat_at).total_seconds() if heartbeat_at else None
    stopped_at = _time_field(data, "stopped_at", notes)
    pid_alive = _pid_alive(pid, create_time, host)
    paused = data.get("paused")
    error = data.get("error")
    return RunnerState(
        pid=pid,
        host=host,
        create_time=create_time,
        applied_version=as_int(data.get("applied_version")) or 0,
        max_concurrency=as_int(data.get("max_concurrency")),
        paused=paused if isinstance(paused, bool) else None,
        request_timeout_s=as_float(data.get("request_timeout_s")),
        in_flight=as_int(data.get("in_flight")),
        completed=as_int(data.get("completed")),
        heartbeat_at=heartbeat_at,
        started_at=_time_field(data, "started_at", notes),
        stopped_at=stopped_at,
        error=str(error) if error else None,
        error_version=as_int(data.get("error_version")),
        heartbeat_age_s=age,
        pid_alive=pid_alive,
        alive=age is not None and age <= stale_after_s and pid_alive is not False and stopped_at is None,
        kind="proxy" if data.get("kind") == "proxy" else "harness",
        queued=as_int(data.get("queued")),
        held=" ".join(data["held"].split())[:120] if isinstance(data.get("held"), str) and data["held"].strip() else None,
    )


class ControlChannel:
    """Requests changes from a live runner through `<dir>/control.json` and reads its state."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] = utc_now,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.dir = Path(directory).expanduser()
        self.clock = clock
        self.stale_after_s = stale_after_s
        self.last_note: str | None = None  # why a file was treated as absent, if one was

    @property
    def control_path(self) -> Path:
        return self.dir / CONTROL_FILE

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def request(
        self,
        max_concurrency: int | None = None,
        paused: bool | None = None,
        request_timeout_s: float | None = None,
        requested_by: str = "cli",
    ) -> int:
        """Write a new control.json (fields not given keep their previous values); returns
        its version, which is higher than any version requested or applied before."""
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise UsageError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r} (use pause to stop)")
        if paused is not None and not isinstance(paused, bool):
            raise UsageError(f"paused must be true or false, got {paused!r}")
        if request_timeout_s is not None and (
            isinstance(request_timeout_s, bool) or not isinstance(request_timeout_s, int | float) or request_timeout_s <= 0
        ):
            raise UsageError(f"request_timeout_s must be a positive number, got {request_timeout_s!r}")
        ensure_control_dir(self.dir)
        # Two requesters (CLI and dashboard) must not both write version n+1.
        lock_fd = os.open(self.dir / REQUEST_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            previous = self.requested() or {}
            state, _ = read_json(self.state_path)
            applied = as_int((state or {}).get("applied_version")) or 0
            version = max(as_int(previous.get("version")) or 0, applied) + 1
            # Kept fields are re-validated: a hand-edited invalid value is dropped, not copied.
            kept_concurrency = as_int(previous.get("max_concurrency"))
            kept_timeout = as_float(previous.get("request_timeout_s"))
            kept_paused = previous.get("paused")
            data = {
                "version": version,
                "max_concurrency": max_concurrency
                if max_concurrency is not None
                else (kept_concurrency if kept_concurrency and kept_concurrency >= 1 else None),
                "paused": paused if paused is not None else (kept_paused if isinstance(kept_paused, bool) else False),
                "request_timeout_s": request_timeout_s
                if request_timeout_s is not None
                else (kept_timeout if kept_timeout and kept_timeout > 0 else None),
                "requested_at": self.clock().isoformat(),
                "requested_by": requested_by,
            }
            atomic_write_json(self.control_path, data)
        finally:
            os.close(lock_fd)  # closing releases the flock
        return version

    def requested(self) -> dict[str, Any] | None:
        """The current control.json, or None (absent or unreadable: see last_note)."""
        check_control_dir(self.dir)
        data, note = read_json(self.control_path)
        self.last_note = note
        return data

    def runner_state(self) -> RunnerState | None:
        """The runner's state.json, or None (absent or unreadable: see last_note)."""
        check_control_dir(self.dir)
        data, note = read_json(self.state_path)
        self.last_note = note
        if data is None:
            return None
        notes: list[str] = []
        state = parse_state(data, self.clock(), self.stale_after_s, notes)
        self.last_note = "; ".join(notes) or None
        return state

    def wait_applied(self, version: int, timeout_s: float = 10.0, poll_s: float = 0.1) -> RunnerState:
        """Wait until the runner's applied_version reaches `version`; NotAcknowledged otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.runner_state()
            if state is not None:
                if state.applied_version >= version:
                    return state
                if state.error_version == version and state.error:
                    raise NotAcknowledged(f"runner rejected control version {version}: {state.error}")
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
        if state is None:
            detail = self.last_note or f"no runner has ever written {STATE_FILE} in {self.dir}"
            raise NotAcknowledged(
                f"runner did not acknowledge version {version} within {timeout_s:g} s: {detail}",
                hint="is the harness using oasis_ops.control.RunnerControl on this directory?",
            )
        seen = "no heartbeat" if state.heartbeat_age_s is None else f"last heartbeat {state.heartbeat_age_s:.0f} s ago"
        if state.pid_alive is False:
            seen += f", pid {state.pid} is not running"
        elif state.stopped_at is not None:
            seen += ", runner stopped"
        raise NotAcknowledged(
            f"runner did not acknowledge version {version} within {timeout_s:g} s "
            f"({seen}; applied version {state.applied_version})"
        )


def control_summary(directory: Path | None, clock: Callable[[], datetime] = utc_now) -> dict[str, Any] | None:
    """Who applies the control channel now (the harness's helper or the oasis-ops proxy) and its
    queue, as a dict for `status --json` and the Live page; None when no runner ever wrote state.json."""
    if directory is None or not directory.is_dir():
        return None
    channel = ControlChannel(directory, clock=clock)
    try:
        state = channel.runner_state()
        requested = channel.requested() or {}
    except UsageError:  # a control directory we refuse (another user's): say so elsewhere
        return None
    if state is None:
        return None
    return {
        "dir": str(directory), "kind": state.kind, "alive": state.alive, "pid": state.pid,
        "max_concurrency": state.max_concurrency, "paused": state.paused, "in_flight": state.in_flight,
        "queued": state.queued, "held": state.held, "completed": state.completed,
        "requested_version": as_int(requested.get("version")), "applied_version": state.applied_version,
        "heartbeat_age_s": None if state.heartbeat_age_s is None else round(state.heartbeat_age_s, 1),
        "summary": state.describe(),
    }  # fmt: skip
