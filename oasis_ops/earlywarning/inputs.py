"""The numbers the rules read, as arrays on one clock (epoch seconds), loaded once per range.

Host samples give free memory (available when the OS says it, else free), the cumulative
swap-out counter and pressure; /api/ps samples give each model's state, Stopping start, runner
CPU and processor split; the trial table gives per-minute trials, failures and p50/p95 by start
minute. Reads are bounded (`MAX_ROWS` newest rows per table, `max_buckets` trial minutes): past
the bound the oldest part is left out and a note says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from oasis_ops.errors import SchemaError

if TYPE_CHECKING:
    from oasis_ops.sidecar import Sidecar
    from oasis_ops.trials import TrialSource

MAX_ROWS = 200_000
# Telemetry read before the first evaluation: the longest window a rule looks back over
# (the latency baseline: an hour, plus the trial lag and the gap before the recent minutes).
LOOKBACK = timedelta(minutes=90)


def _seconds(values: Any) -> np.ndarray:
    """Epoch seconds (NaN where not a time), whatever the column's unit (ns, us) or zone; in
    microseconds throughout, so a trial table whose clock says 2999 does not overflow (ns ends in 2262)."""
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce").dt.tz_convert(None).to_numpy()
    out = stamps.astype("datetime64[us]").astype(np.int64).astype(float) / 1e6
    out[np.isnat(stamps)] = np.nan
    return out


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


@dataclass
class HostSeries:
    t: np.ndarray
    free: np.ndarray  # bytes: available (free + reclaimable) when known, else free
    swapouts: np.ndarray  # the OS's cumulative counter, pages
    pressure: np.ndarray  # 0..100

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> HostSeries:
        if frame.empty or "ts" not in frame.columns:
            return cls(*(np.empty(0) for _ in range(4)))
        frame = frame.sort_values("ts", kind="stable")
        available, free = _floats(frame, "mem_available_bytes"), _floats(frame, "mem_free_bytes")
        return cls(_seconds(frame["ts"]), np.where(np.isfinite(available), available, free), _floats(frame, "swapouts"),
                   _floats(frame, "pressure"))  # fmt: skip


@dataclass
class ModelSeries:
    t: np.ndarray
    stopping: np.ndarray  # bool: the console's judged state is Stopping
    stopping_since: np.ndarray  # epoch s, NaN when not Stopping
    cpu: np.ndarray  # the runner's CPU %, NaN when unknown
    all_gpu: np.ndarray  # bool: /api/ps says 100% GPU

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ModelSeries:
        frame = frame.sort_values("ts", kind="stable")
        state = frame["state"].astype(str).to_numpy() if "state" in frame.columns else np.full(len(frame), "")
        processor = frame["processor"].astype(str).to_numpy() if "processor" in frame.columns else np.full(len(frame), "")
        since = _seconds(frame["stopping_since"]) if "stopping_since" in frame.columns else np.full(len(frame), np.nan)
        return cls(_seconds(frame["ts"]), state == "stopping", since, _floats(frame, "runner_cpu_percent"),
                   np.char.find(processor.astype(str), "100% GPU") >= 0)  # fmt: skip


@dataclass
class GpuSeries:
    """One GPU's VRAM over time (gpu_samples)."""

    t: np.ndarray
    free: np.ndarray  # bytes
    total: np.ndarray  # bytes

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> GpuSeries:
        frame = frame.sort_values("ts", kind="stable")
        total, used = _floats(frame, "memory_total_bytes"), _floats(frame, "memory_used_bytes")
        free = _floats(frame, "memory_free_bytes")
        return cls(_seconds(frame["ts"]), np.where(np.isfinite(free), free, total - used), total)


@dataclass
class TrialMinutes:
    minute: np.ndarray  # epoch s of each minute with trials (by start time)
    trials: np.ndarray
    failures: np.ndarray
    p50: np.ndarray  # ms, NaN when no trial of the minute has a latency
    p95: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TrialMinutes:
        if frame.empty:
            return cls(*(np.empty(0) for _ in range(5)))
        frame = frame[pd.to_numeric(frame["trials"], errors="coerce").fillna(0) > 0].sort_values("minute", kind="stable")
        failures = _floats(frame, "timeouts") + _floats(frame, "errors")
        return cls(_seconds(frame["minute"]), _floats(frame, "trials"), failures, _floats(frame, "p50_ms"), _floats(frame, "p95_ms"))


@dataclass
class WarningInputs:
    host: HostSeries
    models: dict[str, ModelSeries]
    trials: TrialMinutes
    notes: list[str] = field(default_factory=list)
    gpus: dict[str, GpuSeries] = field(default_factory=dict)  # "GPU 0 NVIDIA A10" -> its VRAM

    def until(self, t: float, trial_lag_s: float) -> WarningInputs:
        """Only what was known at `t` (epoch s): samples up to t, trial minutes judged by then
        (ended `trial_lag_s` before t). A scan over this gives the same readings at t as over all."""

        def cut(series: Any, n: int) -> Any:
            return type(series)(*(getattr(series, f)[:n] for f in series.__dataclass_fields__))

        host = cut(self.host, int(np.searchsorted(self.host.t, t, side="right")))
        models = {name: cut(s, int(np.searchsorted(s.t, t, side="right"))) for name, s in self.models.items()}
        trials = cut(self.trials, int(np.searchsorted(self.trials.minute, t - trial_lag_s - 60.0, side="right")))
        gpus = {name: cut(s, int(np.searchsorted(s.t, t, side="right"))) for name, s in self.gpus.items()}
        return WarningInputs(host, models, trials, list(self.notes), gpus)

    @classmethod
    def from_frames(cls, host: pd.DataFrame, models: pd.DataFrame, minutes: pd.DataFrame,
                    gpus: pd.DataFrame | None = None) -> WarningInputs:  # fmt: skip
        per_model = {}
        if not models.empty and "model" in models.columns:
            for name, part in models.groupby(models["model"].astype(str), sort=True):
                per_model[str(name)] = ModelSeries.from_frame(part)
        per_gpu = {}
        if gpus is not None and not gpus.empty:
            for (index, name), part in gpus.groupby(["gpu_index", "name"], dropna=False, sort=True):
                per_gpu[f"GPU {index} {name}"] = GpuSeries.from_frame(part)
        return cls(HostSeries.from_frame(host), per_model, TrialMinutes.from_frame(minutes), gpus=per_gpu)


def load_inputs(sidecar: Sidecar | None, source: TrialSource | None, start: datetime, end: datetime, *,
                run_id: str | None = None, model: str | None = None) -> WarningInputs:  # fmt: skip
    """Everything the rules need to evaluate [start, end), read once (telemetry from LOOKBACK before)."""
    since = start - LOOKBACK
    notes: list[str] = []
    host = models = gpus = pd.DataFrame()
    if sidecar is not None and sidecar.path.exists():
        host = sidecar.host_samples_since(since, end, MAX_ROWS)
        models = sidecar.model_samples_since(since, end, MAX_ROWS)
        try:
            gpus = sidecar.gpu_samples_since(since, end, MAX_ROWS)
        except SchemaError:  # a sidecar from before GPUs were sampled
            gpus = pd.DataFrame()
        for name, frame in (("host samples", host), ("model samples", models)):
            if len(frame) >= MAX_ROWS:
                notes.append(f"{name}: only the newest {MAX_ROWS:,} rows of the range were read")
        if model is not None and not models.empty:
            models = models[models["model"].astype(str) == model]
    else:
        notes.append("no telemetry sidecar: only the trial table's warnings (latency drift, backlog without the runner's CPU)")
    minutes = pd.DataFrame()
    if source is not None:
        minutes = source.rollup_sparse(since, end, "1m", run_id=run_id, model=model)
    inputs = WarningInputs.from_frames(host, models, minutes, gpus)
    inputs.notes = notes
    return inputs
