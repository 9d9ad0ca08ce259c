"""The Live chart's window, without Streamlit: telemetry per bucket and the event markers.

`live_window()` reads, in one read-only open of the sidecar, the host telemetry per bucket over
the window (gaps NaN), the events and actions as markers, and the llama-server runners' signals
per bucket (runner_panel.py); live_chart() in livechart.py draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from oasis_ops.sampler.reads import _json, _optional_rows, _query, _reader, _rows
from oasis_ops.sampler.runner_panel import RUNNER_COLUMNS, runner_buckets
from oasis_ops.sidecar import Sidecar

MAX_MARKERS = 500
MAX_BUCKETS = 400  # chart points per series: aggregated in SQL, never raw samples to the browser
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Bucket widths that divide a minute or are whole minutes dividing an hour: telemetry bucket
# edges fall on the trial rollup's minute edges, so bars line up from panel to panel.
NICE_BUCKET_S = (10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)


def bucket_seconds_for(window: timedelta) -> int:
    """10 s buckets up to an hour, wider beyond (at most MAX_BUCKETS points per series), always
    one of NICE_BUCKET_S (or whole hours)."""
    least = window.total_seconds() / MAX_BUCKETS
    for width in NICE_BUCKET_S:
        if width >= least:
            return width
    return int(-(-least // 3600)) * 3600


GPU_COLUMNS = ["minute", "gpu_index", "name", "used_bytes", "total_bytes", "utilization_percent", "simulated"]
TELEMETRY_COLUMNS = ["minute", "mem_free_bytes", "mem_available_bytes", "pages_free", "page_size",
                     "swapouts_per_min", "pressure", "simulated"]  # fmt: skip


@dataclass
class LiveWindow:
    start: datetime
    end: datetime
    bucket_s: int
    telemetry: pd.DataFrame  # TELEMETRY_COLUMNS, one row per bucket over [start, end), gaps NaN
    markers: pd.DataFrame  # ts, kind, label (events and actions)
    runners: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RUNNER_COLUMNS))  # empty: no runner read
    gpus: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GPU_COLUMNS))  # empty: no GPU read (a Mac, a CPU box)

    @property
    def has_gpus(self) -> bool:
        return not self.gpus.empty

    @property
    def gpu_simulated(self) -> bool:
        """The demo's simulated GPU (`oasis-ops demo --gpu`), labelled as such on every panel."""
        return bool(self.gpus["simulated"].fillna(False).astype(bool).any()) if not self.gpus.empty else False

    @property
    def has_runners(self) -> bool:
        return not self.runners.empty

    @property
    def simulated(self) -> bool:
        return bool(self.telemetry["simulated"].fillna(False).astype(bool).any()) if not self.telemetry.empty else False


def event_label(kind: str, model: str | None, detail: dict[str, Any]) -> str:
    """Short marker text: 'gemma4:e4b stopping', 'runner 123→456', 'pressure warn'."""
    if kind == "runner_pid_changed":
        return f"{model or ''} runner {detail.get('old_pid')}→{detail.get('new_pid')}".strip()
    if kind == "pressure":
        return f"pressure {detail.get('to')}"
    if kind in ("loaded", "stopping", "gone"):
        return f"{model} {kind}"
    if kind == "runner_no_progress":
        slots = detail.get("slots") or [{}]
        return f"{model or ''} slot {slots[0].get('id')} no progress".strip()
    if kind == "runner_progress":
        return f"{model or ''} progress again".strip()
    if kind == "runner_not_answering":
        return f"{model or ''} runner not answering".strip()
    if kind == "runner_answering":
        return f"{model or ''} runner answering".strip()
    return kind.replace("_", " ")


def live_window(sidecar: Sidecar, start: datetime, end: datetime, bucket_s: int | None = None) -> LiveWindow:
    """Telemetry per bucket and markers over [start, end), from one read-only open."""
    bucket_s = bucket_s or bucket_seconds_for(end - start)
    width_us = bucket_s * 1_000_000
    with _reader(sidecar) as con:
        series = _query(sidecar, con, "sampler_q_telemetry_buckets", since=start, until=end, width_us=width_us)
        events = _rows(sidecar, con, "sidecar_q_events_since", since=start, until=end, max_rows=MAX_MARKERS)
        actions = _rows(sidecar, con, "sidecar_q_actions_since", since=start, until=end, max_rows=MAX_MARKERS)
        runners = runner_buckets(sidecar, start, end, bucket_s, con) if con is not None else pd.DataFrame(columns=RUNNER_COLUMNS)
        gpu_rows = _optional_rows(sidecar, con, "sampler_q_gpu_buckets", since=start, until=end, width_us=width_us)
    start_us = int((start - _EPOCH).total_seconds() * 1e6) // width_us * width_us
    end_us = int((end - _EPOCH).total_seconds() * 1e6)
    grid = pd.DataFrame({"bucket_us": range(start_us, end_us, width_us)})
    frame = grid.merge(series, on="bucket_us", how="left")
    frame["minute"] = pd.to_datetime(frame["bucket_us"], unit="us", utc=True)
    telemetry = frame.reindex(columns=TELEMETRY_COLUMNS)
    for column in TELEMETRY_COLUMNS[1:-1]:
        telemetry[column] = telemetry[column].astype("float64")

    marks: list[dict[str, Any]] = []
    for row in events:
        if row["kind"] in ("sampler_started", "sampler_stopped"):
            kind = "sampler"
        else:
            kind = row["kind"]
        marks.append({"ts": row["ts"], "kind": kind, "label": event_label(row["kind"], row.get("model"), _json(row.get("detail")))})
    for row in actions:
        label = f"{row['action']} {row.get('target') or ''}".strip() + (f" ({row['outcome']})" if row.get("outcome") else "")
        marks.append({"ts": row["ts"], "kind": str(row["action"]), "label": label})
    markers = pd.DataFrame(marks, columns=["ts", "kind", "label"])
    gpus = pd.DataFrame(gpu_rows, columns=["bucket_us", *GPU_COLUMNS[1:]])
    gpus.insert(0, "minute", pd.to_datetime(gpus["bucket_us"], unit="us", utc=True))
    return LiveWindow(start, end, bucket_s, telemetry, markers, runners, gpus.reindex(columns=GPU_COLUMNS))
