"""Several hosts through Prometheus: the Live page's Hosts view, read with PromQL.

Each machine runs its own sampler with the exporter (`oasis-ops sample --prometheus ...`, a
`host` label per machine); the lab's Prometheus scrapes them all; this module asks that
Prometheus (`prometheus_url`) over its HTTP API, so no data is copied between hosts and the
console needs nothing but read access to what the lab already runs.

Every call has a total deadline (a trickling server cannot hold a page) and a capped body; a
Prometheus that is down or answers something else is one FleetError line, never a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from oasis_ops.errors import OasisOpsError
from oasis_ops.probes.deadline import Deadline, DeadlineTransport

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_HOSTS = 64  # small multiples beyond that are not a glance
MAX_POINTS = 720  # per series of a range query (Prometheus itself refuses more than 11,000)

# The overview's figures per host: what the Live page's header says about this machine.
OVERVIEW = {
    "sampler_up": "max by (host) (oasis_sampler_up)",
    "p95_s": 'histogram_quantile(0.95, sum by (host, le) (rate(oasis_trial_latency_seconds_bucket{outcome="ok"}[5m])))',
    "failure_rate": ('sum by (host) (rate(oasis_trials_total{outcome!="ok"}[5m])) '
                     "/ sum by (host) (rate(oasis_trials_total[5m]))"),  # fmt: skip
    "trials_per_min": "sum by (host) (rate(oasis_trials_total[5m])) * 60",
    "available_bytes": "max by (host) (oasis_memory_available_bytes)",
    "swapouts_per_min": "sum by (host) (rate(oasis_swap_out_pages_total[5m])) * 60",
    "stopping_models": 'sum by (host) (oasis_model_state{state="stopping"})',
    "warnings": "sum by (host) (oasis_warning_active)",
    "vram_used_ratio": "max by (host) (oasis_gpu_memory_used_bytes / oasis_gpu_memory_total_bytes)",
}
# The small multiples: one row per figure, one column per host, on one time axis.
SERIES = {
    "p95 latency (s)": OVERVIEW["p95_s"],
    "failure rate": OVERVIEW["failure_rate"],
    "available memory (GB)": "max by (host) (oasis_memory_available_bytes) / 1e9",
    "swap-outs per minute": OVERVIEW["swapouts_per_min"],
}


class FleetError(OasisOpsError):
    """Prometheus could not be asked, or answered something that is not its API."""


@dataclass
class HostRow:
    host: str
    figures: dict[str, float | None] = field(default_factory=dict)


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if not base_url.startswith(("http://", "https://")):
            raise FleetError(f"prometheus_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._deadline = Deadline(monotonic)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport or DeadlineTransport(self._deadline),
                                  trust_env=False)  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        where = f"{self.base_url}{path}"
        self._deadline.at = time.monotonic() + self.timeout_s
        try:
            with self._http.stream("GET", path, params=params) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise FleetError(f"Prometheus at {where} answered more than {MAX_BODY_BYTES // 2**20} MB; refused")
                status = response.status_code
        except httpx.TimeoutException:
            raise FleetError(f"Prometheus at {self.base_url} did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise FleetError(f"cannot reach Prometheus at {self.base_url}: {' '.join(str(exc).split())[:160] or type(exc).__name__}") from None
        finally:
            self._deadline.at = None
        try:
            payload = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise FleetError(f"{where} answered HTTP {status} with something that is not Prometheus' JSON") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else None
            raise FleetError(f"Prometheus refused the query ({status}): {str(error)[:200] if error else 'no reason given'}")
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise FleetError(f"{where} answered without data.result")
        return data["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": expr}))

    def query_range(self, expr: str, start: datetime, end: datetime, step_s: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_range", {"query": expr, "start": f"{start.timestamp():.3f}",
                                                        "end": f"{end.timestamp():.3f}", "step": f"{step_s:g}"}))  # fmt: skip


def _value(raw: Any) -> float | None:
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def host_overview(client: PrometheusClient) -> list[HostRow]:
    """One row per host that exports (by its sampler_up series), its figures now (None: no data,
    or no rate yet)."""
    rows: dict[str, HostRow] = {}
    for name, expr in OVERVIEW.items():
        for series in client.query(expr):
            host = str(series.get("metric", {}).get("host") or "")
            if not host or (host not in rows and len(rows) >= MAX_HOSTS):
                continue
            value = series.get("value")
            rows.setdefault(host, HostRow(host)).figures[name] = _value(value[1]) if isinstance(value, list) and len(value) == 2 else None
    return sorted(rows.values(), key=lambda r: r.host)


def host_series(client: PrometheusClient, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """SERIES over [start, end] per host as rows (figure, host, ts epoch ms, value), at a step
    that keeps each series under MAX_POINTS points."""
    step_s = max(15.0, (end - start).total_seconds() / MAX_POINTS)
    out: list[dict[str, Any]] = []
    hosts: set[str] = set()
    for figure, expr in SERIES.items():
        for series in client.query_range(expr, start, end, step_s):
            host = str(series.get("metric", {}).get("host") or "")
            if not host or (host not in hosts and len(hosts) >= MAX_HOSTS):
                continue
            hosts.add(host)
            for point in series.get("values") or []:
                if isinstance(point, list) and len(point) == 2:
                    value = _value(point[1])
                    if value is not None:
                        out.append({"figure": figure, "host": host, "ts": int(float(point[0]) * 1000), "value": value})
    return out


def small_multiples_spec(rows: list[dict[str, Any]], start: datetime | None = None, end: datetime | None = None, *,
                         width: int = 220, height: int = 90) -> dict[str, Any]:  # fmt: skip
    """host_series() rows as a Vega-Lite grid: one row per figure (its name above it), one column
    per host, every cell on the same UTC time axis over [start, end] when given."""
    # The x axis spans the data: a fixed domain on a faceted temporal axis makes the Vega build
    # Streamlit ships throw ("reading 'bins'", seen in Chromium). [start, end] is said in the caption.
    x_scale: dict[str, Any] = {"type": "utc"}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": rows},
        "facet": {"row": {"field": "figure", "type": "nominal", "title": None,
                          "header": {"labelAngle": 0, "labelAlign": "left", "labelOrient": "top", "labelFontWeight": "bold"}},
                  "column": {"field": "host", "type": "nominal", "title": None, "header": {"labelFontWeight": "bold"}}},
        "spec": {"width": width, "height": height, "mark": {"type": "line", "strokeWidth": 1.6, "clip": True},
                 "encoding": {"x": {"field": "ts", "type": "temporal", "title": None, "scale": x_scale},
                              "y": {"field": "value", "type": "quantitative", "title": None, "axis": {"format": ",.3~f"}},
                              "tooltip": [{"field": "host"}, {"field": "figure"},
                                          {"field": "ts", "type": "temporal", "format": "%H:%M:%S", "title": "time (UTC)"},
                                          {"field": "value", "type": "quantitative", "format": ",.3~f"}]}},
        "resolve": {"scale": {"y": "independent"}},
    }  # fmt: skip
