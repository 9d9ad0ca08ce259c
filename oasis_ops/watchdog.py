"""The watchdog (issue 5): opt-in automatic recovery, one `tick(now)` at a time.

Off by default (`watchdog` setting); the UI switch is persisted to `<control dir>/watchdog.json`
(`{"enabled": bool, "dry_run": bool, "updated_at": ..., "updated_by": ...}`) so the sampler
process and a headless `oasis-ops watchdog` see it; the file, when present, wins over settings.
Dry-run mode audits what it would do (outcome `dry_run`) and does nothing.

Policies, evaluated on each tick:
(a) stuck runner: a model Stopping longer than `watchdog_stopping_s` while trials are not
    completing (no ok trial started since it began Stopping; without a trial DB: its runner's
    CPU is busy) -> hard-kill that exact runner (pid, create_time from the probe). Stopping alone
    is not acted on: a busy model shows it while it works, and Ollama ends an ordinary Stopping
    itself (it SIGKILLs the runner once no request holds it). One that outlasts the limit while
    nothing completes is held by requests on a wedged runner (or its runner cannot be reaped).
(b) memory guard: pressure >= `watchdog_max_pressure` or available memory <
    `watchdog_min_free_gb` -> concurrency 1 (or pause, per `watchdog_guard_action`); after
    `watchdog_restore_min` minutes without the condition -> the previous concurrency (or resume).

Every automatic action is audited with requested_by=watchdog. A stuck state (model + runner
(pid, create_time) + stopping_since) is acted on once, ever: the key is remembered here and in
the audit row (so a restarted watchdog, or a second process, does not repeat it); at most one
kill per model per `kill_interval_s`. Only one watchdog acts per control directory at a time
(an flock on `watchdog.lock`).

The sampler drives it: `watchdog.tick(now, models=snapshots, host=host_sample)` once per tick
with what it just probed; headless (`oasis-ops watchdog`), tick() probes by itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oasis_ops.actions import (
    ActionContext,
    ActionResult,
    audit,
    hard_kill,
    pause,
    resume,
    set_concurrency,
)
from oasis_ops.actions.episodes import StoppingEpisodes
from oasis_ops.control.files import (
    atomic_write_json,
    check_control_dir,
    ensure_control_dir,
    parse_time,
    read_json,
)
from oasis_ops.errors import OasisOpsError
from oasis_ops.moments import as_utc_datetime
from oasis_ops.probes import ModelProbe, ModelSnapshot
from oasis_ops.probes.host import HostSample
from oasis_ops.settings import Settings

log = logging.getLogger(__name__)

SWITCH_FILE = "watchdog.json"
LOCK_FILE = "watchdog.lock"
DEFAULT_KILL_INTERVAL_S = 600.0  # at most one automatic kill per model per 10 minutes
BUSY_CPU_PERCENT = 50.0  # without a trial DB, a Stopping runner this busy counts as "not completing"
MAX_REMEMBERED = 256


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the switch -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchdogSwitch:
    enabled: bool
    dry_run: bool
    source: str  # "switch file" | "settings"
    updated_at: datetime | None = None
    updated_by: str | None = None
    note: str | None = None  # e.g. why the switch file was not trusted

    def describe(self) -> str:
        state = ("on (dry run: only logs)" if self.dry_run else "on") if self.enabled else "off"
        return f"watchdog {state} (from the {self.source})" + (f"; {self.note}" if self.note else "")


def switch_path(control_dir: str | os.PathLike[str]) -> Path:
    return Path(control_dir).expanduser() / SWITCH_FILE


def read_switch(control_dir: str | os.PathLike[str] | None, settings: Settings) -> WatchdogSwitch:
    """The switch file when present and valid (in a control directory that is safely ours:
    check_control_dir), else the `watchdog` / `watchdog_dry_run` settings."""
    if control_dir is not None:
        try:
            check_control_dir(Path(control_dir).expanduser())
        except OasisOpsError as exc:
            log.warning("ignoring the watchdog switch file: %s", exc.message)
            return WatchdogSwitch(bool(settings.watchdog), bool(settings.watchdog_dry_run), "settings",
                                  note=f"switch file ignored: {exc.message}")  # fmt: skip
        data, _note = read_json(switch_path(control_dir))
        if data is not None and isinstance(data.get("enabled"), bool):
            return WatchdogSwitch(
                enabled=data["enabled"],
                dry_run=bool(data.get("dry_run", False)),
                source="switch file",
                updated_at=parse_time(data.get("updated_at")),
                updated_by=data.get("updated_by") if isinstance(data.get("updated_by"), str) else None,
            )
    return WatchdogSwitch(bool(settings.watchdog), bool(settings.watchdog_dry_run), "settings")


def write_switch(ctx: ActionContext, enabled: bool, dry_run: bool) -> ActionResult:
    """Persist the switch (audited as action `watchdog`, target on/off)."""
    target = "on" if enabled else "off"
    params = {"enabled": enabled, "dry_run": dry_run}
    if ctx.control is None:
        result = ActionResult("watchdog", target, "refused", "no control directory to keep the switch in: pass --db",
                              {}, 0.0, params, ctx.requested_by)  # fmt: skip
        return audit(ctx.sidecar, result)
    try:
        ensure_control_dir(ctx.control.dir)
        atomic_write_json(
            switch_path(ctx.control.dir),
            {"enabled": enabled, "dry_run": dry_run, "updated_at": utc_now().isoformat(), "updated_by": ctx.requested_by},
        )
    except (OasisOpsError, OSError) as exc:
        message = str(exc)  # ours: the message (and hint); the OS's: its own words
        return audit(ctx.sidecar, ActionResult("watchdog", target, "failed", message, {}, 0.0, params, ctx.requested_by))
    mode = " (dry run)" if enabled and dry_run else ""
    result = ActionResult("watchdog", target, "done", f"watchdog switched {target}{mode}",
                          {"switch_file": str(switch_path(ctx.control.dir))}, 0.0, params, ctx.requested_by)  # fmt: skip
    return audit(ctx.sidecar, result)


def open_lock_file(path: Path, notes: list[str]) -> int | None:
    """Open (creating, mode 0600) a lock file without following a symlink, and only if it is a
    regular file owned by us: a file planted by someone else is never truncated or written.
    None (with the reason in `notes`) when it cannot be used."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        notes.append(f"cannot open the watchdog lock {path}: {why}")
        return None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_uid != os.getuid():
        problem = f"owned by uid {info.st_uid}, not by us (uid {os.getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem is not None:
        os.close(fd)
        notes.append(f"refusing the watchdog lock {path}: {problem}")
        return None
    return fd


# --- the policy -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchdogPolicy:
    stopping_s: float
    min_free_bytes: float
    max_pressure: float
    guard_action: str  # "concurrency" | "pause"
    restore_s: float
    kill_interval_s: float = DEFAULT_KILL_INTERVAL_S
    busy_cpu_percent: float = BUSY_CPU_PERCENT
    on_forecast: bool = False  # an early warning of memory exhaustion triggers the guard too

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WatchdogPolicy:
        values: dict[str, Any] = {
            "stopping_s": float(settings.watchdog_stopping_s),
            "min_free_bytes": float(settings.watchdog_min_free_gb) * 1e9,
            "max_pressure": float(settings.watchdog_max_pressure),
            "guard_action": settings.watchdog_guard_action,  # one of settings.CHOICES, checked there
            "restore_s": float(settings.watchdog_restore_min) * 60.0,
            "kill_interval_s": float(settings.watchdog_kill_interval_min) * 60.0,
            "on_forecast": bool(settings.watchdog_guard_on_forecast),
        }
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stopping_s": self.stopping_s,
            "min_free_gb": self.min_free_bytes / 1e9,
            "max_pressure": self.max_pressure,
            "guard_action": self.guard_action,
            "restore_min": self.restore_s / 60.0,
            "kill_interval_min": self.kill_interval_s / 60.0,
            "guard_on_forecast": self.on_forecast,
        }


@dataclass
class GuardEpisode:
    since: datetime
    action: str  # "concurrency" | "pause"
    previous_concurrency: int | None
    previous_paused: bool | None
    reason: str


def _host_value(host: HostSample | Mapping[str, Any], name: str) -> Any:
    return host.get(name) if isinstance(host, Mapping) else getattr(host, name)


class Watchdog:
    """Stateful: remembers what it already did. One per process that drives it."""

    def __init__(
        self,
        ctx: ActionContext,
        *,
        completed_since: Callable[[datetime], int] | None = None,
        policy: WatchdogPolicy | None = None,
        probe: ModelProbe | None = None,
        host_probe: Callable[[], HostSample | Mapping[str, Any]] | None = None,
    ) -> None:
        self.ctx = ctx.as_requester("watchdog")
        self.completed_since = completed_since
        self.policy = policy or WatchdogPolicy.from_settings(ctx.settings)
        self.probe = probe
        self.host_probe = host_probe
        self.handled: OrderedDict[str, str] = OrderedDict()  # stuck-state key -> outcome acted with
        self.last_kill: dict[str, datetime] = {}
        self.guard: GuardEpisode | None = None
        self.episodes = StoppingEpisodes()
        self.recovered_since: datetime | None = None
        self.notes: list[str] = []  # why nothing was done on the last tick (for status lines)
        self.ticks = 0
        self._lock_fd: int | None = None

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        db: str | os.PathLike[str] | None = None,
        *,
        sidecar_path: str | os.PathLike[str] | None = None,
        completed_since: Callable[[datetime], int] | None = None,
    ) -> Watchdog:
        """The real one: Ollama from settings, audit rows to db's sidecar (or `sidecar_path`),
        the control channel beside db, and (when db exists) trials from a TrialSource on it."""
        ctx = ActionContext.from_settings(settings, db=db, sidecar_path=sidecar_path)  # __init__ makes it the watchdog's
        if completed_since is None and ctx.db and Path(ctx.db).expanduser().exists():
            completed_since = trial_counter(ctx.db, settings)
        return cls(ctx, completed_since=completed_since)

    # --- switch and lock --------------------------------------------------------------------
    def switch(self) -> WatchdogSwitch:
        return read_switch(self.ctx.control.dir if self.ctx.control else None, self.ctx.settings)

    def _lock(self) -> bool:
        """Hold `watchdog.lock` in the control directory (or beside the sidecar) for good."""
        if self._lock_fd is not None:
            return True
        if self.ctx.control is not None:
            try:
                ensure_control_dir(self.ctx.control.dir)
            except OasisOpsError as exc:
                self.notes.append(exc.message)
                return False
            path = self.ctx.control.dir / LOCK_FILE
        elif self.ctx.sidecar is not None:
            path = Path(str(self.ctx.sidecar.path) + "." + LOCK_FILE)
        else:
            return True
        fd = open_lock_file(path, self.notes)
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            self.notes.append(f"another watchdog is active ({holder or 'unknown process'}); this one stands by")
            return False
        os.ftruncate(fd, 0)  # ours (checked by open_lock_file) and locked by us
        os.pwrite(fd, json.dumps({"pid": os.getpid()}).encode(), 0)
        self._lock_fd = fd
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- the tick ---------------------------------------------------------------------------
    def tick(
        self,
        now: datetime | None = None,
        models: Sequence[ModelSnapshot] | None = None,
        host: HostSample | Mapping[str, Any] | None = None,
        warnings: Sequence[Any] = (),
    ) -> list[ActionResult]:
        """Evaluate both policies once; returns the actions taken (audited). Never raises for
        probe or action failures: they end up in `notes` or in the results. `warnings`: the early
        warnings active now (oasis_ops.earlywarning), for the guard's `on_forecast`."""
        now = now or utc_now()
        self.ticks += 1
        self.notes = []
        switch = self.switch()
        if not switch.enabled:
            self.notes.append(switch.describe())
            return []
        if not self._lock():
            return []
        if models is None:
            models = self._probe_models()
        if host is None and self.host_probe is not None:
            try:
                host = self.host_probe()
            except OasisOpsError as exc:
                self.notes.append(f"host memory: {exc.message}")
        self.episodes.update(models, self.ctx.sidecar)
        results: list[ActionResult] = []
        for snapshot in models:
            result = self._check_stuck(now, snapshot, switch.dry_run)
            if result is not None:
                results.append(result)
        if host is not None:
            results.extend(self._memory_guard(now, host, switch.dry_run, warnings))
        for result in results:
            log.warning("watchdog: %s %s: %s (%s)", result.action, result.target, result.outcome, result.message)
        return results

    def _probe_models(self) -> list[ModelSnapshot]:
        if self.probe is None:
            self.probe = ModelProbe(self.ctx.client, models_dir=self.ctx.models_dir)
        # the serve listening on the Ollama port, looked up each time (Ollama may have restarted)
        self.probe.serve_pid = self.ctx.current_serve_pid()
        try:
            return self.probe.snapshot()
        except OasisOpsError as exc:
            self.notes.append(f"models: {exc.message}")
            return []

    # --- (a) stuck runner -------------------------------------------------------------------
    @staticmethod
    def stuck_key(snapshot: ModelSnapshot, since: datetime | None) -> str:
        """model + runner (pid, create_time) + when its Stopping episode began."""
        create = f"{snapshot.runner_create_time:.2f}" if snapshot.runner_create_time is not None else "-"
        return f"{snapshot.model}|{snapshot.runner_pid}|{create}|{since.isoformat() if since else '-'}"

    def _remember(self, key: str, outcome: str) -> None:
        self.handled[key] = outcome
        while len(self.handled) > MAX_REMEMBERED:
            self.handled.popitem(last=False)

    def _check_stuck(self, now: datetime, snapshot: ModelSnapshot, dry_run: bool) -> ActionResult | None:
        status = snapshot.status
        if status.state != "stopping" or status.stopping_since is None:
            return None
        since = self.episodes.start(snapshot) or status.stopping_since
        stopping_for = (now - since).total_seconds()
        if stopping_for < self.policy.stopping_s:
            return None
        if snapshot.runner_pid is None or snapshot.runner_create_time is None:
            self.notes.append(f"{snapshot.model} Stopping for {stopping_for:.0f} s but no runner process is matched")
            return None
        key = self.stuck_key(snapshot, since)
        if key in self.handled and (self.handled[key] != "dry_run" or dry_run):
            return None  # a dry run does not count once the switch says act for real
        evidence = self._not_completing(snapshot, since)
        if evidence is None:
            return None
        trigger = {"key": key, "stopping_for_s": round(stopping_for, 1), "evidence": evidence,
                   "policy": "stopping", "stopping_s": self.policy.stopping_s}  # fmt: skip
        if self._already_done(key, now):
            self._remember(key, "done")
            return None
        last = self.last_kill.get(snapshot.model) or self._last_kill_audited(snapshot.model, now)
        if last is not None and (now - last).total_seconds() < self.policy.kill_interval_s:
            self._remember(key, "refused")
            message = (f"not killing {snapshot.model}'s runner pid {snapshot.runner_pid}: a runner of it was killed at "
                       f"{last:%H:%M:%S} UTC; at most one kill per {self.policy.kill_interval_s / 60:g} min")  # fmt: skip
            result = ActionResult("hard_kill", snapshot.model, "refused", message, {"trigger": trigger},
                                  0.0, {"pid": snapshot.runner_pid}, "watchdog")  # fmt: skip
            return audit(self.ctx.sidecar, result)
        result = hard_kill(self.ctx, snapshot.model, pid=snapshot.runner_pid, create_time=snapshot.runner_create_time,
                           dry_run=dry_run, trigger=trigger)  # fmt: skip
        self._remember(key, result.outcome)
        if result.detail.get("signalled_at"):  # a signal sent counts, whatever the outcome
            self.last_kill[snapshot.model] = now
        return result

    def _not_completing(self, snapshot: ModelSnapshot, since: datetime) -> str | None:
        """Evidence that the Stopping is a deadlock, or None (healthy, or unknown)."""
        if self.completed_since is not None:
            try:
                completed = self.completed_since(since)
            except OasisOpsError as exc:
                self.notes.append(f"trials: {exc.message}; judging by runner CPU")
            else:
                if completed > 0:
                    self.notes.append(f"{snapshot.model} is Stopping but {completed} trials completed since: left alone")
                    return None
                return f"no ok trial started since {since:%H:%M:%S} UTC"
        cpu = snapshot.runner_cpu_percent
        if cpu is not None and cpu >= self.policy.busy_cpu_percent:
            return f"no trial DB; runner CPU {cpu:.0f}% while Stopping"
        self.notes.append(f"{snapshot.model} is Stopping, runner CPU {cpu if cpu is not None else 'unknown'}%: not judged stuck")
        return None

    def _audit_rows(self, now: datetime) -> list[dict[str, Any]]:
        if self.ctx.sidecar is None:
            return []
        since = now - timedelta(seconds=max(self.policy.kill_interval_s, 3600.0))
        try:
            frame = self.ctx.sidecar.actions_since(since, max_rows=500)
        except OasisOpsError as exc:
            self.notes.append(f"audit log: {exc.message}")
            return []
        return [r for r in frame.to_dict("records") if r.get("requested_by") == "watchdog" and r.get("action") == "hard_kill"]

    def _already_done(self, key: str, now: datetime) -> bool:
        """This stuck state was acted on (not just dry-run) by another watchdog process, or by
        this one before a restart."""
        return any(key in str(r.get("detail") or "") for r in self._audit_rows(now) if r.get("outcome") != "dry_run")

    def _last_kill_audited(self, model: str, now: datetime) -> datetime | None:
        kills = [r["ts"] for r in self._audit_rows(now) if r.get("target") == model and _signalled(r.get("detail"))]
        if not kills:
            return None
        return as_utc_datetime(max(kills))

    # --- (b) memory guard -------------------------------------------------------------------
    def _pressure_reason(self, host: HostSample | Mapping[str, Any], warnings: Sequence[Any] = ()) -> str | None:
        pressure = _host_value(host, "pressure")
        available = _host_value(host, "mem_available_bytes")
        if available is None:
            available = _host_value(host, "mem_free_bytes")
        if pressure is not None and float(pressure) >= self.policy.max_pressure:
            return f"memory pressure {float(pressure):.0f} >= {self.policy.max_pressure:g}"
        if available is not None and float(available) < self.policy.min_free_bytes:
            return f"available memory {float(available) / 1e9:.2f} GB < {self.policy.min_free_bytes / 1e9:g} GB"
        if self.policy.on_forecast:
            forecast = next((w for w in warnings if getattr(w, "kind", None) == "memory_exhaustion"), None)
            if forecast is not None:
                eta = f", at the floor by {forecast.eta:%H:%M} UTC" if forecast.eta is not None else ""
                return f"early warning of memory exhaustion (raised {forecast.at:%H:%M:%S} UTC{eta}): {forecast.message}"
        return None

    def _dry(self, action: str, message: str, params: dict[str, Any], reason: str) -> ActionResult:
        result = ActionResult(action, "runner", "dry_run", f"dry run: would {message}", {"trigger": reason}, 0.0, params, "watchdog")
        return audit(self.ctx.sidecar, result)

    def _memory_guard(self, now: datetime, host: HostSample | Mapping[str, Any], dry_run: bool,
                      warnings: Sequence[Any] = ()) -> list[ActionResult]:  # fmt: skip
        control = self.ctx.control
        if control is None:
            return []
        reason = self._pressure_reason(host, warnings)
        if reason is not None:
            self.recovered_since = None
            if self.guard is not None:
                return []  # one action per episode
            state = control.runner_state()
            requested = control.requested() or {}
            previous = (state.max_concurrency if state else None) or requested.get("max_concurrency")
            previous_paused = state.paused if state else requested.get("paused")
            self.guard = GuardEpisode(now, self.policy.guard_action, previous if isinstance(previous, int) else None,
                                      previous_paused if isinstance(previous_paused, bool) else None, reason)  # fmt: skip
            if self.policy.guard_action == "pause":
                if dry_run:
                    return [self._dry("pause", "pause the runner", {"paused": True}, reason)]
                return [pause(self.ctx, reason=reason)]
            if dry_run:
                return [self._dry("concurrency", "lower max concurrency to 1", {"max_concurrency": 1}, reason)]
            return [set_concurrency(self.ctx, 1, reason=reason)]
        if self.guard is None:
            return []
        if self.recovered_since is None:
            self.recovered_since = now
        if (now - self.recovered_since).total_seconds() < self.policy.restore_s:
            return []
        guard, self.guard, self.recovered_since = self.guard, None, None
        why = f"memory recovered for {self.policy.restore_s / 60:g} min (guard since {guard.since:%H:%M:%S} UTC: {guard.reason})"
        if guard.action == "pause":
            if guard.previous_paused:
                return []  # it was paused before the guard: leave it so
            return [self._dry("resume", "resume the runner", {"paused": False}, why)] if dry_run else [resume(self.ctx, reason=why)]
        if guard.previous_concurrency is None or guard.previous_concurrency <= 1:
            return []
        n = guard.previous_concurrency
        if dry_run:
            return [self._dry("concurrency", f"restore max concurrency {n}", {"max_concurrency": n}, why)]
        return [set_concurrency(self.ctx, n, reason=why)]


def _signalled(detail: Any) -> bool:
    """An audit row's detail (JSON text or dict) records that a SIGKILL was sent."""
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return False
    return isinstance(detail, dict) and bool(detail.get("signalled_at"))


# --- headless ---------------------------------------------------------------------------------
def trial_counter(db: str | os.PathLike[str], settings: Settings) -> Callable[[datetime], int]:
    """completed_since() on a lazily opened TrialSource (refreshed before each count)."""
    from oasis_ops.trials import TrialSource

    source: TrialSource | None = None

    def completed_since(ts: datetime) -> int:
        nonlocal source
        if source is None:
            source = TrialSource(Path(db), settings)
        source.refresh()
        return source.completed_since(ts)

    return completed_since


def host_probe_for(settings: Settings) -> Callable[[], HostSample | Mapping[str, Any]]:
    """This machine's memory; in the demo (a loopback emulator answering /_demo/host) its
    simulated host, validated field by field (oasis_ops.sampler.hostsource)."""
    # Imported here: oasis_ops.sampler imports this module.
    from oasis_ops.sampler.hostsource import HostSource

    source = HostSource(settings.ollama_host, timeout_s=min(1.0, float(settings.ollama_timeout_s)))
    source.detect()
    return source.sample
