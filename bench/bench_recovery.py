"""Recovery timings against the demo world (issue 5): the Ollama emulator with its real runner
children, a harness-shaped request loop, the `stopping_deadlock` fault.

Measured (each scenario on a fresh emulator):
- detection: from the eviction that turns the model Stopping (the harness's keep_alive 0 after
  consecutive timeouts) to the first probe (ModelProbe, as the sampler and watchdog run it every
  sample_interval_s) that sees Stopping; target within 2 sample intervals. Also from injection.
- manual: from the click (recover()) to the first successful trial; target <= 5 s.
- watchdog: from injection to the first successful trial with watchdog_stopping_s = N = 30 and
  the watchdog ticking every sample interval; target <= 45 s.

`python -m bench recovery` (BENCH_QUICK=1: N = 8 instead of 30).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import quick, write_result
from oasis_ops.actions import ActionContext, recover
from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.errors import OasisOpsError
from oasis_ops.probes import ModelProbe, ModelSnapshot
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.settings import load_settings
from oasis_ops.watchdog import Watchdog

MODEL = "gemma4:e4b"


@dataclass
class Trial:
    started: float  # monotonic
    finished: float
    started_at: datetime
    status: str  # ok | timeout | error
    error: str | None = None


@dataclass
class RequestLoop:
    """A harness-shaped client: `workers` threads calling /api/generate with a client timeout;
    after `evict_after` consecutive timeouts it evicts with keep_alive 0 (the write-up's path)."""

    url: str
    model: str = MODEL
    workers: int = 2
    request_timeout_s: float = 3.0
    evict_after: int = 2
    trials: list[Trial] = field(default_factory=list)
    evictions: list[float] = field(default_factory=list)  # monotonic times of keep_alive 0 posts
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _consecutive: int = 0

    def start(self) -> RequestLoop:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"loop-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.request_timeout_s + 5)

    def __enter__(self) -> RequestLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _work(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False) as client:
            while not self._stop.is_set():
                started, started_at = time.monotonic(), datetime.now(UTC)
                status, error = "ok", None
                try:
                    response = client.post(
                        "/api/generate",
                        json={"model": self.model, "prompt": "hi", "stream": False, "options": {"num_predict": 4}},
                        timeout=self.request_timeout_s,
                    )
                    if response.status_code != 200:
                        status, error = "error", response.text[:200]
                except httpx.TimeoutException:
                    status, error = "timeout", f"timed out after {self.request_timeout_s:g}s"
                except httpx.HTTPError as exc:
                    status, error = "error", str(exc)[:200]
                trial = Trial(started, time.monotonic(), started_at, status, error)
                evict = False
                with self._lock:
                    self.trials.append(trial)
                    self._consecutive = self._consecutive + 1 if status == "timeout" else 0
                    if self._consecutive >= self.evict_after:
                        self._consecutive = 0
                        evict = True
                if evict:
                    try:
                        client.post("/api/generate", json={"model": self.model, "keep_alive": 0}, timeout=5)
                        with self._lock:
                            self.evictions.append(time.monotonic())
                    except httpx.HTTPError:
                        pass
                if status == "error":
                    self._stop.wait(0.2)  # like a harness's retry back-off

    def first_ok_after(self, t: float) -> float | None:
        with self._lock:
            times = [tr.finished for tr in self.trials if tr.status == "ok" and tr.started >= t]
        return min(times) if times else None

    def completed_since(self, since: datetime) -> int:
        """Ok trials started at or after `since` (what TrialSource.completed_since answers)."""
        with self._lock:
            return sum(1 for tr in self.trials if tr.status == "ok" and tr.started_at >= since)

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for tr in self.trials:
                out[tr.status] = out.get(tr.status, 0) + 1
            return out


def set_fault(url: str, name: str, on: bool, **params: float) -> None:
    httpx.post(url + "/_demo/faults", json={"name": name, "on": on, "params": params}, timeout=5).raise_for_status()


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return None


def world_context(emu: EmulatorProcess, work: Path, **settings: Any) -> ActionContext:
    work.mkdir(parents=True, exist_ok=True)
    flags = {"ollama_host": emu.url, "ollama_models": str(emu.home.root / "models"), **settings}
    config = load_settings(env={}, flags=flags)
    ctx = ActionContext.from_settings(config, db=str(work / "trials.duckdb"), requested_by="cli")
    ctx.serve_pid = emu.pid  # other `ollama serve` processes may run on a shared machine
    return ctx


class BenchSampler:
    """What the sampler does for this bench: probe every interval, write model_samples to the
    sidecar, and (optionally) drive the watchdog with the same snapshots."""

    def __init__(self, ctx: ActionContext, emu: EmulatorProcess, interval_s: float, watchdog: Watchdog | None = None) -> None:
        self.ctx, self.interval_s, self.watchdog = ctx, interval_s, watchdog
        self.probe = ModelProbe(OllamaClient(emu.url, timeout_s=2.0), models_dir=ctx.models_dir, serve_pid=emu.pid)
        self.first_stopping: float | None = None
        self.kills: list[float] = []
        self.latest: list[ModelSnapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> BenchSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.watchdog is not None:
            self.watchdog.close()

    def stopping_for(self) -> float:
        return max((s.status.stopping_for_s or 0.0 for s in self.latest if s.state == "stopping"), default=0.0)

    def _run(self) -> None:
        assert self.ctx.sidecar is not None
        while not self._stop.is_set():
            tick = time.monotonic()
            try:
                snaps = self.probe.snapshot()
            except OasisOpsError:
                snaps = []
            self.latest = snaps
            if self.first_stopping is None and any(s.model == MODEL and s.state == "stopping" for s in snaps):
                self.first_stopping = time.monotonic()
            rows = [{**s.as_row(), "stopping_since": s.status.stopping_since, "runner_create_time": s.runner_create_time}
                    for s in snaps]  # fmt: skip
            if rows:
                self.ctx.sidecar.write_batch({"model_samples": rows})
            if self.watchdog is not None:
                results = self.watchdog.tick(datetime.now(UTC), models=snaps)
                if any(r.outcome == "done" for r in results):
                    self.kills.append(time.monotonic())
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - tick)))


def scenario_manual(work: Path, interval_s: float, *, fresh: bool = False) -> dict[str, float]:
    """`fresh`: click as soon as Stopping is seen (recover() then waits out the evict grace);
    else click once the model has been Stopping longer than the grace period, which is when
    the pages flag it as stuck and an operator reaches for Recover."""
    with EmulatorProcess(work / "ollama", latency_ms=150, load_ms=100) as emu:
        ctx = world_context(emu, work)
        grace = float(ctx.settings.evict_grace_s)
        with RequestLoop(emu.url, request_timeout_s=2.0) as loop, BenchSampler(ctx, emu, interval_s) as sampler:
            wait_for(lambda: loop.first_ok_after(0), 30)
            injected = time.monotonic()
            set_fault(emu.url, "stopping_deadlock", True, count=1000)
            if not wait_for(lambda: sampler.first_stopping, 60):
                raise RuntimeError(f"Stopping never seen (trials: {loop.counts()})")
            set_fault(emu.url, "stopping_deadlock", False)  # the wedged requests stay wedged
            if not fresh:
                wait_for(lambda: episode_start_from_sidecar(ctx.sidecar, MODEL) is not None and
                         (datetime.now(UTC) - episode_start_from_sidecar(ctx.sidecar, MODEL)).total_seconds() > grace + 0.5,  # type: ignore[operator]
                         grace + 30, 0.5)  # fmt: skip
            click = time.monotonic()
            result = recover(ctx, MODEL)
            done = time.monotonic()
            first_ok = wait_for(lambda: loop.first_ok_after(click), 30)
            evicted = loop.evictions[0]
            detected = sampler.first_stopping
        ctx.close()
    if result.outcome != "done" or first_ok is None or detected is None:
        raise RuntimeError(f"recover: {result.outcome}: {result.message}")
    return {
        "detect_after_evict_s": detected - evicted,
        "detect_after_inject_s": detected - injected,
        "click_to_first_ok_s": first_ok - click,
        "recover_action_s": done - click,
    }


def scenario_watchdog(work: Path, interval_s: float, stopping_s: float) -> dict[str, float]:
    with EmulatorProcess(work / "ollama", latency_ms=150, load_ms=100) as emu:
        ctx = world_context(emu, work, watchdog=True, watchdog_stopping_s=stopping_s)
        with RequestLoop(emu.url, request_timeout_s=2.0) as loop:
            wait_for(lambda: loop.first_ok_after(0), 30)
            watchdog = Watchdog(ctx, completed_since=loop.completed_since)
            with BenchSampler(ctx, emu, interval_s, watchdog) as sampler:
                injected = time.monotonic()
                set_fault(emu.url, "stopping_deadlock", True, count=1000)
                # the fault is cleared once the watchdog acts (its wedged requests die with the runner)
                killed = wait_for(lambda: sampler.kills, stopping_s + 60, 0.1)
                if killed:
                    set_fault(emu.url, "stopping_deadlock", False)
                    first_ok = wait_for(lambda: loop.first_ok_after(killed[0]), 30)
                else:
                    first_ok = None
        ctx.close()
    if not killed or first_ok is None:
        raise RuntimeError(f"the watchdog did not recover the run (notes: {watchdog.notes})")
    return {"inject_to_kill_s": killed[0] - injected, "inject_to_first_ok_s": first_ok - injected}


def main() -> int:
    settings = load_settings(env={})
    interval = float(settings.sample_interval_s)
    stopping_s = 8.0 if quick() else float(settings.watchdog_stopping_s)
    runs = 1 if quick() else 3
    manual: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        for n in range(runs):
            manual.append(scenario_manual(Path(tmp) / f"manual{n}", interval))
        fresh = scenario_manual(Path(tmp) / "fresh", interval, fresh=True)
        auto = scenario_watchdog(Path(tmp) / "watchdog", interval, stopping_s)

    def med(key: str) -> float:
        return statistics.median(m[key] for m in manual)

    def worst(key: str) -> float:
        return max(m[key] for m in manual)

    rows = [
        ("detection after the evict (s)", med("detect_after_evict_s"), worst("detect_after_evict_s"), f"<= {2 * interval:g} (2 intervals)"),
        ("detection after injection (s)", med("detect_after_inject_s"), worst("detect_after_inject_s"), "(harness timeouts + evict)"),
        ("click -> first ok trial (s)", med("click_to_first_ok_s"), worst("click_to_first_ok_s"), "<= 5"),
        ("recover() itself (s)", med("recover_action_s"), worst("recover_action_s"), ""),
        ("click at first sight -> first ok trial (s)", fresh["click_to_first_ok_s"], fresh["click_to_first_ok_s"],
         f"(includes the {load_settings(env={}).evict_grace_s:g} s evict grace)"),
        (f"watchdog N={stopping_s:g}: injection -> kill (s)", auto["inject_to_kill_s"], auto["inject_to_kill_s"], ""),
        (f"watchdog N={stopping_s:g}: injection -> first ok (s)", auto["inject_to_first_ok_s"], auto["inject_to_first_ok_s"], "<= 45" if stopping_s == 30 else "(quick mode)"),
    ]  # fmt: skip
    print(f"recovery bench: sample interval {interval:g} s, {runs} manual run(s), emulator latency 150 ms")
    print(f"{'measure':<44} {'median':>8} {'worst':>8}  target")
    for name, median, worst_value, target in rows:
        print(f"{name:<44} {median:>8.2f} {worst_value:>8.2f}  {target}")
    write_result("recovery", {"interval_s": interval, "manual": manual, "fresh": fresh, "watchdog": auto, "stopping_s": stopping_s,
                              "at": (datetime.now(UTC) - timedelta(0)).isoformat()})  # fmt: skip
    ok = (
        worst("detect_after_evict_s") <= 2 * interval + 0.5
        and worst("click_to_first_ok_s") <= 5.0
        and (stopping_s != 30 or auto["inject_to_first_ok_s"] <= 45.0)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
