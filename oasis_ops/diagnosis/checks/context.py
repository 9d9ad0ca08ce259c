"""What every diagnosis check reads and returns: the Finding, the Telemetry, the WindowContext.

`Telemetry.load()` reads every sidecar row the checks need around a range once (bounded);
`WindowContext` is one incident window with that telemetry, the settings and the window's model
(`pick_model()`); each check (stopping.py, memory.py, flash_spill.py, cold_start.py,
client_timeout.py) takes a WindowContext and returns a `Finding` with the numbers that support
it, or None. ORDER and TITLES list the checks; the thresholds two checks share are here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from oasis_ops.diagnosis.thresholds import (
    MODEL_LOOKBACK,
    STOPPING_LOOKAHEAD,
)
from oasis_ops.diagnosis.windows import IncidentWindow
from oasis_ops.errors import SchemaError
from oasis_ops.moments import as_utc_datetime
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar

ORDER = ("stopping_deadlock", "memory_pressure", "vram_spill", "flash_attention_cpu_spill", "cold_start", "client_timeout_only")
TITLES = {
    "stopping_deadlock": "Runner stuck in “Stopping…” (soft-evict deadlock)",
    "memory_pressure": "Host memory pressure",
    "vram_spill": "VRAM exhausted: the model spilled layers from the GPU to the CPU",
    "flash_attention_cpu_spill": "Flash attention spilling the compute graph to the CPU",
    "cold_start": "Cold start (model reloads)",
    "client_timeout_only": "Client-side timeout only (the server answered in time)",
}


TrialCounter = Callable[[datetime, datetime], dict[str, Any]]


@dataclass
class Finding:
    id: str
    status: str  # "confirmed" | "refuted"
    confidence: float  # 0..1: how sure we are of the status
    evidence: list[str]
    action: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES.get(self.id, self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "confidence": round(self.confidence, 2),
            "evidence": list(self.evidence),
            "values": _jsonable(self.values),
            "action": self.action,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | pd.Timestamp):
        moment = as_utc_datetime(value)
        return moment.isoformat() if moment else None
    if isinstance(value, np.generic):  # numpy's NaN too must become null below
        value = value.item()
    if isinstance(value, float) and (np.isnan(value) or np.isinf(value)):
        return None
    return value


# --- telemetry --------------------------------------------------------------------------------
def _ts_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if "ts" in frame.columns and len(frame):
        frame = frame.copy()
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame


@dataclass
class Telemetry:
    """Every sidecar row the diagnosis needs around a range, read once (bounded)."""

    host: pd.DataFrame
    models: pd.DataFrame
    events: pd.DataFrame
    actions: pd.DataFrame
    requests: pd.DataFrame
    timings: pd.DataFrame
    log_events: pd.DataFrame
    harness: pd.DataFrame
    config: pd.DataFrame  # server.log's flash statements, runner spawns and version line before the range end
    gpus: pd.DataFrame = field(default_factory=pd.DataFrame)  # gpu_samples (schema 8; empty on older sidecars)

    @classmethod
    def load(cls, sidecar: Sidecar, since: datetime, until: datetime, max_rows: int = 200_000) -> Telemetry:
        def q(name: str) -> pd.DataFrame:
            return _ts_sorted(sidecar.query(name, since=since, until=until, max_rows=max_rows))

        return cls(
            host=_ts_sorted(sidecar.host_samples_since(since, until, max_rows)),
            models=_ts_sorted(sidecar.model_samples_since(since, until, max_rows)),
            events=_ts_sorted(sidecar.events_since(since, until, max_rows)),
            actions=_ts_sorted(sidecar.actions_since(since, until, max_rows)),
            requests=q("diag_log_requests_between"),
            timings=q("diag_log_timings_between"),
            log_events=q("diag_log_events_between"),
            harness=q("diag_harness_between"),
            config=_ts_sorted(sidecar.query("diag_log_config_before", until=until)),
            gpus=_gpu_rows(sidecar, since, until, max_rows),
        )

    @staticmethod
    def between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
        if frame.empty or "ts" not in frame.columns:
            return frame
        ts = frame["ts"]
        return frame[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))]

    def config_before(self, end: datetime) -> pd.DataFrame:
        return self.config[self.config["ts"] < pd.Timestamp(end)] if len(self.config) else self.config


def _gpu_rows(sidecar: Sidecar, since: datetime, until: datetime, max_rows: int) -> pd.DataFrame:
    try:
        return _ts_sorted(sidecar.gpu_samples_since(since, until, max_rows))
    except SchemaError:  # a sidecar written before GPUs were sampled: none to judge by
        return pd.DataFrame()


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _median(values: Any) -> float | None:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype="float64")
    return float(np.median(arr)) if arr.size else None


def apple_silicon(host: pd.DataFrame) -> bool:
    """macOS samples with 16 KiB pages: an Apple Silicon Mac."""
    if host.empty or "source" not in host.columns:
        return False
    mac = host[host["source"].astype(str).str.startswith("macos")]
    return bool(len(mac)) and bool((pd.to_numeric(mac["page_size"], errors="coerce") == 16384).any())


# --- context ----------------------------------------------------------------------------------
@dataclass
class WindowContext:
    window: IncidentWindow
    telemetry: Telemetry
    settings: Settings
    trials_between: TrialCounter | None = None
    next_start: datetime | None = None  # the next window's start (bounds the look-ahead)
    model: str | None = None

    @property
    def start(self) -> datetime:
        return self.window.start

    @property
    def end(self) -> datetime:
        return self.window.end

    def before_start(self, lookback: timedelta) -> datetime:
        return max(self.window.before_start, self.start - lookback)


def pick_model(telemetry: Telemetry, window: IncidentWindow) -> str | None:
    if window.model:
        return window.model
    models = Telemetry.between(telemetry.models, window.start - MODEL_LOOKBACK, window.end + STOPPING_LOOKAHEAD)
    if models.empty:
        return None
    return str(models["model"].value_counts().index[0])


def _model_rows(ctx: WindowContext, start: datetime, end: datetime) -> pd.DataFrame:
    rows = Telemetry.between(ctx.telemetry.models, start, end)
    if ctx.model is not None and len(rows):
        rows = rows[rows["model"] == ctx.model]
    return rows


# --- timings (server.log): the flash and cold-start checks, the report and the page use them -----
def _timing_stats(timings: pd.DataFrame) -> dict[str, float | None]:
    if timings.empty:
        return {"n": 0.0, "encode_ms": None, "eval_ms": None, "eval_ms_per_token": None}
    eval_ms = pd.to_numeric(timings["eval_ms"], errors="coerce")
    tokens = pd.to_numeric(timings["eval_tokens"], errors="coerce")
    per_token = (eval_ms / tokens.where(tokens > 0)).dropna()
    return {
        "n": float(len(timings)),
        "encode_ms": _median(timings["image_encode_ms"]),
        "eval_ms": _median(eval_ms),
        "eval_ms_per_token": _median(per_token),
    }


def timing_comparison(ctx: WindowContext) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Median encoder / eval timings (server.log) before the window and during it."""
    before = Telemetry.between(ctx.telemetry.timings, ctx.before_start(timedelta(hours=1)), ctx.start)
    during = Telemetry.between(ctx.telemetry.timings, ctx.start, ctx.end)
    return _timing_stats(before), _timing_stats(during)
