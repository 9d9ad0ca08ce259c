"""The telemetry sampler: host memory, /api/ps and runner processes into the sidecar.

One sampler per sidecar, machine-wide (`SamplerLock`: a second one fails with SidecarBusy), and
one sampler thread per process (service.py: `get_sampler()`, and `SamplerService`, which runs it
in the dashboard launcher); `oasis-ops sample` runs the same loop headless.

Every tick (settings.sample_interval_s, 1 s): one host sample and one /api/ps poll; the runner
processes are rescanned every settings.process_interval_s (2 s), and so are the `llama-server`
runners' own /slots and /metrics (runners.py: one `runner_samples` row per runner per read, a
runner that does not answer costs a tick at most ~1 s). Rows go through a BatchWriter flushed
every FLUSH_INTERVAL_S; a tick that produced an event flushes at once, so a state change
reaches the dashboard within one tick. Events (the `events` table, `kind` values):

    loaded / stopping / gone      a model appeared, changed state, or left /api/ps
    runner_pid_changed            the runner serving a model is another process now
    ollama_unreachable / ollama_back
    ollama_ps_blocked / ollama_ps_answering   /api/ps does not answer while /api/version does
                                  (from 0.32.4 it waits for an unload or a stuck runner's ping)
    pressure                      host memory pressure level changed (normal / warn / critical)
    runner_no_progress / runner_progress, runner_not_answering / runner_answering
                                  a llama-server runner's slot stuck, or the runner silent (runners.py)
    sampler_started / sampler_stopped

A `sampler_status` heartbeat row is upserted with every flush (last_tick_at, ticks, errors), so
the dashboard can say "the sampler is down (last tick 2 min ago)". An error inside a tick is
counted, logged (rate-limited) and never ends the loop.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from oasis_ops.errors import OasisOpsError, OllamaError, OllamaUnreachable
from oasis_ops.modelstate import Serving, after_expiry, judge, newest, trial_evidence
from oasis_ops.probes import (
    ModelProbe,
    ModelSnapshot,
    ModelStatus,
    OllamaClient,
    diff_models,
)
from oasis_ops.probes.host import HostSample, utc_now
from oasis_ops.probes.processes import ProcessList, find_ollama_tree
from oasis_ops.sampler.gpus import GpuReader
from oasis_ops.sampler.hostsource import HostSource
from oasis_ops.sampler.procwatch import RunnerWatch, serve_pid_for
from oasis_ops.sampler.runners import RUNNER_TIMEOUT_S, RunnerReader
from oasis_ops.settings import Settings
from oasis_ops.sidecar import BatchWriter, SamplerLock, Sidecar, heartbeat_row, retention
from oasis_ops.watchdog import Watchdog

log = logging.getLogger(__name__)

# Every sidecar write opens and closes the file (other processes write it too): ~20 ms of CPU
# each here, so writes are what the 1%-of-a-core budget is spent on (see bench/bench_sampler.py).
TRIAL_EVIDENCE_EVERY_S = 5.0  # how often the trial DB is asked whether a "Stopping" model still serves
FLUSH_INTERVAL_S = 10.0  # batched writes: one short sidecar transaction every 10 s (events: at once)
LOG_INTERVAL_S = 30.0  # server.log tailing (post-mortem data): a sidecar write when the log grew, at most this often
HEARTBEAT_STALE_S = 30.0  # a last tick older than this (3 flushes) means the sampler is down
DEMO_REDETECT_S = 30.0  # look for the demo's simulated host again this often while not found
TICK_HISTORY = 600  # tick durations kept for stats (bounded)
ERROR_LOG_EVERY_S = 60.0  # the same kind of tick error is logged at most this often


@dataclass
class TickReport:
    """What one tick did (for `sample --once`, tests and the bench)."""

    ts: datetime
    duration_ms: float = 0.0
    host: HostSample | None = None
    models: list[ModelSnapshot] = field(default_factory=list)
    ollama_reachable: bool | None = None
    ps_blocked: bool = False  # /api/ps did not answer while /api/version did
    processes_scanned: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)  # ActionResults the watchdog took this tick
    runners: list[dict[str, Any]] = field(default_factory=list)  # runner_samples rows of this tick
    warnings: list[tuple[Any, str]] = field(default_factory=list)  # (EarlyWarning, "raised" | "cleared") of this tick
    gpus: Any = None  # the GpuSnapshot read this tick (oasis_ops.probes.gpu), if one was due


def model_row(snapshot: ModelSnapshot) -> dict[str, Any]:
    """The sidecar's model_samples row for one snapshot (every column the table has)."""
    row = snapshot.as_row()
    status = snapshot.status
    row.update(
        stopping_since=status.stopping_since,
        ollama_state=status.ollama_state,
        processor=status.processor,
        busy=status.busy,
        runner_create_time=snapshot.runner_create_time,
        runner_threads=snapshot.runner_threads,
    )
    return row


def host_row(sample: HostSample) -> dict[str, Any]:
    row = sample.as_row()
    row["swap_total_bytes"] = sample.swap_total_bytes
    return row


class Sampler:
    """Samples into one sidecar. `open()` takes the lock; `tick()` samples once; `start()` runs
    ticks on a daemon thread until `stop()`; `run()` runs them in the calling thread."""

    def __init__(
        self,
        sidecar_path: str | os.PathLike[str],
        settings: Settings,
        *,
        client: OllamaClient | None = None,
        processes: ProcessList | None = None,
        host_source: HostSource | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        interval_s: float | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        log_interval_s: float = LOG_INTERVAL_S,
        follow_logs: bool = True,
        run_watchdog: bool = True,
        runner_timeout_s: float = RUNNER_TIMEOUT_S,
        no_progress_s: float | None = None,
        serve_pid: int | None = None,
        early_warning: bool = True,
        gpu_probe: Any = None,
    ) -> None:
        self.sidecar_path = Path(sidecar_path).expanduser()
        self.settings = settings
        self.interval_s = float(interval_s or settings.sample_interval_s)
        if self.interval_s <= 0:
            raise OasisOpsError(f"the sample interval must be positive, got {self.interval_s:g} s")
        self.process_interval_s = float(settings.process_interval_s)
        self.flush_interval_s = flush_interval_s
        self.log_interval_s = log_interval_s
        self.follow_logs = follow_logs
        self.clock = clock
        self.monotonic = monotonic
        self.client = client or OllamaClient(settings.ollama_host, timeout_s=float(settings.ollama_timeout_s), clock=clock)
        self.processes = processes if processes is not None else RunnerWatch(monotonic=monotonic, on_full_scan=self._find_serve)
        # the serve listening on the Ollama port: found on each full process scan (_find_serve);
        # given (`serve_pid`) when the process list is (a test's records)
        self.probe = ModelProbe(self.client, self.processes, settings.ollama_models or None, clock, serve_pid=serve_pid)
        self.host_source = host_source or HostSource(settings.ollama_host, timeout_s=min(1.0, float(settings.ollama_timeout_s)), clock=clock)
        self.sidecar = Sidecar(self.sidecar_path, settings, clock=clock)
        self.lock = SamplerLock(self.sidecar_path)
        self.writer: BatchWriter | None = None
        self.follower: Any = None  # oasis_ops.logs.tail.LogFollower when a server.log exists
        # The opt-in watchdog rides on the sampler's tick (it is off until its switch says on);
        # built lazily, and rebuilt once the trial DB appears so it can count completions.
        self.run_watchdog = run_watchdog
        self.watchdog: Any = None
        self._watchdog_has_trials = False
        # Early warning (oasis_ops.earlywarning): the rules on what this sampler stored, every 30 s.
        self.early_warning = early_warning
        self.warnings: Any = None
        # llama-server runners (Ollama >= 0.30): read every process_interval_s (runners.py).
        self._last_retention: float | None = None
        self.runner_timeout_s = float(runner_timeout_s)
        self.no_progress_s = float(no_progress_s if no_progress_s is not None else settings.runner_no_progress_s)
        self.runners = RunnerReader(every_s=self.process_interval_s, slack_s=min(0.25, self.interval_s / 4),
                                    timeout_s=self.runner_timeout_s, no_progress_s=self.no_progress_s, clock=clock,
                                    add=self._add, event=self._event, count_error=self._count_error)  # fmt: skip

        # GPUs (NVML, nvidia-smi, rocm-smi): every process_interval_s, every minute when none
        if gpu_probe is None:  # the demo's simulated GPU in the demo, else this machine's
            from oasis_ops.sampler.gpusource import GpuSource

            gpu_probe = GpuSource(settings.ollama_host, timeout_s=min(1.0, float(settings.ollama_timeout_s)), clock=clock)
        self.gpus = GpuReader(gpu_probe, every_s=max(self.process_interval_s, self.interval_s))

        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_at: datetime | None = None
        self.last_tick_at: datetime | None = None
        self.ticks = 0
        self.errors = 0
        self.last_error: str | None = None
        self.died: str | None = None  # set when the thread ended on an unexpected exception
        self.tick_ms: deque[float] = deque(maxlen=TICK_HISTORY)

        self._previous: list[ModelStatus] = []
        self._runner_of: dict[str, tuple[int, float | None]] = {}
        self._reachable: bool | None = None
        self._ps_blocked_since: datetime | None = None
        self._trials: Any = None  # a TrialSource on settings.db, opened when evidence is needed
        self._trial_evidence_cache: dict[str, tuple[float, datetime | None, Serving | None]] = {}
        self._pressure_level: str | None = None
        self._last_process_scan = float("-inf")
        self._last_log_poll = float("-inf")
        self._last_demo_detect = float("-inf")
        self._error_logged_at: dict[str, float] = {}
        self._events_this_tick: list[dict[str, Any]] = []
        self._last_flush = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = False
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------
    def open(self) -> Sampler:
        """Lock the sidecar (SidecarBusy when another sampler has it), create or migrate it."""
        if self._opened:
            return self
        self.sidecar_path.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self.sidecar.migrate()
        except BaseException:
            self.lock.release()
            raise
        # We flush on our own schedule (with the heartbeat in each batch); the writer's own
        # interval is only a backstop.
        self.writer = BatchWriter(self.sidecar, flush_interval_s=10 * self.flush_interval_s, clock=self.monotonic)
        self._last_flush = self.monotonic()
        self.started_at = self.clock()
        self._opened = True
        self._last_demo_detect = self.monotonic()
        simulated = self.host_source.detect()
        self.follower = self._make_follower() if self.follow_logs else None
        self._event(
            None,
            "sampler_started",
            None,
            {
                "pid": self.pid,
                "interval_s": self.interval_s,
                "process_interval_s": self.process_interval_s,
                "host_source": "simulated" if simulated else "this machine",
                "ollama": self.client.base_url,
                "server_log": getattr(self.follower, "path", None),
            },
        )
        return self

    def _make_follower(self) -> Any:
        """A LogFollower on the configured server.log, or None (no follower module, no file)."""
        try:
            from oasis_ops.logs.ingest import LogStore
            from oasis_ops.logs.tail import LogFollower
            from oasis_ops.logs.timefmt import LocalClock
        except ImportError:  # logs package absent in a partial tree: skip log tailing
            return None
        path = Path(self.settings.server_log or "~/.ollama/logs/server.log").expanduser()
        if not path.is_file():
            return None
        try:
            return LogFollower(
                LogStore.at(self.sidecar_path, self.settings),
                path,
                clock=LocalClock(self.settings.log_utc_offset or None),
            )
        except OasisOpsError as exc:
            self._count_error("log", exc)
            return None

    def start(self) -> Sampler:
        """open() and run ticks on a daemon thread."""
        self.open()
        if self._thread is None:
            self._thread = threading.Thread(target=self._thread_main, name=f"oasis-sampler:{self.sidecar_path.name}", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            self.run(self._stop)
        except BaseException as exc:  # noqa: BLE001 - recorded, the dashboard says "down"
            self.died = f"{type(exc).__name__}: {exc}"
            log.exception("the sampler thread died; the dashboard will report the sampler as down")
            self._close_quietly()

    def run(self, stop: threading.Event | None = None, max_ticks: int | None = None) -> None:
        """Tick every interval until `stop` is set (or max_ticks ticks); drift-free schedule."""
        stop = stop or self._stop
        self.open()
        next_due = self.monotonic()
        done = 0
        while not stop.is_set():
            self.tick()
            done += 1
            if max_ticks is not None and done >= max_ticks:
                break
            next_due += self.interval_s
            now = self.monotonic()
            if next_due < now:  # fell behind (a slow tick, a suspended machine): skip, don't burst
                next_due = now + self.interval_s - ((now - next_due) % self.interval_s)
            stop.wait(max(0.0, next_due - now))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (if any), write the last rows, a stop event and heartbeat; unlock."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self.close()

    def close(self) -> None:
        if self._closed or not self._opened:
            return
        self._closed = True
        try:
            if self.follower is not None:
                try:
                    self.follower.close()
                except OasisOpsError as exc:
                    self._count_error("log", exc)
            if self.watchdog is not None:
                try:
                    self.watchdog.close()
                except OasisOpsError as exc:
                    self._count_error("watchdog", exc)
            if self.warnings is not None:
                self.warnings.close()
            self._event(None, "sampler_stopped", None, {"ticks": self.ticks, "errors": self.errors})
            assert self.writer is not None
            self._add_heartbeat(stopped=True)
            try:
                self.writer.close()
            except OasisOpsError as exc:
                log.error("sampler: %s", exc)
        finally:
            self.lock.release()
            self.client.close()
            self.host_source.close()
            self.runners.close()
            if self._trials is not None:
                self._trials.close()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - already dying; the lock is released by close()
            log.exception("sampler: error while closing after a crash")

    # --- one tick -------------------------------------------------------------------------------
    def tick(self) -> TickReport:
        """Sample host and /api/ps (and processes when due) once; errors are counted, not raised."""
        if not self._opened:
            self.open()
        started = time.perf_counter()
        mono = self.monotonic()
        report = TickReport(ts=self.clock())
        self._events_this_tick = []
        try:
            self._sample_host(report)
            self._sample_gpus(report, mono)
            self._sample_ollama(report, mono)
            self._poll_log(report, mono)
            self._run_watchdog(report)
            self._warn(report, mono)
            self._retain(report, mono)
        except Exception as exc:  # noqa: BLE001 - a bug in a tick must not end the sampler
            self._count_error("tick", exc, report)
        self.ticks += 1
        self.last_tick_at = report.ts
        report.events = list(self._events_this_tick)
        self._flush(force=bool(report.events))
        report.duration_ms = (time.perf_counter() - started) * 1000.0
        self.tick_ms.append(report.duration_ms)
        return report

    def _retain(self, report: TickReport, mono: float) -> None:
        """Thin and drop old samples (oasis_ops.sidecar.retention), on the first tick and hourly."""
        if self._last_retention is not None and mono - self._last_retention < retention.EVERY_S:
            return
        self._last_retention = mono  # rows still in the batch are newer than any cut-off
        try:
            retention.apply_retention(self.sidecar, report.ts, full_h=float(self.settings.retain_full_h),
                                      keep_days=float(self.settings.retain_days))  # fmt: skip
        except OasisOpsError as exc:
            self._count_error("retention", exc, report)

    def _run_watchdog(self, report: TickReport) -> None:
        """One watchdog evaluation on this tick's own samples (no second probe)."""
        if not self.run_watchdog:
            return
        db = self.settings.db or None
        db_exists = bool(db) and Path(str(db)).expanduser().exists()
        try:
            if self.watchdog is None or (db_exists and not self._watchdog_has_trials):
                if self.watchdog is not None:
                    self.watchdog.close()
                self.watchdog = Watchdog.for_settings(self.settings, db, sidecar_path=self.sidecar_path)
                self._watchdog_has_trials = db_exists
            active = self.warnings.tracker.active if self.warnings is not None else ()
            report.actions = self.watchdog.tick(report.ts, models=report.models, host=report.host, warnings=active)
        except OasisOpsError as exc:
            self._count_error("watchdog", exc, report)

    def _warn(self, report: TickReport, mono: float) -> None:
        """Early warnings on what is stored (every live.EVERY_S): raised / cleared episodes become
        `warnings` rows and `warning_raised` / `warning_cleared` events, and go to the notifier."""
        if not self.early_warning:
            return
        try:
            if self.warnings is None:
                from oasis_ops.earlywarning.live import LiveWarnings

                self.warnings = LiveWarnings(self.sidecar, self.settings, trials=self._trial_source)
            rows, changes = self.warnings.tick(report.ts, mono)
        except OasisOpsError as exc:
            self._count_error("warnings", exc, report)
            return
        for row in rows:
            self._add("warnings", row)
        for warning, change in changes:
            self._event(report.ts, f"warning_{change}", warning.subject,
                        {"kind": warning.kind, "severity": warning.severity, "message": warning.message,
                         "eta": warning.eta.isoformat() if warning.eta else None, "action": warning.action})  # fmt: skip
        report.warnings = changes

    def _trial_source(self) -> Any:
        """The trial DB's TrialSource (shared with the trial evidence), refreshed; None without one."""
        db = self.settings.db
        if not db or not Path(db).expanduser().exists():
            return None
        if self._trials is None:
            from oasis_ops.trials import TrialSource

            self._trials = TrialSource(Path(db).expanduser(), self.settings)
        self._trials.refresh()
        return self._trials

    def _sample_host(self, report: TickReport) -> None:
        try:
            sample = self.host_source.sample()
        except OasisOpsError as exc:
            self._count_error("host", exc, report)
            return
        sample = _with_ts(sample, report.ts)
        report.host = sample
        self._add("host_samples", host_row(sample))
        level = sample.pressure_level
        if level is not None and level != self._pressure_level:
            if self._pressure_level is not None or level != "normal":
                self._event(
                    report.ts,
                    "pressure",
                    None,
                    {"from": self._pressure_level, "to": level, "pressure": sample.pressure, "source": sample.source},
                )
            self._pressure_level = level

    def _sample_gpus(self, report: TickReport, mono: float) -> None:
        if not self.gpus.due(mono):
            return
        for row in self.gpus.read(mono, report.ts):
            self._add("gpu_samples", row)
        report.gpus = self.gpus.last

    def _sample_ollama(self, report: TickReport, mono: float) -> None:
        try:
            statuses = self.client.ps()
        except OllamaUnreachable as exc:
            if self._ps_blocked(report, mono, exc):
                return
            report.ollama_reachable = False
            if self._reachable is not False:
                self._event(report.ts, "ollama_unreachable", None, {"url": self.client.base_url, "error": str(exc)})
            self._reachable = False
            self._maybe_redetect_demo(mono)
            return
        except OllamaError as exc:  # answered garbage: count it, keep the last known state
            self._count_error("ollama", exc, report)
            return
        report.ollama_reachable = True
        if self._ps_blocked_since is not None:
            self._event(report.ts, "ollama_ps_answering", None,
                        {"blocked_for_s": round((report.ts - self._ps_blocked_since).total_seconds(), 1)})  # fmt: skip
            self._ps_blocked_since = None
        if self._reachable is False:
            detail: dict[str, Any] = {"url": self.client.base_url}
            try:
                detail["version"] = self.client.version()
            except OllamaError:
                pass
            self._event(report.ts, "ollama_back", None, detail)
            self.host_source.detect()  # a restarted server may be the demo emulator (or not) now
        self._reachable = True
        scan = mono - self._last_process_scan >= self.process_interval_s - 1e-6
        if {(m.name, m.digest) for m in statuses} != {(m.name, m.digest) for m in self._previous}:
            self._rescan_processes()  # a model appeared or left: look at every process, now
            scan = True
        if statuses:
            snapshots = self.probe.snapshot(statuses, refresh_processes=scan)
            if scan:
                self._last_process_scan = mono
                report.processes_scanned = True
            snapshots = [self._judged(snap, report.ts, mono) for snap in snapshots]
            statuses = [snap.status for snap in snapshots]
        else:
            snapshots = []
        report.models = snapshots
        for snap in snapshots:
            row = model_row(_with_snapshot_ts(snap, report.ts))
            row["runner_vram_bytes"] = self.gpus.vram_of(snap.runner_pid)
            self._add("model_samples", row)
        self._transitions(report, statuses, snapshots)
        self._previous = statuses
        try:
            self.runners.sample(report.ts, mono, snapshots, report.runners, tree=self.probe.last_tree)
        except OasisOpsError as exc:
            self._count_error("runners", exc, report)

    def _judged(self, snap: ModelSnapshot, now: datetime, mono: float) -> ModelSnapshot:
        """The snapshot with its state judged from evidence (oasis_ops.modelstate): Ollama's
        Stopping on a model that keeps serving is a stale expiry, not an unload."""
        status = snap.status
        if status.ollama_state != "stopping":
            return snap
        serving = self.runners.progress_of(snap.runner_pid, snap.runner_create_time)
        if not after_expiry(serving, status):
            # runner progress from before the expiry proves nothing after it: ask the trials too
            serving = newest([serving, self._trial_evidence(status, now, mono)])
        if serving is None and snap.runner_variant == "llama-server" and snap.runner_port and self.runners.undecided(snap.runner_pid, snap.runner_create_time, mono):
            # The sampler just met this runner: one more read (one tick) tells decoding from
            # stuck. Saying "Stopping" meanwhile would put a false event on the timeline.
            return replace(snap, status=replace(status, state="loaded", stopping_since=None,
                                                judged="Ollama shows Stopping; reading its runner for progress"))  # fmt: skip
        judged = judge(status, serving, now)
        return replace(snap, status=judged) if judged is not status else snap

    def _trial_evidence(self, status: ModelStatus, now: datetime, mono: float) -> Serving | None:
        """Trials completing since the model's expiry, from the trial DB (read at most every
        TRIAL_EVIDENCE_EVERY_S per model: it costs a snapshot refresh and a query)."""
        cached = self._trial_evidence_cache.get(status.name)
        if cached is not None and mono - cached[0] < TRIAL_EVIDENCE_EVERY_S and cached[1] == status.expires_at:
            return cached[2]
        serving: Serving | None = None
        db = self.settings.db
        if db and Path(db).expanduser().exists():
            try:
                if self._trials is None:
                    from oasis_ops.trials import TrialSource

                    self._trials = TrialSource(Path(db).expanduser(), self.settings)
                self._trials.refresh()
                serving = trial_evidence(self._trials.ended_ok_since, status, now)
            except OasisOpsError as exc:
                self._count_error("trials", exc)
        if len(self._trial_evidence_cache) > 64:
            self._trial_evidence_cache.clear()
        self._trial_evidence_cache[status.name] = (mono, status.expires_at, serving)
        return serving

    def _ps_blocked(self, report: TickReport, mono: float, exc: OllamaUnreachable) -> bool:
        """/api/ps did not answer: is Ollama down, or only its scheduler busy? From 0.32.4 /api/ps
        waits while a runner is unloaded (SIGKILL, then the reap) or a stuck runner is pinged, so
        ask /api/version (no lock) before calling Ollama unreachable. When it answers: an
        `ollama_ps_blocked` event once, the last model rows kept as they are, and the runners
        read straight from the process tree (a wedged runner is then what matters)."""
        try:
            version = self.client.version()
        except OllamaError:
            return False
        report.ollama_reachable = True
        report.ps_blocked = True
        if self._ps_blocked_since is None:
            self._ps_blocked_since = report.ts
            self._event(report.ts, "ollama_ps_blocked", None, {"url": self.client.base_url, "version": version, "error": str(exc)})
        if self._reachable is False:
            self._event(report.ts, "ollama_back", None, {"url": self.client.base_url, "version": version})
        self._reachable = True
        if mono - self._last_process_scan >= self.process_interval_s - 1e-6:
            self.probe.last_tree = find_ollama_tree(self.processes(), serve_pid=self.probe.serve_pid)
            self._last_process_scan = mono
            report.processes_scanned = True
        try:
            self.runners.sample(report.ts, mono, [], report.runners, tree=self.probe.last_tree)
        except OasisOpsError as exc:
            self._count_error("runners", exc, report)
        return True

    def _transitions(self, report: TickReport, statuses: list[ModelStatus], snapshots: list[ModelSnapshot]) -> None:
        by_name = {s.model: s for s in snapshots}
        changes = diff_models(self._previous, statuses)
        if any(s.runner_pid is None for s in snapshots):
            self._rescan_processes()  # a model without its runner: the next scan looks at every process
        for change in changes:
            snap = by_name.get(change.model)
            detail: dict[str, Any] = {"from": change.old_state}
            if change.status is not None:
                detail.update(
                    expires_at=change.status.expires_at,
                    stopping_since=change.status.stopping_since,
                    processor=change.status.processor,
                )
            if snap is not None:
                detail.update(runner_pid=snap.runner_pid, runner_rss_bytes=snap.runner_rss_bytes, runner_cpu_percent=snap.runner_cpu_percent)
            if change.new_state == "gone":
                old = self._runner_of.pop(change.model, None)
                detail["runner_pid"] = old[0] if old else None
                self._add("model_samples", {"ts": report.ts, "model": change.model, "state": "gone"})
            self._event(report.ts, change.new_state, change.model, detail)
        for snap in snapshots:
            if snap.runner_pid is None:
                continue
            identity = (snap.runner_pid, snap.runner_create_time)
            before = self._runner_of.get(snap.model)
            if before is not None and before != identity:
                self._event(
                    report.ts,
                    "runner_pid_changed",
                    snap.model,
                    {"old_pid": before[0], "new_pid": snap.runner_pid, "state": snap.state},
                )
            self._runner_of[snap.model] = identity

    def _find_serve(self, records: list[Any]) -> None:
        """After each full scan: the `ollama serve` listening on our URL's port (see serve_pid_for)."""
        self.probe.serve_pid = serve_pid_for(self.client.base_url, records)

    def _rescan_processes(self) -> None:
        force = getattr(self.processes, "force", None)
        if callable(force):
            force()

    def _poll_log(self, report: TickReport, mono: float) -> None:
        if self.follower is None or mono - self._last_log_poll < self.log_interval_s:
            return
        self._last_log_poll = mono
        try:
            self.follower.poll()
        except OasisOpsError as exc:  # ConcurrentIngest included: `ingest-logs` ran meanwhile
            self._count_error("log", exc, report)

    def _maybe_redetect_demo(self, mono: float) -> None:
        if not self.host_source.simulated and mono - self._last_demo_detect >= DEMO_REDETECT_S:
            self._last_demo_detect = mono
            self.host_source.detect()

    # --- rows, events, heartbeat ----------------------------------------------------------------
    def _add(self, table: str, row: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.add(table, row)

    def _event(self, ts: datetime | None, kind: str, model: str | None, detail: dict[str, Any]) -> None:
        row = {"ts": ts or self.clock(), "kind": kind, "model": model, "detail": detail}
        self._events_this_tick.append(row)
        log.info("sampler event %s %s %s", kind, model or "", detail)
        self._add("events", row)

    def _add_heartbeat(self, *, stopped: bool = False) -> None:
        assert self.writer is not None and self.started_at is not None
        self._add(
            "sampler_status",
            heartbeat_row(
                pid=self.pid,
                host=self.host,
                started_at=self.started_at,
                last_tick_at=self.last_tick_at,
                ticks=self.ticks,
                errors=self.errors + self.writer.error_count,
                last_error=self.last_error or self.writer.last_error,
                interval_s=self.interval_s,
                stopped_at=self.clock() if stopped else None,
                now=self.clock(),
            ),
        )

    def _flush(self, *, force: bool = False) -> None:
        """Heartbeat + buffered rows in one batch, when due (or at once after an event)."""
        writer = self.writer
        assert writer is not None
        now = self.monotonic()
        if force or now - self._last_flush >= self.flush_interval_s:
            self._last_flush = now
            self._add_heartbeat()
            writer.flush()

    def _count_error(self, where: str, exc: BaseException, report: TickReport | None = None) -> None:
        self.errors += 1
        text = str(exc) if isinstance(exc, OasisOpsError) else f"{type(exc).__name__}: {exc}"
        self.last_error = f"{where}: {text}"[:500]
        if report is not None:
            report.errors.append(self.last_error)
        now = self.monotonic()
        if now - self._error_logged_at.get(where, float("-inf")) >= ERROR_LOG_EVERY_S:
            self._error_logged_at[where] = now
            log.warning("sampler %s error (%d so far): %s", where, self.errors, text, exc_info=not isinstance(exc, OasisOpsError))

    # --- numbers --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        ticks = sorted(self.tick_ms)
        writer = self.writer.stats() if self.writer else {}
        return {
            "sidecar": str(self.sidecar_path),
            "alive": self.alive,
            "ticks": self.ticks,
            "errors": self.errors,
            "last_error": self.last_error,
            "died": self.died,
            "tick_median_ms": statistics.median(ticks) if ticks else None,
            "tick_p95_ms": ticks[min(len(ticks) - 1, int(0.95 * len(ticks)))] if ticks else None,
            "writer": writer,
        }


def _with_ts(sample: HostSample, ts: datetime) -> HostSample:
    """One timestamp per tick on every row (host, models, events line up in the charts)."""
    return replace(sample, ts=ts)


def _with_snapshot_ts(snapshot: ModelSnapshot, ts: datetime) -> ModelSnapshot:
    return replace(snapshot, ts=ts)
