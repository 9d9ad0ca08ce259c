"""The sampler's reading of llama-server runners (Ollama >= 0.30): their own GET /slots and GET /metrics.

`RunnerReader.sample()` is called by the Sampler once per tick with the tick's /api/ps snapshots;
it does nothing until settings.process_interval_s (2 s) has passed since the last read. Then
every `llama-server` runner serving a model is read (oasis_ops.probes.llama_server). While
/api/ps does not answer (from Ollama 0.32.4 it waits for an unload or a stuck runner's ping),
the runners come from the process tree instead, named by the model they served when last seen
in /api/ps: exactly when a wedged runner matters most, it is still read. One
`runner_samples` row per runner per read, every read bounded by RUNNER_TIMEOUT_S in total,
several runners read at once (on up to MAX_RUNNER_READERS threads, which exist only while two
runners or more are loaded), so a runner that does not answer costs a tick at most ~1 s.
Runners are keyed by process identity (pid, create time); one that left /api/ps is forgotten.

Events (the `events` table, `kind` values) this module writes:

    runner_no_progress            a llama-server slot is busy and made no progress (no token, no
                                  prompt batch) for settings.runner_no_progress_s; runner_progress when it moves
                                  again or goes idle
    runner_not_answering          a llama-server runner has not answered /slots for runner_no_progress_s
                                  (stuck in a decode, or SIGSTOPped); runner_answering when it does
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from oasis_ops.modelstate import JUST_EXPIRED_S, Serving
from oasis_ops.probes import ModelSnapshot, OllamaTree
from oasis_ops.probes.llama_server import (
    LlamaServerProbe,
    RunnerReading,
    RunnerSignals,
    RunnerTracker,
)
from oasis_ops.probes.processes import blob_key

RUNNER_TIMEOUT_S = 1.0  # one llama-server read (/slots + /metrics), in total; runners are read at once
MAX_RUNNER_READERS = 4  # threads reading runners at once (only used with two runners or more)

RunnerKey = tuple[int, float | None]  # (pid, create time): one runner process


@dataclass(frozen=True)
class RunnerTarget:
    """One llama-server runner to read: the model it serves, its identity and its port."""

    model: str
    runner_pid: int
    runner_create_time: float | None
    runner_port: int

    @classmethod
    def of(cls, snapshot: ModelSnapshot) -> RunnerTarget:
        return cls(snapshot.model, int(snapshot.runner_pid or 0), snapshot.runner_create_time, int(snapshot.runner_port or 0))


def _metric_int(reading: RunnerReading, name: str) -> int | None:
    value = reading.metric(name)
    return int(value) if value is not None else None


def runner_row(snapshot: ModelSnapshot | RunnerTarget, signals: RunnerSignals) -> dict[str, Any]:
    """The sidecar's runner_samples row for one llama-server read (see migration 004)."""
    reading = signals.reading
    slots = None
    if reading.slots is not None:
        slots = [{**s.as_dict(), "no_progress_s": signals.slot_ages.get(s.id)} for s in reading.slots]
    return {
        "ts": reading.ts,
        "model": snapshot.model,
        "runner_pid": snapshot.runner_pid,
        "runner_create_time": snapshot.runner_create_time,
        "runner_port": snapshot.runner_port,
        "reachable": reading.reachable,
        "error": reading.error or reading.metrics_error,
        "response_ms": round(reading.elapsed_s * 1000.0, 3),
        "slots_total": reading.slots_total,
        "slots_busy": reading.slots_busy,
        "tokens_in_flight": reading.tokens_in_flight,
        "requests_processing": _metric_int(reading, "requests_processing"),
        "requests_deferred": _metric_int(reading, "requests_deferred"),
        "tokens_predicted_total": _metric_int(reading, "tokens_predicted_total"),
        "metrics_enabled": reading.metrics_enabled,
        "tokens_per_s": signals.tokens_per_s,
        "rate_source": signals.rate_source,
        "stalled_for_s": signals.stalled_for_s,
        "stalled_slots": len(signals.stalled) if reading.slots is not None else None,
        "not_answering_for_s": signals.not_answering_for_s,
        "slots": slots,
    }


@dataclass
class _RunnerWatch:
    """One llama-server runner process the sampler reads (its probe keeps a connection)."""

    model: str
    pid: int
    port: int
    probe: LlamaServerProbe
    tracker: RunnerTracker
    future: Future[RunnerReading] | None = None  # a read still running on a reader thread
    no_progress_since: datetime | None = None  # set while a runner_no_progress event is open
    not_answering_since: datetime | None = None  # set while a runner_not_answering event is open
    progress: Serving | None = None  # the newest read that showed it serving (tokens decoded, a prompt batch)
    met_mono: float = 0.0  # when the sampler met this runner (monotonic)


class RunnerReader:
    """The llama-server runners one Sampler reads, and what it writes about them.

    Writes through the Sampler's own hooks: `add(table, row)` buffers a row, `event(ts, kind,
    model, detail)` records an event, `count_error(where, exc)` counts an error (never raised).
    `sample()` once per tick; `close()` when the sampler closes.
    """

    def __init__(
        self,
        *,
        every_s: float,
        slack_s: float,
        timeout_s: float,
        no_progress_s: float,
        clock: Callable[[], datetime],
        add: Callable[[str, dict[str, Any]], None],
        event: Callable[[datetime | None, str, str | None, dict[str, Any]], None],
        count_error: Callable[[str, BaseException], None],
    ) -> None:
        self.every_s = every_s
        self.slack_s = slack_s
        self.timeout_s = timeout_s
        self.no_progress_s = no_progress_s
        self.clock = clock
        self._add = add
        self._event = event
        self._count_error = count_error
        self._runners: dict[RunnerKey, _RunnerWatch] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._last_read = float("-inf")

    def sample(self, ts: datetime, mono: float, snapshots: list[ModelSnapshot], rows: list[dict[str, Any]],
               tree: OllamaTree | None = None) -> None:  # fmt: skip
        """Read /slots (and /metrics) of every llama-server runner serving a model, when due;
        each runner_samples row written is appended to `rows` too (the tick's report). With no
        snapshots (/api/ps is blocked), the llama-server runners of `tree` are read instead."""
        # Due every process_interval_s, with a quarter tick of slack: ticks land a hair early or
        # late, and a read due "at 2.0 s" must not slip to the third tick for 1 ms of jitter.
        if mono - self._last_read < self.every_s - self.slack_s:
            return
        self._last_read = mono
        targets: dict[RunnerKey, RunnerTarget] = {}
        for snap in snapshots:
            if snap.runner_variant == "llama-server" and snap.runner_pid is not None and snap.runner_port:
                targets[(snap.runner_pid, snap.runner_create_time)] = RunnerTarget.of(snap)
        if not snapshots and tree is not None:
            for rp in tree.runners:
                if rp.command.variant != "llama-server" or not rp.command.port:
                    continue
                tree_key: RunnerKey = (rp.pid, rp.record.create_time)
                known = self._runners.get(tree_key)  # the model it served when /api/ps last answered
                model = known.model if known is not None else f"runner {blob_key(rp.command.model or '')[:19]}"
                targets[tree_key] = RunnerTarget(model, rp.pid, rp.record.create_time, rp.command.port)
        for key in [k for k in self._runners if k not in targets]:  # runner gone: forget it (bounded)
            self._drop(key)
        if not targets:
            return
        for key, target in targets.items():
            if key not in self._runners:
                probe = LlamaServerProbe(f"http://127.0.0.1:{target.runner_port}", timeout_s=self.timeout_s, clock=self.clock)
                self._runners[key] = _RunnerWatch(target.model, target.runner_pid, target.runner_port, probe,
                                                  RunnerTracker(self.no_progress_s), met_mono=mono)  # fmt: skip
        readings = self._read([self._runners[k] for k in targets])
        for key, target in targets.items():
            watch = self._runners[key]
            reading = readings.get(id(watch))
            if reading is None:  # still being read (more runners than readers): next time
                continue
            signals = watch.tracker.update(replace(reading, ts=ts, mono=mono))
            if signals.tokens_per_s:  # tokens decoded since the previous read: it is serving
                watch.progress = Serving(ts, f"its llama-server runner decoding ({signals.tokens_per_s:,.0f} tok/s)")
            elif signals.moved:  # a prompt batch done: serving, between tokens
                watch.progress = Serving(ts, "its llama-server runner working (a prompt batch done)")
            row = runner_row(target, signals)
            rows.append(row)
            self._add("runner_samples", row)
            self._events(ts, target, watch, signals)

    def progress_of(self, pid: int | None, create_time: float | None) -> Serving | None:
        """When the runner (pid, create time) was last seen serving, or None."""
        if pid is None:
            return None
        watch = self._runners.get((pid, create_time))
        return watch.progress if watch is not None else None

    def undecided(self, pid: int | None, create_time: float | None, mono: float) -> bool:
        """True while the llama-server runner (pid, create time) has shown no progress yet and the
        sampler met it less than JUST_EXPIRED_S ago: no evidence either way (a runner starved of
        CPU can miss reads, or sit between two requests across two close reads). After that, a
        runner that never moved is judged without its word."""
        if pid is None:
            return False
        watch = self._runners.get((pid, create_time))
        return watch is None or (watch.progress is None and mono - watch.met_mono < JUST_EXPIRED_S)

    def _read(self, watches: list[_RunnerWatch]) -> dict[int, RunnerReading]:
        """One read per runner: inline for one, else on up to MAX_RUNNER_READERS threads at once,
        waiting at most the read timeout (plus a margin) for all of them together."""
        if len(watches) == 1 and watches[0].future is None:
            return {id(watches[0]): watches[0].probe.read()}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=MAX_RUNNER_READERS, thread_name_prefix="oasis-runner-read")
        for watch in watches:
            if watch.future is None:
                watch.future = self._pool.submit(watch.probe.read)
        pending = [w.future for w in watches if w.future is not None]
        wait_futures(pending, timeout=self.timeout_s + 0.25)
        out: dict[int, RunnerReading] = {}
        for watch in watches:
            future = watch.future
            if future is None or not future.done():
                continue  # left running: its own deadline ends it; collected on a later tick
            watch.future = None
            try:
                out[id(watch)] = future.result()
            except Exception as exc:  # noqa: BLE001 - read() raises only on a bug; keep the tick going
                self._count_error("runners", exc)
        return out

    def _events(self, ts: datetime, snap: RunnerTarget, watch: _RunnerWatch, signals: RunnerSignals) -> None:
        reading = signals.reading
        who = {"runner_pid": watch.pid, "runner_port": watch.port}
        if signals.no_progress and watch.no_progress_since is None:
            longest = max(s.no_progress_s for s in signals.stalled)
            watch.no_progress_since = ts - timedelta(seconds=longest)
            self._event(ts, "runner_no_progress", snap.model, {
                **who, "threshold_s": self.no_progress_s, "since": watch.no_progress_since,
                "slots": [{"id": s.id, "id_task": s.id_task, "n_decoded": s.n_decoded, "no_progress_s": round(s.no_progress_s, 1)}
                          for s in signals.stalled],
            })  # fmt: skip
        elif watch.no_progress_since is not None and reading.slots is not None and not signals.no_progress:
            busy = [s for s in reading.slots if s.is_processing]
            self._event(ts, "runner_progress", snap.model, {
                **who, "no_progress_for_s": round((ts - watch.no_progress_since).total_seconds(), 1),
                "how": "tokens" if busy else "slots idle", "tokens_per_s": signals.tokens_per_s,
            })  # fmt: skip
            watch.no_progress_since = None
        waited = signals.not_answering_for_s
        if waited is not None and waited >= self.no_progress_s and watch.not_answering_since is None:
            watch.not_answering_since = ts - timedelta(seconds=waited)
            self._event(ts, "runner_not_answering", snap.model, {
                **who, "since": watch.not_answering_since, "not_answering_for_s": round(waited, 1),
                "timeout_s": reading.timeout_s, "error": reading.error,
            })  # fmt: skip
        elif reading.reachable and watch.not_answering_since is not None:
            self._event(ts, "runner_answering", snap.model, {
                **who, "not_answering_for_s": round((ts - watch.not_answering_since).total_seconds(), 1),
            })  # fmt: skip
            watch.not_answering_since = None

    def _drop(self, key: RunnerKey) -> None:
        watch = self._runners.pop(key)
        if watch.future is None or watch.future.done():
            watch.probe.close()
        else:
            watch.future.add_done_callback(lambda _f: watch.probe.close())

    def close(self) -> None:
        """Forget every runner (closing its probe once no read is running) and stop the readers."""
        for key in list(self._runners):
            self._drop(key)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
