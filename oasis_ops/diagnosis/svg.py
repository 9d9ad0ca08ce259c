"""Small, dependency-free SVG time charts for the post-mortem report.

The report must open offline (no CDN for vega), so charts are drawn here as plain SVG: lines,
dots or steps over a UTC time axis, a left and an optional right y axis (linear or log), shaded
spans (the incident window) and labelled vertical markers (evict, Stopping...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape

FONT = "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


@dataclass
class Series:
    name: str
    color: str
    points: Sequence[tuple[datetime, float | None]]
    kind: str = "line"  # line | dots | step
    axis: str = "left"  # left | right
    max_step: timedelta | None = None  # points further apart than this are not joined (a gap)


@dataclass
class Axis:
    label: str
    log: bool = False
    fmt: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    minimum: float | None = None
    maximum: float | None = None


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _time_step(span_s: float) -> timedelta:
    for minutes in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440):
        if span_s / (minutes * 60) <= 9:
            return timedelta(minutes=minutes)
    return timedelta(days=1)


def _domain(values: list[float], axis: Axis) -> tuple[float, float]:
    if axis.log:
        positive = [v for v in values if v > 0]
        lo = min(positive) if positive else 1.0
        hi = max(positive) if positive else 10.0
        lo = axis.minimum if axis.minimum is not None else 10 ** math.floor(math.log10(lo))
        hi = axis.maximum if axis.maximum is not None else 10 ** math.ceil(math.log10(hi))
        if hi <= lo:
            hi = lo * 10
        return lo, hi
    lo = axis.minimum if axis.minimum is not None else min(0.0, min(values) if values else 0.0)
    hi = axis.maximum if axis.maximum is not None else (max(values) if values else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step(hi - lo, 4)
    return lo, math.ceil(hi / step) * step


def _ticks(lo: float, hi: float, axis: Axis) -> list[float]:
    if axis.log:
        out = []
        exp = math.floor(math.log10(lo))
        while 10**exp <= hi * 1.0001:
            if 10**exp >= lo * 0.9999:
                out.append(float(10**exp))
            exp += 1
        return out
    step = _nice_step(hi - lo, 4)
    first = math.ceil(lo / step) * step
    count = int((hi - first) / step + 1e-9) + 1
    return [first + i * step for i in range(count)]


def time_chart(
    title: str,
    series: Sequence[Series],
    *,
    start: datetime,
    end: datetime,
    left: Axis,
    right: Axis | None = None,
    shade: Sequence[tuple[datetime, datetime, str]] = (),
    markers: Sequence[tuple[datetime, str]] = (),
    width: int = 760,
    height: int = 240,
) -> str:
    """One SVG document (a string) with the series over [start, end) in UTC."""
    pad_l, pad_r, pad_t, pad_b = 64, 64 if right else 18, 30, 40
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    t0, t1 = start.timestamp(), max(end.timestamp(), start.timestamp() + 60)

    def x(ts: datetime) -> float:
        return pad_l + (ts.timestamp() - t0) / (t1 - t0) * plot_w

    domains: dict[str, tuple[float, float, Axis]] = {}
    for name, axis in (("left", left), ("right", right)):
        if axis is None:
            continue
        values = [float(v) for s in series if s.axis == name for _, v in s.points if v is not None and math.isfinite(v)]
        lo, hi = _domain(values, axis)
        domains[name] = (lo, hi, axis)

    def y(value: float, axis_name: str) -> float | None:
        lo, hi, axis = domains[axis_name]
        if axis.log:
            if value <= 0:
                return None
            frac = (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (value - lo) / (hi - lo)
        frac = min(max(frac, 0.0), 1.0)
        return pad_t + plot_h * (1 - frac)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" style="{FONT};font-size:11px;background:#fff">',
        f'<text x="{pad_l}" y="16" style="font-size:13px;font-weight:600" fill="#222">{escape(title)}</text>',
    ]
    for a, b, label in shade:
        xa, xb = max(x(a), pad_l), min(x(b), pad_l + plot_w)
        if xb > xa:
            out.append(f'<rect x="{xa:.1f}" y="{pad_t}" width="{max(xb - xa, 2):.1f}" height="{plot_h}" fill="#d62728" fill-opacity="0.10"/>')
            out.append(f'<text x="{xa + 3:.1f}" y="{pad_t + 11}" fill="#b22222">{escape(label)}</text>')
    # grid and y axes
    for name, (lo, hi, axis) in domains.items():
        for tick in _ticks(lo, hi, axis):
            ty = y(tick, name)
            if ty is None:
                continue
            if name == "left":
                out.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e5e5e5"/>')
                out.append(f'<text x="{pad_l - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#555">{escape(axis.fmt(tick))}</text>')
            else:
                out.append(f'<text x="{pad_l + plot_w + 6}" y="{ty + 4:.1f}" fill="#555">{escape(axis.fmt(tick))}</text>')
        label_x = 14 if name == "left" else width - 10
        out.append(
            f'<text transform="translate({label_x},{pad_t + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle" fill="#555">'
            f"{escape(axis.label)}</text>"
        )
    # time axis
    step = _time_step(t1 - t0)
    when = datetime.fromtimestamp(math.ceil(t0 / step.total_seconds()) * step.total_seconds(), UTC)
    while when.timestamp() <= t1:
        tx = x(when)
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{pad_t}" y2="{pad_t + plot_h}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{tx:.1f}" y="{pad_t + plot_h + 15}" text-anchor="middle" fill="#555">{when:%H:%M}</text>')
        when += step
    out.append(f'<text x="{pad_l + plot_w}" y="{pad_t + plot_h + 30}" text-anchor="end" fill="#555">time (UTC)</text>')
    out.append(f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>')
    # markers
    for n, (ts, label) in enumerate(markers):
        if not (t0 <= ts.timestamp() <= t1):
            continue
        mx = x(ts)
        out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{pad_t}" y2="{pad_t + plot_h}" stroke="#6a3d9a" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{mx + 3:.1f}" y="{pad_t + 24 + 12 * (n % 3)}" fill="#6a3d9a">{escape(label)}</text>')
    # series
    for s in series:
        # runs of drawable points: a missing value (None, NaN, <= 0 on a log axis) breaks the
        # line, so a gap in the data is drawn as a gap, never bridged
        runs: list[list[tuple[float, float]]] = [[]]
        last_ts: datetime | None = None
        for ts, v in s.points:
            if not t0 <= ts.timestamp() <= t1:
                continue
            py = y(float(v), s.axis) if v is not None and math.isfinite(float(v)) else None
            if py is None:
                if runs[-1]:
                    runs.append([])
                continue
            if s.max_step is not None and last_ts is not None and ts - last_ts > s.max_step and runs[-1]:
                runs.append([])  # rows skipped (a sparse rollup, a sampler gap): not joined either
            runs[-1].append((x(ts), py))
            last_ts = ts
        for pts in (run for run in runs if run):
            if s.kind == "dots" or len(pts) == 1:  # a lone point is a dot: a one-point line draws nothing
                out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2" fill="{s.color}" fill-opacity="0.75"/>' for px, py in pts)
                continue
            coords: list[str] = []
            for i, (px, py) in enumerate(pts):
                if s.kind == "step" and i:
                    coords.append(f"{px:.1f},{pts[i - 1][1]:.1f}")
                coords.append(f"{px:.1f},{py:.1f}")
            out.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{s.color}" stroke-width="1.6"/>')
    # legend
    lx = pad_l + 8
    for s in series:
        ly = pad_t + plot_h + 30
        if lx > width - 160:
            break
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{s.color}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly + 1}" fill="#333">{escape(s.name)}</text>')
        lx += 22 + 7 * len(s.name)
    out.append("</svg>")
    return "\n".join(out)


def fmt_ms_tick(value: float) -> str:
    if value >= 60_000 and value % 60_000 == 0:
        return f"{value / 60_000:g} min"
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def fmt_count_tick(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"
