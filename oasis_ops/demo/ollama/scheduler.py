"""The scheduler of the emulated `ollama serve`, modelled on Ollama's `server/sched.go`.

Read at v0.20.4, v0.30.0 and v0.32.15 (the structure is the same in all three):
- A request for a model whose runner is loaded and answers a ping is served at once: it takes a
  reference on the runner (`get_runner`'s fast path, in the caller). Anything else (a load, a
  reload, an eviction) goes through one pending queue of OLLAMA_MAX_QUEUE (512) places; a full
  queue answers ErrMaxQueue (HTTP 503) at once. One thread (`_process_pending`) schedules the
  queue one request at a time, so a request that waits for an unload holds up every load
  behind it, whatever model they ask for.
- A loaded runner "needs a reload" when it does not answer a ping within 10 s (2 min while
  loading): a dead or SIGSTOPped runner then costs that caller up to 10 s, and is expired and
  replaced once nobody holds it. The ping takes the runner's lock (`ref_lock`, Ollama's refMu).
- Loads: a llama-server runner (>= 0.30) and a 0.20 runner on llama.cpp's engine load inside
  the pending loop, holding no lock, and enter the loaded list only once they answer (so
  `/api/ps` does not list them meanwhile); a 0.20 Ollama-engine runner enters the list at once
  and holds its lock while its weights load (a ping or, from 0.32.4, `/api/ps` waits for it).
- Reuse adds a reference and stops the idle timer; it does NOT renew `expires_at`. Only the
  last reference going away does (now + keep_alive), so a model kept busy by overlapping
  requests shows an `expires_at` in the past ("Stopping..." in `ollama ps`) while it works.
  Until the first request ends `expires_at` is unset (Go's zero time); /api/ps shows now +
  keep_alive for it.
- A reference ends when its request's context ends: the handler returning, or the client
  disconnecting. A client that goes away releases its hold at once, even while the runner is
  still busy with (or wedged on) its generation.
- keep_alive 0 (or eviction to make room) sets the session to 0 and `expires_at` to now; the
  unload happens when the last reference goes away (`_process_completed` retries every 10 ms
  meanwhile). An unload SIGKILLs the runner and waits, without a limit, until it is reaped,
  holding the loaded lock and the runner's lock: a runner that cannot be reaped blocks every
  later request and, from 0.32.4, `/api/ps` (see profiles).
- At OLLAMA_MAX_LOADED_MODELS (0 = 3 per GPU, 3 without one) the idle runner with the shortest
  keep-alive (then the lowest model path) is expired to make room, else the one with the
  shortest keep-alive after its requests. Not LRU.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from oasis_ops.demo.ollama.home import InstalledModel
from oasis_ops.errors import OasisOpsError

if TYPE_CHECKING:
    from oasis_ops.demo.ollama.runners import Runner
    from oasis_ops.demo.ollama.server import Emulator

ERR_MAX_QUEUE = "server busy, please try again.  maximum pending requests exceeded"
FOREVER_S = (2**63 - 1) / 1e9  # Go's math.MaxInt64 duration: expires_at lands in year ~2318
PING_TIMEOUT_S = 10.0
PING_TIMEOUT_LOADING_S = 120.0
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time.Time: "0001-01-01T00:00:00Z"


def now_local() -> datetime:
    return datetime.now().astimezone()


def expiry(seconds: float) -> datetime:
    seconds = FOREVER_S if math.isinf(seconds) else seconds
    return now_local() + timedelta(microseconds=int(seconds * 1e6))


class SchedulerError(OasisOpsError):
    """A request the scheduler could not serve (its message is Ollama's)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class MaxQueue(SchedulerError):
    def __init__(self) -> None:
        super().__init__(ERR_MAX_QUEUE, 503)


@dataclass(eq=False)
class LoadedRunner:
    """Ollama's runnerRef: one runner process serving one model (keyed by its weights blob)."""

    model: InstalledModel
    runner: Runner
    session_s: float
    ref_count: int = 0
    expires_at: datetime = ZERO_TIME
    loading: bool = True
    timer: threading.Timer | None = None
    # refMu: held by a load until the runner is up, by a ping, and by an unload
    ref_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> str:
        return str(self.model.blob)

    @property
    def pid(self) -> int | None:
        return self.runner.pid

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False)
class Pending:
    """One request waiting for a runner (Ollama's LlmRequest)."""

    model: InstalledModel
    session_s: float | None  # None: keep the runner's (or the default) keep-alive
    done: threading.Event = field(default_factory=threading.Event)  # the request's context ended
    ready: threading.Event = field(default_factory=threading.Event)
    picked: bool = False  # taken off the pending queue by the scheduler (a load is under way)
    runner: LoadedRunner | None = None
    error: SchedulerError | None = None
    _finished_once: threading.Lock = field(default_factory=threading.Lock)
    _finished: bool = False

    def succeed(self, runner: LoadedRunner) -> None:
        self.runner = runner
        self.ready.set()

    def fail(self, error: SchedulerError) -> None:
        self.error = error
        self.ready.set()


class Scheduler:
    def __init__(self, emulator: Emulator, *, max_queue: int, max_runners: int, default_session_s: float) -> None:
        self.emulator = emulator
        self.max_queue = max_queue
        self.max_runners = max_runners if max_runners > 0 else 3  # 3 per GPU; no GPU here
        self.default_session_s = default_session_s
        self.pending: queue.Queue[Pending] = queue.Queue(maxsize=max(1, max_queue))
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()  # ("finished", Pending) | ("expired", LoadedRunner)
        self.unloaded: queue.Queue[bool] = queue.Queue()
        self.loaded: dict[str, LoadedRunner] = {}
        self.loaded_lock = threading.Lock()  # loadedMu
        self.closed = threading.Event()

    def start(self) -> None:
        for target, name in ((self._process_pending, "sched-pending"), (self._process_completed, "sched-completed")):
            threading.Thread(target=target, name=name, daemon=True).start()

    # --- requests ------------------------------------------------------------------------------
    def get_runner(self, model: InstalledModel, session_s: float | None) -> Pending:
        """A loaded runner that answers its ping is taken at once (in the caller's thread, as
        Ollama's getRunner does); else the request is queued; MaxQueue when the queue is full."""
        pending = Pending(model, session_s)
        with self.loaded_lock:
            runner = self.loaded.get(str(model.blob))
        if runner is not None and not self._needs_reload(runner):
            self._use_loaded_runner(runner, pending)
            return pending
        try:
            self.pending.put_nowait(pending)
        except queue.Full:
            raise MaxQueue() from None
        return pending

    def finished(self, pending: Pending) -> None:
        """The request's context ended (handler returned or client gone): release its hold. Once."""
        with pending._finished_once:
            if pending._finished:
                return
            pending._finished = True
        pending.done.set()
        if pending.runner is not None:
            self.events.put(("finished", pending))

    def expire_model(self, model: InstalledModel) -> None:
        """keep_alive 0: expires_at = now, session 0; unloaded once no request holds it."""
        with self.loaded_lock:
            runner = self.loaded.get(str(model.blob))
        if runner is None:
            return
        with runner.ref_lock:
            runner.expires_at = now_local()
            runner.stop_timer()
            runner.session_s = 0.0
            if runner.ref_count <= 0:
                self.events.put(("expired", runner))

    def snapshot(self, *, lock_runners: bool) -> list[LoadedRunner]:
        """What /api/ps lists. With lock_runners (Ollama >= 0.32.4) each runner's lock is taken,
        so a load or an unload in progress holds the answer up, as in Ollama."""
        with self.loaded_lock:
            runners = list(self.loaded.values())
        if not lock_runners:
            return runners
        out = []
        for runner in runners:
            with runner.ref_lock:
                if self.loaded.get(runner.key) is runner:
                    out.append(runner)
        return out

    # --- the pending loop ------------------------------------------------------------------------
    def _process_pending(self) -> None:
        while not self.closed.is_set():
            try:
                pending = self.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            if pending.done.is_set():
                continue  # cancelled while queued: dropped without a word (Ollama logs it at DEBUG)
            pending.picked = True
            try:
                self._schedule(pending)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one request
                pending.fail(SchedulerError(str(exc)))

    def _schedule(self, pending: Pending) -> None:
        while not self.closed.is_set():
            with self.loaded_lock:
                runner = self.loaded.get(str(pending.model.blob))
                count = len(self.loaded)
            to_expire: LoadedRunner | None = None
            if runner is not None:
                if self._needs_reload(runner):
                    to_expire = runner
                else:
                    self._use_loaded_runner(runner, pending)
                    return
            elif count >= self.max_runners:
                to_expire = self._runner_to_unload()
            else:
                self._load(pending)
                return
            if to_expire is None:
                continue
            with to_expire.ref_lock:
                to_expire.stop_timer()
                to_expire.session_s = 0.0
                if to_expire.ref_count <= 0:
                    self.events.put(("expired", to_expire))
            while not self.closed.is_set():  # wait for the unload, holding up the whole queue
                try:
                    self.unloaded.get(timeout=0.2)
                    break
                except queue.Empty:
                    continue

    def _needs_reload(self, runner: LoadedRunner) -> bool:
        timeout = PING_TIMEOUT_LOADING_S if runner.loading else self.emulator.cfg.ping_timeout_s
        with runner.ref_lock:  # waits for a load in progress, like Ollama's refMu
            if runner.runner.proc is None:
                return True
            return not runner.runner.ping(timeout)

    def _use_loaded_runner(self, runner: LoadedRunner, pending: Pending) -> None:
        with runner.ref_lock:
            runner.ref_count += 1
            runner.stop_timer()
            if pending.session_s is not None:
                runner.session_s = pending.session_s
        pending.succeed(runner)
        if pending.done.is_set():  # the client left meanwhile: its hold ends at once
            self.events.put(("finished", pending))

    def _runner_to_unload(self) -> LoadedRunner | None:
        with self.loaded_lock:
            runners = sorted(self.loaded.values(), key=lambda r: (r.session_s, str(r.model.blob)))
        for runner in runners:
            with runner.ref_lock:
                if runner.ref_count == 0:
                    return runner
        return runners[0] if runners else None

    def _load(self, pending: Pending) -> None:
        emu = self.emulator
        session = pending.session_s if pending.session_s is not None else self.default_session_s
        runner = emu.new_runner(pending.model)
        try:
            runner.spawn()
        except OasisOpsError as exc:
            pending.fail(SchedulerError(str(exc)))
            return
        loaded = LoadedRunner(model=pending.model, runner=runner, session_s=session)
        if emu.profile.listed_while_loading(pending.model):
            # 0.20 Ollama engine: listed at once; its lock is held until the weights are loaded.
            loaded.ref_lock.acquire()
            self._add_loaded(loaded)
            threading.Thread(target=self._wait_running, args=(loaded, pending, True), name="load", daemon=True).start()
        else:
            # llama-server (and 0.20's llama.cpp engine): the wait happens right here, in the
            # pending loop, holding no lock; the runner is listed once it answers.
            self._wait_running(loaded, pending, False)

    def _add_loaded(self, loaded: LoadedRunner) -> None:
        with self.loaded_lock:
            old = self.loaded.get(loaded.key)
            if old is not None:  # should not happen; never leak a runner
                old.runner.kill_and_reap()
            self.loaded[loaded.key] = loaded
            count = len(self.loaded)
        self.emulator.profile.log_loaded_runners(self.emulator.log, count)

    def _wait_running(self, loaded: LoadedRunner, pending: Pending, listed: bool) -> None:
        emu = self.emulator
        try:
            error = loaded.runner.wait_until_running(cancelled=pending.done.is_set)
            if error is not None:
                emu.profile.log_load_failed(emu.log, loaded.model, error, listed=listed)
                pending.fail(SchedulerError(error))
                if listed:
                    self.events.put(("expired", loaded))
                return
            if not listed:
                self._add_loaded(loaded)
            emu.profile.log_runner_started_again(emu.log, loaded.runner)
            loaded.ref_count += 1
            loaded.loading = False
            pending.succeed(loaded)
            if pending.done.is_set():
                self.events.put(("finished", pending))
        finally:
            if listed:
                loaded.ref_lock.release()

    # --- the completed loop ----------------------------------------------------------------------
    def _process_completed(self) -> None:
        while not self.closed.is_set():
            try:
                kind, item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if kind == "finished":
                    self._on_finished(item)
                else:
                    self._on_expired(item)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one event
                self.emulator.log.slog("ERROR", "sched.go:1", "scheduler event failed", error=str(exc))

    def _on_finished(self, pending: Pending) -> None:
        runner = pending.runner
        assert runner is not None
        with self.loaded_lock:
            current = self.loaded.get(runner.key)
        if current is not runner:
            return  # unloaded already
        with runner.ref_lock:
            runner.ref_count -= 1
            if runner.ref_count > 0:
                return
            if runner.session_s <= 0:
                self.events.put(("expired", runner))
                return
            runner.stop_timer()
            runner.expires_at = expiry(runner.session_s)
            if not math.isinf(runner.session_s):
                runner.timer = threading.Timer(runner.session_s, lambda: self.events.put(("expired", runner)))
                runner.timer.daemon = True
                runner.timer.start()

    def _on_expired(self, runner: LoadedRunner) -> None:
        runner.ref_lock.acquire()
        try:
            if runner.ref_count > 0:
                # Cannot unload yet: ask again shortly, as Ollama does every 10 ms.
                threading.Timer(0.01, lambda: self.events.put(("expired", runner))).start()
                return
            with self.loaded_lock:
                current = self.loaded.get(runner.key)
                if current is None or current.pid != runner.pid:
                    if current is not runner:
                        runner.runner.kill_and_reap()  # an orphan of a failed load
                    return
                runner.stop_timer()
                runner.runner.kill_and_reap()  # SIGKILL, then wait: a runner that cannot be reaped blocks here
                del self.loaded[runner.key]
            self.unloaded.put(True)
        finally:
            runner.ref_lock.release()

    def close(self) -> None:
        self.closed.set()
        with self.loaded_lock:
            runners = list(self.loaded.values())
            self.loaded.clear()
        for runner in runners:
            runner.stop_timer()
            with contextlib.suppress(Exception):
                runner.runner.kill_and_reap(timeout_s=5.0)


def wait_ready(pending: Pending, client_gone: Callable[[], bool], poll_s: float = 0.1) -> bool:
    """Wait for the scheduler's answer while watching the client; False when the client left."""
    while not pending.ready.wait(poll_s):
        if client_gone():
            return False
    return True
