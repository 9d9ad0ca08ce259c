"""The simulated harness: a real process shaped like the OASIS runner of the write-up.

    python -m oasis_ops.demo.harness --db trials.duckdb --ollama http://127.0.0.1:11434 \\
        --model gemma4:e4b --max-concurrency 4 --request-timeout-s 60 --evict-threshold 3
    (or `oasis-ops demo harness ...`)

What it does, like the runner in the write-up:
- a worker pool (one thread per trial in flight) limited by a ResizableLimiter at
  max_concurrency; the dispatcher takes a slot, then starts the trial's thread;
- each trial is one vision chat call (`POST /api/chat`, one small image, not streamed) with
  request_timeout_s per call (httpx timeout), retried up to max_retries times on a timeout or
  an error;
- after evict_threshold consecutive stalls (failed calls, across workers) it evicts the model by
  POSTing `keep_alive: 0` (the soft eviction that deadlocked in the write-up) and logs
  `evicting <model> after N consecutive stalls (keep_alive=0)`;
- each finished trial goes to the trial DB through oasis_ops.trials.writer (batched opens,
  inserts and closes, retried on a lock), so a dashboard reading the file never costs a trial;
- runner.log in the write-up's format, local time: `2025-11-20 17:58:01 trial 12455 timed out
  after 1m0s (litellm.Timeout)`, `... trial 12453 ok in 6.09s`, `... trial 7 failed: <error>`;
- the control channel (Contract 3) through RunnerControl: concurrency and pause go to the
  limiter, request_timeout_s to the next calls; state.json acknowledges each change.
SIGTERM/SIGINT: no new trial starts; trials in flight get `grace_s` to finish, then are abandoned
(not written: they did not finish); everything finished is written before exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx

from oasis_ops.control import ControlRequest, ResizableLimiter, RunnerControl, control_dir_for
from oasis_ops.demo.ollama.servelog import go_duration
from oasis_ops.errors import DataError, OasisOpsError, UsageError
from oasis_ops.sqlfiles import sql
from oasis_ops.trials.snapshot import connect_with_limits
from oasis_ops.trials.writer import TrialWriter

log = logging.getLogger(__name__)

# A 1x1 PNG: the emulator only counts images (its encoder then logs `image slice encoded in N ms`).
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PROMPTS = (
    "Describe the chart in the image in one sentence.",
    "What is the largest value shown in this figure?",
    "Is the trend in the image rising or falling? Answer in a few words.",
    "Read the axis labels of the plot.",
)


@dataclass
class HarnessConfig:
    db: Path
    ollama: str
    model: str = "gemma4:e4b"
    max_concurrency: int = 4
    request_timeout_s: float = 60.0
    max_retries: int = 2
    evict_threshold: int = 3
    control_dir: Path | None = None
    runner_log: Path | None = None
    run_id: str | None = None
    trials: int = 0  # 0: run until stopped
    think_s: float = 0.0  # pause of a worker between two trials (scoring, bookkeeping)
    grace_s: float = 3.0
    flush_interval_s: float = 1.0
    poll_interval_s: float = 0.2
    images: bool = True  # one small image per call (vision models); off for text-only models
    num_predict: int = 0  # options.num_predict of each call (0: not sent, the model decides)

    def validate(self) -> None:
        if self.max_concurrency < 1:
            raise UsageError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")
        if self.request_timeout_s <= 0:
            raise UsageError(f"--request-timeout-s must be positive, got {self.request_timeout_s:g}")
        if self.max_retries < 0 or self.evict_threshold < 1:
            raise UsageError("--max-retries must be >= 0 and --evict-threshold >= 1")
        if self.trials < 0 or self.think_s < 0 or self.grace_s < 0:
            raise UsageError("--trials, --think-s and --grace-s must not be negative")
        if not self.db.parent.is_dir():
            raise UsageError(f"the trial database's directory does not exist: {self.db.parent}")


@dataclass
class CallOutcome:
    status: str  # ok | timeout | error
    latency_ms: float
    error: str | None = None


class RunnerLog:
    """runner.log lines, `YYYY-MM-DD HH:MM:SS message` in local time (thread-safe, flushed)."""

    def __init__(self, path: Path | None, echo: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8") if path is not None else None
        self._echo = echo

    def line(self, message: str) -> None:
        text = f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} {message}\n"
        with self._lock:
            for out in (self._file, self._echo):
                if out is not None:
                    try:
                        out.write(text)
                        out.flush()
                    except (OSError, ValueError):
                        pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def timeout_text(seconds: float) -> str:
    """The harness's timeout error, as litellm words it: `timed out after 1m0s (litellm.Timeout)`."""
    return f"timed out after {go_duration(round(seconds, 3))} (litellm.Timeout)"


def first_trial_id(db: Path, table: str = "trials") -> int:
    """1 for a new database, else one past the row count (the demo's ids are 1..n)."""
    if not db.exists():
        return 1
    for _attempt in range(20):
        try:
            con = connect_with_limits(db, read_only=True, memory_limit="64MB", threads=1)
        except DataError:
            time.sleep(0.1)  # locked by a writer a moment: try again
            continue
        try:
            tables = {row[0] for row in con.execute(sql("trials_tables")).fetchall()}
            if table not in tables:
                return 1
            ((count,),) = con.execute(sql("trials_count"), {"table": table}).fetchall()
            return int(count) + 1
        finally:
            con.close()
    return int(time.time())  # unique enough when the file stays locked


class Harness:
    """The runner: dispatcher + trial threads + writer + control poller."""

    def __init__(self, cfg: HarnessConfig, *, echo: TextIO | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.base_url = cfg.ollama.rstrip("/") if "://" in cfg.ollama else f"http://{cfg.ollama.rstrip('/')}"
        self.run_id = cfg.run_id or f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        self.limiter = ResizableLimiter(cfg.max_concurrency)
        self.request_timeout_s = cfg.request_timeout_s
        control_dir = cfg.control_dir or control_dir_for(cfg.db)
        self.control = RunnerControl(control_dir, limiter=self.limiter, on_change=self._on_change,
                                     poll_interval_s=cfg.poll_interval_s, heartbeat_interval_s=1.0)
        self.control.request_timeout_s = cfg.request_timeout_s
        self.writer = TrialWriter(cfg.db, flush_interval_s=cfg.flush_interval_s, batch_size=50)
        self.runner_log = RunnerLog(cfg.runner_log, echo)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._next_id = first_trial_id(cfg.db)
        self._consecutive_stalls = 0
        self._threads: set[threading.Thread] = set()
        self.started = 0
        self.finished: dict[str, int] = {"ok": 0, "timeout": 0, "error": 0}
        self.evictions = 0

    # --- control ----------------------------------------------------------------------------
    def _on_change(self, request: ControlRequest) -> None:
        if request.request_timeout_s is not None:
            self.request_timeout_s = request.request_timeout_s
        changes = []
        if request.max_concurrency is not None and request.max_concurrency != self.limiter.limit:
            changes.append(f"max_concurrency {self.limiter.limit} -> {request.max_concurrency}")
        if request.paused is not None and request.paused != self.limiter.paused:
            changes.append("paused" if request.paused else "resumed")
        if request.request_timeout_s is not None:
            changes.append(f"request_timeout_s {request.request_timeout_s:g}")
        self.runner_log.line(f"control v{request.version} from {request.requested_by or '?'}: {', '.join(changes) or 'no change'}")

    # --- one model call -----------------------------------------------------------------------
    def call_model(self, trial_id: int) -> CallOutcome:
        timeout_s = self.request_timeout_s
        message: dict[str, Any] = {"role": "user", "content": PROMPTS[trial_id % len(PROMPTS)]}
        if self.cfg.images:
            message["images"] = [PIXEL_PNG]
        body: dict[str, Any] = {"model": self.cfg.model, "messages": [message], "stream": False}
        if self.cfg.num_predict > 0:
            body["options"] = {"num_predict": self.cfg.num_predict}
        started = time.monotonic()
        try:
            # One client per call: a stuck call can be abandoned without touching the others.
            with httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), trust_env=False) as client:
                resp = client.post(self.base_url + "/api/chat", json=body)
        except httpx.TimeoutException:
            return CallOutcome("timeout", (time.monotonic() - started) * 1000, timeout_text(timeout_s))
        except httpx.HTTPError as exc:
            return CallOutcome("error", (time.monotonic() - started) * 1000,
                               f"litellm.APIConnectionError: OllamaException - {type(exc).__name__}: {exc}")
        latency_ms = (time.monotonic() - started) * 1000
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200 or not isinstance(data, dict) or "error" in data or not data.get("done"):
            detail = data.get("error") if isinstance(data, dict) else None
            return CallOutcome("error", latency_ms, f"litellm.APIError: OllamaException - {resp.status_code} {detail or resp.text[:200]}")
        return CallOutcome("ok", latency_ms)

    def evict(self, stalls: int) -> None:
        """The write-up's _evict_ollama_model: a soft eviction (keep_alive=0), answered at once."""
        self.evictions += 1
        self.runner_log.line(f"evicting {self.cfg.model} after {stalls} consecutive stalls (keep_alive=0)")
        try:
            httpx.post(self.base_url + "/api/generate", json={"model": self.cfg.model, "keep_alive": 0},
                       timeout=5.0, trust_env=False)
        except httpx.HTTPError as exc:
            self.runner_log.line(f"eviction request failed: {type(exc).__name__}: {exc}")

    def _stall(self) -> None:
        with self._lock:
            self._consecutive_stalls += 1
            stalls = self._consecutive_stalls
            due = stalls >= self.cfg.evict_threshold
            if due:
                self._consecutive_stalls = 0
        if due:
            self.evict(stalls)

    def run_trial(self, trial_id: int) -> None:
        started_at = datetime.now(UTC)
        outcome = CallOutcome("error", 0.0, "not run")
        try:
            for attempt in range(self.cfg.max_retries + 1):
                if attempt and self.stop_event.is_set():
                    return  # shutting down: an unfinished trial is not written
                outcome = self.call_model(trial_id)
                if outcome.status == "ok":
                    with self._lock:
                        self._consecutive_stalls = 0
                    break
                self._stall()
                if attempt < self.cfg.max_retries:
                    self.runner_log.line(f"trial {trial_id} attempt {attempt + 1} {outcome.error}; retrying")
            finished_at = datetime.now(UTC)
            self.writer.add(trial_id=trial_id, run_id=self.run_id, model=self.cfg.model, started_at=started_at,
                            finished_at=finished_at, latency_ms=round(outcome.latency_ms, 1), status=outcome.status,
                            error=outcome.error)
            if outcome.status == "ok":
                self.runner_log.line(f"trial {trial_id} ok in {outcome.latency_ms / 1000:.2f}s")
            elif outcome.status == "timeout":
                self.runner_log.line(f"trial {trial_id} {outcome.error}")
            else:
                self.runner_log.line(f"trial {trial_id} failed: {outcome.error}")
            with self._lock:
                self.finished[outcome.status] += 1
            if self.cfg.think_s and not self.stop_event.is_set():
                self.stop_event.wait(self.cfg.think_s)
        finally:
            self.limiter.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        """Dispatch trials until stopped (or cfg.trials are done); returns the exit code."""
        cfg = self.cfg
        self.control.start()
        self.runner_log.line(
            f"harness started: run {self.run_id}, model {cfg.model} at {self.base_url}, "
            f"max_concurrency {self.limiter.limit}, request_timeout_s {self.request_timeout_s:g}, "
            f"evict after {cfg.evict_threshold} consecutive stalls (pid {os.getpid()})"
        )
        try:
            while not self.stop_event.is_set():
                if cfg.trials and self.started >= cfg.trials:
                    break
                if not self.limiter.acquire(timeout=0.2):
                    continue
                if self.stop_event.is_set():
                    self.limiter.release()
                    break
                with self._lock:
                    trial_id = self._next_id
                    self._next_id += 1
                    self.started += 1
                thread = threading.Thread(target=self.run_trial, args=(trial_id,), name=f"trial-{trial_id}", daemon=True)
                with self._lock:
                    self._threads.add(thread)
                thread.start()
            self._wait_in_flight(None if (cfg.trials and not self.stop_event.is_set()) else cfg.grace_s)
        finally:
            self.shutdown()
        return 0

    def _wait_in_flight(self, grace_s: float | None) -> None:
        deadline = None if grace_s is None else time.monotonic() + grace_s
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.runner_log.line(f"abandoning {len(alive)} trial(s) in flight")
                return
            alive[0].join(timeout=0.1 if remaining is None else min(0.1, remaining))

    def shutdown(self) -> None:
        self.stop_event.set()
        try:
            self.writer.close()  # everything finished is written (or spilled to .pending-*.jsonl)
        except OasisOpsError as exc:
            self.runner_log.line(f"could not write every trial: {exc}")
        self.control.stop()
        done = self.finished
        self.runner_log.line(
            f"harness stopped: {self.started} started, {done['ok']} ok, {done['timeout']} timed out, "
            f"{done['error']} failed, {self.evictions} evictions, {self.writer.written} written"
        )
        self.runner_log.close()


# --- CLI ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="trial database to write (created if needed)")
    parser.add_argument("--ollama", help="Ollama (or emulator) URL; default: the ollama_host setting")
    parser.add_argument("--model", default="gemma4:e4b", help="model to call (default gemma4:e4b)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="trials in flight at most (default 4)")
    parser.add_argument("--request-timeout-s", type=float, default=60.0, help="timeout of each model call, s (default 60)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries of a call that timed out or failed (default 2)")
    parser.add_argument("--evict-threshold", type=int, default=3,
                        help="consecutive stalls before evicting the model with keep_alive=0 (default 3)")
    parser.add_argument("--control-dir", help="control directory (default: <db stem>.control/ beside the DB)")
    parser.add_argument("--runner-log", help="runner.log to append to (default: runner.log beside the DB)")
    parser.add_argument("--run-id", help="run id of the trials (default demo-<UTC time>)")
    parser.add_argument("--trials", type=int, default=0, help="stop after this many trials (default 0: until stopped)")
    parser.add_argument("--think-s", type=float, default=0.0, help="pause of a worker between trials, s (default 0)")
    parser.add_argument("--grace-s", type=float, default=3.0, help="on SIGTERM, wait this long for trials in flight")
    parser.add_argument("--no-images", action="store_true", help="text-only calls (for models without vision)")
    parser.add_argument("--num-predict", type=int, default=0, help="options.num_predict of each call (default: not sent)")


def config_from(args: argparse.Namespace, ollama_default: str) -> HarnessConfig:
    db = Path(args.db).expanduser().resolve()
    return HarnessConfig(
        db=db,
        ollama=args.ollama or ollama_default,
        model=args.model,
        max_concurrency=args.max_concurrency,
        request_timeout_s=args.request_timeout_s,
        max_retries=args.max_retries,
        evict_threshold=args.evict_threshold,
        control_dir=Path(args.control_dir).expanduser().resolve() if args.control_dir else None,
        runner_log=Path(args.runner_log).expanduser().resolve() if args.runner_log else db.with_name("runner.log"),
        run_id=args.run_id,
        trials=args.trials,
        think_s=args.think_s,
        grace_s=args.grace_s,
        images=not args.no_images,
        num_predict=max(0, args.num_predict),
    )


def main(args: argparse.Namespace) -> int:
    """`oasis-ops demo harness ...`: run until SIGTERM/SIGINT (or --trials are done)."""
    from oasis_ops.commands import settings_from

    harness = Harness(config_from(args, settings_from(args).ollama_host), echo=sys.stdout)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        harness.stop_event.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    return harness.run()


def run(argv: Sequence[str] | None = None) -> int:
    """`python -m oasis_ops.demo.harness ...`; library errors become one line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m oasis_ops.demo.harness", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except OasisOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(run())
