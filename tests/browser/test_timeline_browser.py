"""The Timeline page in a real browser (Debian's chromium) on the replayed incident of 2025-11-20
(`oasis-ops demo replay`, served by `oasis-ops dashboard --db`): its real numbers, the 17:58-18:04
UTC failure window, the brush zoom, and the shell on a first visit by URL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers_browser import open_console, wait_idle
from helpers_server import listening_addresses, running_console
from playwright.sync_api import Locator, Page, expect

from oasis_ops.settings import load_settings
from oasis_ops.trials import TrialSource

if TYPE_CHECKING:
    from conftest import ReplayConsole  # tests/browser/conftest.py



def _seconds(ms: float) -> str:
    """How the page prints a latency under 10 s ('4.14 s')."""
    assert ms < 10_000, ms
    return f"{ms / 1000:.2f} s"


def _hm(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%H:%M")


@pytest.fixture(scope="module")
def run_summary(replay_console: ReplayConsole, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The replayed run's figures through the library (the page's range is the latest run: all of it)."""
    settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(tmp_path_factory.mktemp("snaps"))})
    source = TrialSource(replay_console.db, settings)
    try:
        source.refresh()
        yield dict(source.summary(datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 11, 21, tzinfo=UTC)))
    finally:
        source.close()


@pytest.mark.browser
def test_timeline_shows_the_replayed_incident(page: Page, replay_console: ReplayConsole, run_summary: dict[str, Any],
                                              tmp_path: Path) -> None:
    console, replay = replay_console.console, replay_console.replay
    assert listening_addresses(console.port) == ["127.0.0.1"]
    open_console(page, console, "Timeline")

    # Summary figures of the latest (the only) run: the replay's own numbers.
    assert run_summary["trials"] == replay["trials"] and run_summary["failures"] == replay["failed"]
    metrics = page.locator("[data-testid=stMetric]")
    expect(metrics).to_have_count(5)
    expect(metrics.filter(has_text="Trials")).to_contain_text(f"{replay['trials']:,}")
    expect(metrics.filter(has_text="Failures")).to_contain_text(f"{replay['failed']:,}")
    expect(metrics.filter(has_text="Failure rate")).to_contain_text(f"{replay['failed'] / replay['trials'] * 100:.2f}%")
    expect(metrics.filter(has_text="p50 latency")).to_contain_text(_seconds(run_summary["p50_ms"]))
    expect(metrics.filter(has_text="p95 latency")).to_contain_text(_seconds(run_summary["p95_ms"]))

    # The chart: vega-embed drew it, full width.
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart).to_be_visible()
    expect(chart.locator("canvas, svg").first).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 300

    # The failure window, 17:58-18:04 UTC: one window line with the replay's counts, and exactly
    # its six minutes in the failing-buckets table.
    window = replay["window"]
    start, end = _hm(window["start_utc"]), _hm(window["end_utc"])
    assert (start, end) == ("17:58", "18:04")
    line = page.get_by_text(re.compile(r"\d\d:\d\d–\d\d:\d\d UTC \(\d+ min\)"))
    expect(line).to_have_count(1)
    expect(line).to_contain_text(f"{start}–{end} UTC (6 min): {window['timeouts']} of {window['trials']} trials failed")
    table = page.locator("[data-testid=stTable]").first
    buckets = [f"2025-11-20 {hm}" for hm in ("17:58", "17:59", "18:00", "18:01", "18:02", "18:03")]
    expect(table.locator("tbody th")).to_have_text(buckets)
    expect(page.get_by_text("Download CSV")).to_be_visible()
    wait_idle(page)
    # Streamlit scrolls inside its own container: a tall viewport shows the whole page.
    page.set_viewport_size({"width": 1400, "height": 2600})
    expect(table).to_be_visible()
    page.screenshot(path=tmp_path / "replay_timeline.png", full_page=True)


def _axis_labels(chart: Locator) -> list[tuple[str, float]]:
    """(text, y) of the chart's HH:MM axis labels (the chart renders as SVG)."""
    found = chart.evaluate(
        "c => [...c.querySelectorAll('svg text')].map(n => [n.textContent.trim(), n.getBoundingClientRect().y])"
    )
    return [(text, y) for text, y in found if re.fullmatch(r"\d\d:\d\d", text)]


def _label_x(chart: Locator, text: str) -> float:
    """Centre x of the overview's (the lowest) label `text`."""
    xs = chart.evaluate(
        "(c, t) => [...c.querySelectorAll('svg text')].filter(n => n.textContent.trim() === t)"
        ".map(n => { const r = n.getBoundingClientRect(); return [r.y, r.x + r.width / 2]; })",
        text,
    )
    assert xs, f"no axis label {text}"
    return float(max(xs)[1])


@pytest.mark.browser
def test_timeline_brush_zooms_onto_the_failure_window(page: Page, replay_console: ReplayConsole, tmp_path: Path) -> None:
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole chart on screen, for the mouse
    open_console(page, replay_console.console, "Timeline")
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart).to_be_visible()
    # The run starts at 09:00: the zoomable panels' axis and the overview's both show it.
    expect(chart.locator("svg text", has_text="09:00")).to_have_count(2)
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None
    # Drag on the overview strip (the bottom panel) from 17:30 to past the run's end (18:04).
    x_1730, x_1800 = _label_x(chart, "17:30"), _label_x(chart, "18:00")
    per_minute = (x_1800 - x_1730) / 30
    y = box["y"] + box["height"] - 75
    page.mouse.move(x_1730 + 20 * per_minute, y)  # 17:50
    page.mouse.down()
    page.mouse.move(min(x_1800 + 10 * per_minute, box["x"] + box["width"] - 2), y, steps=8)
    page.mouse.up()
    # The zoomed panels now span minutes around the window; the overview keeps the whole day.
    expect(chart.locator("svg text", has_text="09:00")).to_have_count(1)
    labels = _axis_labels(chart)
    overview_y = max(y for _, y in labels)
    zoomed = sorted({text for text, y in labels if y < overview_y - 5})
    assert zoomed and all("17:50" <= hm <= "18:10" for hm in zoomed), zoomed
    assert "18:00" in zoomed and any(hm < "18:00" for hm in zoomed), zoomed  # finer than the day's half hours
    wait_idle(page)
    page.screenshot(path=tmp_path / "replay_timeline_zoomed.png", full_page=True)
    # Double-click resets the zoom.
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    expect(chart.locator("svg text", has_text="09:00")).to_have_count(2)


@pytest.mark.browser
def test_first_visit_by_url_gets_the_whole_shell(page: Page, replay_console: ReplayConsole, tmp_path: Path) -> None:
    """Streamlit runs a page of pages/ on its own until some session ran app.py; we detour."""
    db = replay_console.db
    with running_console(["dashboard", "--db", str(db)], tmp_path) as fresh:
        page.goto(fresh.url + "/timeline")  # the very first session of this server
        expect(page.get_by_role("heading", name="Timeline", exact=True)).to_be_visible()
        trials = f"{replay_console.replay['trials']:,}"
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Trials")).to_contain_text(trials)
        # The shell's frame is there: the data-source picker, and the app's own navigation
        # (not Streamlit's listing of the files in pages/).
        expect(page.get_by_role("textbox", name="Trial database")).to_have_value(str(db))
        nav = page.locator("[data-testid=stSidebarNavLink]")
        expect(nav.filter(has_text="Timeline")).to_have_count(1)
        expect(nav.filter(has_text="common")).to_have_count(0)
        expect(page.get_by_text("This is a demo")).to_have_count(0)  # `dashboard`, not `demo`
