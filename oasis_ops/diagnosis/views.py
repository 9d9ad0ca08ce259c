"""Altair views for the Diagnostics page (no Streamlit here: the page renders what this returns)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from oasis_ops.diagnosis.windows import IncidentWindow

MAX_POINTS = 5000  # the browser gets at most this many dots


def timing_frame(timings: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Long form (ts, phase, ms) of the image-encode and eval time of each request; the newest
    `max_points` requests when there are more."""
    if timings.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[us, UTC]"), "phase": pd.Series(dtype="object"), "ms": pd.Series(dtype="float64")})
    recent = timings.tail(max_points)
    frames = []
    for column, phase in (("image_encode_ms", "image encode"), ("eval_ms", "generation (eval)")):
        part = pd.DataFrame({"ts": pd.to_datetime(recent["ts"], utc=True), "phase": phase, "ms": pd.to_numeric(recent[column], errors="coerce")})
        frames.append(part.dropna(subset=["ms"]))
    out = pd.concat(frames, ignore_index=True)
    return out[out["ms"] > 0]


def timing_chart(timings: pd.DataFrame, windows: Sequence[IncidentWindow] = (), *, height: int = 260) -> alt.LayerChart | alt.FacetChart:
    """Image encode ms vs eval ms per request over time (log scale), incident windows shaded."""
    data = timing_frame(timings)
    x = alt.X("ts:T", title="time (UTC)", axis=alt.Axis(format="%H:%M"), scale=alt.Scale(type="utc"))
    dots = (
        alt.Chart(data)
        .mark_circle(size=14, opacity=0.6)
        .encode(
            x=x,
            y=alt.Y("ms:Q", title="milliseconds (log)", scale=alt.Scale(type="log")),
            color=alt.Color("phase:N", title=None, scale=alt.Scale(domain=["image encode", "generation (eval)"], range=["#1f77b4", "#ff7f0e"]),
                            legend=alt.Legend(orient="top")),  # fmt: skip
            tooltip=[alt.Tooltip("ts:T", title="time (UTC)", format="%H:%M:%S"), "phase:N", alt.Tooltip("ms:Q", format=",.0f")],
        )
    )
    spans = pd.DataFrame({"start": [w.start for w in windows], "end": [w.end for w in windows]})
    shade = alt.Chart(spans).mark_rect(color="#d62728", opacity=0.12).encode(x="start:T", x2="end:T")
    return alt.layer(shade, dots).properties(height=height)
