"""Pins for the words and pictures of the post-mortem (mutation testing: formatting helpers and
the SVG charts had no exact checks). The helpers at their edges; one chart with every feature
(log and linear axes, lines, dots, steps, gaps, a shaded window, markers) against a golden file,
plus what its geometry must say. On a mismatch the new SVG is written under tmp_path for a
look; replace tests/fixtures/golden/time_chart.svg with it only when the change is meant."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from oasis_ops.diagnosis import svg
from oasis_ops.diagnosis import text as t
from oasis_ops.moments import as_utc_datetime

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "time_chart.svg"
T0 = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (-5, "0 s"), (0, "0 s"), (89.4, "89 s"), (90, "1 min 30 s"), (599, "9 min 59 s"), (600, "10 min"),
     (605, "10 min"), (3599, "59 min"), (3600, "1 h"), (3660, "1 h 1 min"), (32_280, "8 h 58 min"),
     (timedelta(minutes=20, seconds=17), "20 min"), (timedelta(minutes=2, seconds=17), "2 min 17 s")],
)  # fmt: skip
def test_duration(seconds: object, text: str) -> None:
    assert t.duration(seconds) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "–"), (float("nan"), "–"), (17.2, "17 ms"), (999.4, "999 ms"), (1000, "1.0 s"), (4149, "4.1 s"),
     (59_999, "60.0 s"), (60_000, "60 s"), (248_239, "4 min 8 s")],
)  # fmt: skip
def test_ms(value: float | None, text: str) -> None:
    assert t.ms(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "–"), (float("nan"), "–"), (0, "0%"), (0.0005, "0.050%"), (0.00099, "0.099%"), (0.001, "0.10%"),
     (0.0999, "9.99%"), (0.1, "10%"), (0.98, "98%"), (1.0, "100%")],
)  # fmt: skip
def test_rate(value: float | None, text: str) -> None:
    assert t.rate(value) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "?"), (float("nan"), "?"), (999, "999 B"), (1000, "1 kB"), (957_000_000, "957 MB"), (999_400_000, "999 MB"),
     (10_600_000_000, "10.6 GB"), (51.5e9, "51.5 GB"), (2.5e12, "2.5 TB"), (3e15, "3000.0 TB"), (-2e9, "-2.0 GB")],
)  # fmt: skip
def test_size(n: float | None, text: str) -> None:
    assert t.size(n) == text


def test_counts_ratios_numbers_and_times() -> None:
    assert (t.count(None), t.count(float("nan")), t.count(12453.6), t.count("7")) == ("?", "?", "12,454", "7")
    assert (t.ratio(None, 1), t.ratio(1, None), t.ratio(3, 0), t.ratio(248.2, 4.1)) == ("?", "?", "?", "60.5x")
    assert (t.num(None), t.num("x"), t.num(float("inf")), t.num(float("nan")), t.num("2.5")) == (None, None, None, None, 2.5)
    naive = datetime(2025, 11, 20, 17, 58, 1)
    assert as_utc_datetime(naive) == datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)
    assert as_utc_datetime(pd.Timestamp("2025-11-20T18:58:01+01:00")) == datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)
    assert (as_utc_datetime(None), as_utc_datetime(pd.NaT), as_utc_datetime(float("nan"))) == (None, None, None)
    assert (t.hm(naive), t.hms(naive), t.day_hm(naive)) == ("17:58", "17:58:01", "2025-11-20 17:58")
    assert (t.hm(None), t.hms(None), t.day_hm(None)) == ("?", "?", "?")
    assert t.span(naive, naive + timedelta(minutes=6)) == "17:58–18:04"


def test_tick_formats() -> None:
    assert [svg.fmt_ms_tick(v) for v in (0, 500, 1000, 1500, 60_000, 90_000, 120_000)] == [
        "0 ms", "500 ms", "1 s", "1.5 s", "1 min", "90 s", "2 min"]  # fmt: skip
    assert [svg.fmt_count_tick(v) for v in (0, 999, 1000, 42_118, 1_000_000, 2_103_449, -5000)] == [
        "0", "999", "1k", "42.118k", "1M", "2.10345M", "-5k"]  # fmt: skip


def _chart() -> str:
    minutes = [T0 + timedelta(minutes=m) for m in range(0, 76)]
    def p95(i: int) -> float | None:
        if 40 <= i < 45:  # no trial in these minutes: a gap, not a line
            return None
        if i == 70:  # one lone minute with a trial: a dot, not an invisible one-point line
            return 50_000.0
        return 4100.0 + 30 * (i % 5) if i < 58 else (60_000.0 if i < 64 else None)

    latency = [(ts, p95(i)) for i, ts in enumerate(minutes)]
    # the sampler was down from 17:20 to 17:25: rows missing (not None), not to be joined
    free = [(ts, 2_103_449 - 28_000.0 * i if i <= 60 else 58_000.0) for i, ts in enumerate(minutes) if not 20 <= i < 25]
    outlier = [(T0 + timedelta(minutes=64, seconds=13), 248_239.0)]
    stopping = [(ts, 1.0 if i >= 64 else 0.0) for i, ts in enumerate(minutes)]
    return svg.time_chart(
        "p95 latency & free pages <17:00–18:15>",
        [svg.Series("p95", "#1f77b4", latency), svg.Series("outlier", "#d62728", outlier, kind="dots"),
         svg.Series("pages free", "#2ca02c", free, axis="right", max_step=timedelta(minutes=1)), svg.Series("Stopping", "#9467bd", stopping, kind="step", axis="right")],
        start=T0, end=T0 + timedelta(minutes=75),
        left=svg.Axis("latency", log=True, fmt=svg.fmt_ms_tick),
        right=svg.Axis("pages", fmt=svg.fmt_count_tick, minimum=0),
        shade=[(T0 + timedelta(minutes=58), T0 + timedelta(minutes=64), "failure window")],
        markers=[(T0 + timedelta(minutes=64, seconds=13), "evict (keep_alive=0)")],
    )  # fmt: skip


def test_a_chart_with_every_feature_matches_its_golden_file(tmp_path: Path) -> None:
    drawn = _chart()
    if drawn != GOLDEN.read_text():
        (tmp_path / "time_chart.svg").write_text(drawn)
        pytest.fail(f"the chart changed: the new one is {tmp_path / 'time_chart.svg'} (replace {GOLDEN} if meant)")


def test_the_chart_geometry_says_what_the_data_says() -> None:
    drawn = _chart()
    assert drawn.startswith("<svg") and drawn.endswith("</svg>")
    assert "&lt;17:00–18:15&gt;" in drawn  # the title is escaped
    texts = re.findall(r">([^<>]+)</text>", drawn)
    assert texts == ["p95 latency &amp; free pages &lt;17:00–18:15&gt;", "failure window",
                     "1 s", "10 s", "100 s", "1000 s", "latency",  # log axis: decades around 4.1 s .. 248 s
                     "0", "1M", "2M", "3M", "pages",  # linear axis from its minimum 0
                     "17:00", "17:10", "17:20", "17:30", "17:40", "17:50", "18:00", "18:10", "time (UTC)",
                     "evict (keep_alive=0)", "p95", "outlier", "pages free", "Stopping"]  # fmt: skip
    # the p95 line stops at the gap (17:40-17:44) and starts again: two polylines, the first
    # ending at 17:39, the second starting at 17:45
    lines = re.findall(r'<polyline points="([^"]+)" fill="none" stroke="#1f77b4"', drawn)
    assert len(lines) == 2
    plot_left, plot_width = 64.0, 760 - 64 - 64
    last_x = float(lines[0].split()[-1].split(",")[0])
    first_x = float(lines[1].split()[0].split(",")[0])
    assert last_x == pytest.approx(plot_left + 39 / 75 * plot_width, abs=0.1)
    assert first_x == pytest.approx(plot_left + 45 / 75 * plot_width, abs=0.1)
    # the lone minute is a dot at 18:10; the free pages break where the sampler was down
    dots = re.findall(r'<circle cx="([\d.]+)" cy="[\d.]+" r="2" fill="#1f77b4"', drawn)
    assert [float(d) for d in dots] == [pytest.approx(plot_left + 70 / 75 * plot_width, abs=0.1)]
    green = re.findall(r'<polyline points="([^"]+)" fill="none" stroke="#2ca02c"', drawn)
    assert len(green) == 2 and float(green[1].split()[0].split(",")[0]) == pytest.approx(plot_left + 25 / 75 * plot_width, abs=0.1)
    # the shaded window and the marker sit where their times are on the 17:00-18:15 axis
    rect = re.search(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="[^"]+" fill-opacity', drawn)
    assert rect is not None
    assert float(rect.group(1)) == pytest.approx(plot_left + 58 / 75 * plot_width, abs=0.6)
    assert float(rect.group(2)) == pytest.approx(6 / 75 * plot_width, abs=0.6)
