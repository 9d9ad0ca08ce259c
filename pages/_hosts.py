"""The Live page's Hosts view: every host that exports to the lab's Prometheus, side by side
(oasis_ops.fleet reads them with PromQL; nothing is copied between hosts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from oasis_ops.fleet import (
    FleetError,
    PrometheusClient,
    host_overview,
    host_series,
    small_multiples_spec,
)
from oasis_ops.probes import human_bytes
from oasis_ops.settings import Settings


@st.cache_data(ttl=15, max_entries=8, show_spinner=False)
def cached_hosts(url: str, start: datetime, end: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with PrometheusClient(url) as client:
        overview = [{"host": r.host, **r.figures} for r in host_overview(client)]
        series = host_series(client, start, end)
    return overview, series


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def hosts_section(settings: Settings, minutes: int = 30, *, start: datetime | None = None, end: datetime | None = None) -> None:
    """The Hosts view over the last `minutes` (the Live page) or [start, end] (the Timeline's range)."""
    url = str(settings.prometheus_url)
    if not url:
        return
    st.subheader("Hosts")
    now = datetime.now(UTC)
    end = end or now.replace(second=now.second // 5 * 5, microsecond=0)  # a cache key every 5 s; never before the newest data
    start = start or end - timedelta(minutes=minutes)
    try:
        overview, series = cached_hosts(url, start, end)
    except FleetError as exc:
        st.error(f"Hosts: {exc}", icon=":material/lan:")
        return
    st.caption(f"Every host whose sampler exports to the Prometheus at `{url}` (`oasis-ops sample --prometheus`), read with "
               "PromQL. The table is now (p95 and failure rate over the last 5 minutes); the small multiples span "
               f"{start:%Y-%m-%d %H:%M} → {end:%H:%M} UTC, as far as Prometheus keeps them.")  # fmt: skip
    if not overview:
        st.info("No host exports to this Prometheus yet.", icon=":material/lan:")
        return
    table = pd.DataFrame([{
        "host": r["host"],
        "sampler": "up" if r.get("sampler_up") == 1 else "DOWN",
        "p95 (s)": "–" if r.get("p95_s") is None else f"{r['p95_s']:.2f}",
        "failure rate": _pct(r.get("failure_rate")),
        "trials/min": "–" if r.get("trials_per_min") is None else f"{r['trials_per_min']:.1f}",
        "available": human_bytes(r.get("available_bytes")) if r.get("available_bytes") is not None else "–",
        "swap-outs/min": "–" if r.get("swapouts_per_min") is None else f"{r['swapouts_per_min']:,.0f}",
        "Stopping models": int(r.get("stopping_models") or 0),
        "warnings": int(r.get("warnings") or 0),
        "VRAM used": _pct(r.get("vram_used_ratio")),
    } for r in overview]).set_index("host")  # fmt: skip
    st.dataframe(table, width="stretch")
    if series:
        st.vega_lite_chart(spec=small_multiples_spec(series, start, end), width="content")
    else:
        st.caption("Prometheus holds no series of these hosts over this range.")
