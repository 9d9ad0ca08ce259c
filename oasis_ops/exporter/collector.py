"""The exporter's collector: one read of the sidecar (and the cached trial counts) per scrape.

Names follow Prometheus conventions: base units (`_seconds`, `_bytes`, `_ratio` for 0..1),
`_total` for counters, a `host` label on every series (the `metrics_host` setting, by default
this machine's name), so that several machines' samplers land in one Prometheus side by side.

| metric | type | labels | from |
|---|---|---|---|
| oasis_trial_latency_seconds | histogram | model, outcome | the trial table (ok / timeout / error) |
| oasis_trials_total | counter | model, outcome | the trial table |
| oasis_tokens_total | counter | model, kind (prompt, completion) | the trial table, when it records tokens (the proxy, the litellm callback) |
| oasis_trial_table_up | gauge | | 1 when the trial table was readable at the last read |
| oasis_memory_free_bytes, oasis_memory_available_bytes, oasis_memory_total_bytes, oasis_swap_used_bytes | gauge | source | the newest host sample |
| oasis_swap_out_pages_total, oasis_swap_in_pages_total | counter | source | the host's own counters |
| oasis_memory_pressure_ratio | gauge | source | PSI some avg10 / macOS level, 0..1 |
| oasis_host_sample_age_seconds | gauge | | since the newest host sample |
| oasis_model_state | gauge | model, state | 1 for the model's current state (loaded, stopping, gone), 0 for the others |
| oasis_model_stopping_seconds | gauge | model | how long a Stopping model has been stopping |
| oasis_runner_resident_memory_bytes, oasis_runner_cpu_ratio, oasis_runner_vram_bytes | gauge | model | the model's runner process |
| oasis_runner_tokens_per_second, oasis_runner_slots, oasis_runner_slots_busy, oasis_runner_no_progress_seconds | gauge | model | llama-server's /slots (Ollama >= 0.30) |
| oasis_gpu_memory_used_bytes, oasis_gpu_memory_total_bytes, oasis_gpu_utilization_ratio, oasis_gpu_temperature_celsius, oasis_gpu_power_watts | gauge | gpu, name | the newest GPU read |
| oasis_ollama_up | gauge | | Ollama answered the sampler's last look |
| oasis_sampler_up | gauge | | the sampler's heartbeat is fresh |
| oasis_sampler_last_tick_timestamp_seconds | gauge | | its last tick |
| oasis_sampler_errors_total | counter | | errors since it started |
| oasis_warning_active | gauge | kind, subject, severity | 1 per open early warning |
| oasis_actions_total | counter | action, outcome | audited actions (evict, kill, recover, concurrency, ...) |
| oasis_action_last_timestamp_seconds | gauge | action | the newest of each (Grafana's annotations) |
| oasis_ollama_metrics_endpoint | gauge | | 1 when the Ollama build serves its own /metrics (asked every 10 min) |

Ollama's own metrics, where a build serves them (proposals in ollama/ollama#3144 add /metrics
behind OLLAMA_METRICS), are never re-exported here: scrape that endpoint as its own job. Every
series above is the console's own (the harness's trials, the host, the runner process), named
`oasis_*`, so the two never collide or count a request twice.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from oasis_ops.errors import OasisOpsError
from oasis_ops.exporter.trialstats import LATENCY_BUCKETS_S, TrialCounts, TrialStats

MODEL_STATES = ("loaded", "stopping", "gone")
RECENT = timedelta(hours=1)  # models, runners and GPUs seen within this are exported


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class OasisCollector:
    """A prometheus_client collector over one sidecar and one trial table (either may be absent)."""

    def __init__(self, sidecar_path: str | Path | None, trials: TrialStats | None, *, host: str = "",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), ollama_url: str | None = None,
                 transport: Any = None) -> None:  # fmt: skip
        self.sidecar_path = Path(sidecar_path) if sidecar_path else None
        self.trials = trials
        self.host = host or socket.gethostname()
        self.clock = clock
        self.ollama_url = ollama_url
        self._transport = transport  # tests: an httpx transport for the Ollama /metrics check
        self._ollama_metrics: tuple[float, bool] | None = None  # (monotonic checked at, serves /metrics)

    def describe(self) -> list[Metric]:
        return []  # no registration-time read: the sidecar may not exist yet

    def collect(self) -> Iterator[Metric]:
        yield from self._trial_metrics(self.trials.counts() if self.trials is not None else TrialCounts(error="no trial table"))
        yield from self._sidecar_metrics()
        if self.ollama_url:
            served = GaugeMetricFamily("oasis_ollama_metrics_endpoint", "1 when the Ollama build serves its own /metrics "
                                       "(scrape it as its own job; never re-exported here)", labels=["host"])  # fmt: skip
            served.add_metric([self.host], 1.0 if self._ollama_serves_metrics() else 0.0)
            yield served

    def _ollama_serves_metrics(self) -> bool:
        """GET <ollama>/metrics answered 200 with Prometheus text; asked every 10 minutes, 1 s total."""
        import time

        now = time.monotonic()
        if self._ollama_metrics is not None and now - self._ollama_metrics[0] < 600:
            return self._ollama_metrics[1]
        import httpx

        from oasis_ops.probes.deadline import Deadline, DeadlineTransport

        deadline = Deadline()
        deadline.at = now + 1.0
        serves = False
        try:
            with httpx.Client(base_url=str(self.ollama_url), timeout=1.0, trust_env=False,
                              transport=self._transport or DeadlineTransport(deadline)) as client:  # fmt: skip
                with client.stream("GET", "/metrics") as response:
                    head = b""
                    for chunk in response.iter_bytes():
                        head += chunk
                        if len(head) >= 4096:
                            break
                    serves = response.status_code == 200 and (b"# TYPE" in head or b"# HELP" in head)
        except (httpx.HTTPError, ValueError):
            serves = False
        self._ollama_metrics = (now, serves)
        return serves

    # --- the trial table ----------------------------------------------------------------------
    def _trial_metrics(self, counts: TrialCounts) -> Iterator[Metric]:
        up = GaugeMetricFamily("oasis_trial_table_up", "1 when the trial table was readable at the exporter's last read", labels=["host"])
        up.add_metric([self.host], 0.0 if counts.error else 1.0)
        yield up
        total = CounterMetricFamily("oasis_trials", "Trials in the trial table by model and outcome", labels=["host", "model", "outcome"])
        for (model, outcome), n in sorted(counts.trials.items()):
            total.add_metric([self.host, model, outcome], float(n))
        yield total
        histogram = HistogramMetricFamily("oasis_trial_latency_seconds", "Trial latency as the harness saw it",
                                          labels=["host", "model", "outcome"])  # fmt: skip
        for key, per_bucket in sorted(counts.buckets.items()):
            running, cumulative = 0, []
            for bound, n in zip((*LATENCY_BUCKETS_S, math.inf), per_bucket, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == math.inf else f"{bound:g}", float(running)))
            histogram.add_metric([self.host, *key], cumulative, counts.latency_sum_s.get(key, 0.0))
        yield histogram
        if counts.tokens:
            tokens = CounterMetricFamily("oasis_tokens", "Tokens the trial table records, by model and kind", labels=["host", "model", "kind"])
            for (model, kind), n in sorted(counts.tokens.items()):
                tokens.add_metric([self.host, model, kind], float(n))
            yield tokens

    # --- the sidecar --------------------------------------------------------------------------
    def _sidecar_metrics(self) -> Iterator[Metric]:
        if self.sidecar_path is None or not self.sidecar_path.exists():
            return
        from oasis_ops.earlywarning.live import open_warnings
        from oasis_ops.sampler.header import live_header
        from oasis_ops.sampler.reads import _optional_rows, _reader, _rows
        from oasis_ops.sidecar import Sidecar

        now = self.clock()
        sidecar = Sidecar(self.sidecar_path)
        try:
            header = live_header(sidecar, now, models_since=now - RECENT)
            with _reader(sidecar) as con:
                gpus = _optional_rows(sidecar, con, "exporter_q_latest_gpus", since=now - RECENT)
                actions = _rows(sidecar, con, "exporter_q_action_counts")
            warnings = open_warnings(sidecar, now)
        except OasisOpsError:
            return  # an unreadable sidecar: the trial metrics still go out (and the sampler says why)
        yield from self._host_metrics(header)
        yield from self._model_metrics(header)
        yield from self._gpu_metrics(gpus)
        yield from self._status_metrics(header, warnings, actions)

    def _gauge(self, name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=["host", *labels])

    def _host_metrics(self, header: Any) -> Iterator[Metric]:
        host = header.host
        if not host:
            return
        source = str(host.get("source") or "")
        for name, key, text in (
            ("oasis_memory_free_bytes", "mem_free_bytes", "Free memory at the newest host sample"),
            ("oasis_memory_available_bytes", "mem_available_bytes", "Available memory (free plus reclaimable)"),
            ("oasis_memory_total_bytes", "mem_total_bytes", "Physical memory"),
            ("oasis_swap_used_bytes", "swap_used_bytes", "Swap in use"),
        ):
            value = _finite(host.get(key))
            if value is not None:
                gauge = self._gauge(name, text, ["source"])
                gauge.add_metric([self.host, source], value)
                yield gauge
        for name, key, text in (("oasis_swap_out_pages", "swapouts", "Pages swapped out (the host's counter)"),
                                ("oasis_swap_in_pages", "swapins", "Pages swapped in (the host's counter)")):  # fmt: skip
            value = _finite(host.get(key))
            if value is not None:
                counter = CounterMetricFamily(name, text, labels=["host", "source"])
                counter.add_metric([self.host, source], value)
                yield counter
        pressure = _finite(host.get("pressure"))
        if pressure is not None:
            gauge = self._gauge("oasis_memory_pressure_ratio", "Memory pressure 0..1 (Linux PSI some avg10; macOS level)", ["source"])
            gauge.add_metric([self.host, source], pressure / 100.0)
            yield gauge
        if header.host_age_s is not None:
            age = self._gauge("oasis_host_sample_age_seconds", "Seconds since the newest host sample", [])
            age.add_metric([self.host], float(header.host_age_s))
            yield age

    def _model_metrics(self, header: Any) -> Iterator[Metric]:
        state = self._gauge("oasis_model_state", "1 for the model's current state (loaded, stopping, gone)", ["model", "state"])
        stopping = self._gauge("oasis_model_stopping_seconds", "How long a Stopping model has been stopping", ["model"])
        rss = self._gauge("oasis_runner_resident_memory_bytes", "Resident memory of the model's runner process", ["model"])
        cpu = self._gauge("oasis_runner_cpu_ratio", "CPU of the model's runner process (1 = one core)", ["model"])
        vram = self._gauge("oasis_runner_vram_bytes", "VRAM the model's runner process holds on every GPU", ["model"])
        rate = self._gauge("oasis_runner_tokens_per_second", "Tokens per second the runner generates (llama-server)", ["model"])
        slots = self._gauge("oasis_runner_slots", "The runner's slots (llama-server)", ["model"])
        busy = self._gauge("oasis_runner_slots_busy", "Busy slots (llama-server)", ["model"])
        stalled = self._gauge("oasis_runner_no_progress_seconds", "Longest a busy slot has gone without progress", ["model"])
        for model in header.models:
            for name in MODEL_STATES:
                state.add_metric([self.host, model.model, name], 1.0 if model.state == name else 0.0)
            if model.state == "stopping" and model.stopping_for_s is not None:
                stopping.add_metric([self.host, model.model], float(model.stopping_for_s))
            for family, value in ((rss, _finite(model.runner_rss_bytes)), (vram, _finite(model.runner_vram_bytes)),
                                  (cpu, None if _finite(model.runner_cpu_percent) is None else float(model.runner_cpu_percent) / 100.0)):  # fmt: skip
                if value is not None and model.state != "gone":
                    family.add_metric([self.host, model.model], value)
            runner = model.runner
            if runner is not None and model.state != "gone":
                for family, value in ((rate, runner.tokens_per_s), (slots, runner.slots_total), (busy, runner.slots_busy),
                                      (stalled, runner.stalled_for_s)):  # fmt: skip
                    if _finite(value) is not None:
                        family.add_metric([self.host, model.model], float(value))
        yield from (state, stopping, rss, cpu, vram, rate, slots, busy, stalled)

    def _gpu_metrics(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
        if not rows:
            return
        families = [
            (self._gauge("oasis_gpu_memory_used_bytes", "VRAM used", ["gpu", "name"]), "memory_used_bytes", 1.0),
            (self._gauge("oasis_gpu_memory_total_bytes", "VRAM total", ["gpu", "name"]), "memory_total_bytes", 1.0),
            (self._gauge("oasis_gpu_utilization_ratio", "GPU busy, 0..1", ["gpu", "name"]), "utilization_percent", 100.0),
            (self._gauge("oasis_gpu_temperature_celsius", "GPU temperature", ["gpu", "name"]), "temperature_c", 1.0),
            (self._gauge("oasis_gpu_power_watts", "GPU power draw", ["gpu", "name"]), "power_w", 1.0),
        ]
        for row in rows:
            labels = [self.host, str(row.get("gpu_index")), str(row.get("name") or "")]
            for family, key, divisor in families:  # percent -> ratio by division: 95 / 100 is exactly 0.95
                value = _finite(row.get(key))
                if value is not None:
                    family.add_metric(labels, value / divisor)
        yield from (family for family, _key, _divisor in families)

    def _status_metrics(self, header: Any, warnings: list[Any], actions: list[dict[str, Any]]) -> Iterator[Metric]:
        beat = header.heartbeat
        up = self._gauge("oasis_sampler_up", "1 while the sampler's heartbeat is fresh", [])
        up.add_metric([self.host], 1.0 if beat is not None and beat.running else 0.0)
        yield up
        if beat is not None:
            if beat.last_tick_at is not None:
                tick = self._gauge("oasis_sampler_last_tick_timestamp_seconds", "The sampler's last tick", [])
                tick.add_metric([self.host], beat.last_tick_at.timestamp())
                yield tick
            errors = CounterMetricFamily("oasis_sampler_errors", "Errors of the running sampler since it started", labels=["host"])
            errors.add_metric([self.host], float(beat.errors or 0))
            yield errors
        if header.ollama_reachable is not None:
            ollama = self._gauge("oasis_ollama_up", "1 when Ollama answered the sampler's last look", [])
            ollama.add_metric([self.host], 1.0 if header.ollama_reachable else 0.0)
            yield ollama
        active = self._gauge("oasis_warning_active", "1 per open early warning", ["kind", "subject", "severity"])
        for warning in warnings:
            active.add_metric([self.host, str(warning.kind), str(warning.subject or ""), str(warning.severity)], 1.0)
        yield active
        counts = CounterMetricFamily("oasis_actions", "Audited actions by action and outcome", labels=["host", "action", "outcome"])
        last = self._gauge("oasis_action_last_timestamp_seconds", "The newest audited action of each kind", ["action"])
        newest: dict[str, float] = {}
        for row in actions:
            counts.add_metric([self.host, str(row["action"]), str(row["outcome"])], float(row["n"]))
            ts = _finite(row.get("last_ts"))
            if ts is not None:
                newest[str(row["action"])] = max(ts, newest.get(str(row["action"]), ts))
        for action, ts in sorted(newest.items()):
            last.add_metric([self.host, action], ts)
        yield counts
        yield last
