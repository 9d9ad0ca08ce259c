"""The Timeline page of the demo console in a real browser (Debian's chromium)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers_browser import open_console, wait_idle
from helpers_server import Console, listening_addresses, running_console
from playwright.sync_api import Page, expect

SCREENSHOT = "/tmp/timeline.png"


@pytest.mark.browser
def test_timeline_renders_the_demo_run(page: Page, demo_console: Console) -> None:
    assert listening_addresses(demo_console.port) == ["127.0.0.1"]
    open_console(page, demo_console, "Timeline")

    # The demo says what it is and how to point the console at a real run.
    expect(page.get_by_text("This is a demo")).to_be_visible()
    expect(page.get_by_text("oasis-ops dashboard --db path/to/trials.duckdb")).to_be_visible()

    # Summary figures for the latest run (the generated day: 12,830 trials).
    metrics = page.locator("[data-testid=stMetric]")
    expect(metrics).to_have_count(5)
    expect(metrics.filter(has_text="Trials")).to_contain_text("12,830")
    expect(metrics.filter(has_text="Failure rate")).to_contain_text(re.compile(r"\d+(\.\d+)?%"))
    expect(metrics.filter(has_text="p95 latency")).to_contain_text(re.compile(r"\d+(\.\d+)? s"))

    # The chart: vega-embed drew it, with its three panels.
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart).to_be_visible()
    expect(chart.locator("canvas, svg").first).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 300

    # The failure window (17:58-18:04 UTC) is in the failing-buckets table and its summary.
    expect(page.get_by_text(re.compile(r"17:58–18:04 UTC"))).to_be_visible()
    table = page.locator("[data-testid=stTable]").first
    expect(table).to_contain_text("17:58")
    expect(table).to_contain_text("18:03")
    expect(page.get_by_text("Download CSV")).to_be_visible()
    wait_idle(page)
    # Streamlit scrolls inside its own container: a tall viewport shows the whole page.
    page.set_viewport_size({"width": 1400, "height": 2600})
    expect(table).to_be_visible()
    page.screenshot(path=SCREENSHOT, full_page=True)


def _axis_labels(page: Page, text: str) -> int:
    """How many SVG text nodes of the chart read `text` (the chart renders as SVG)."""
    return int(
        page.evaluate(
            "t => [...document.querySelectorAll('[data-testid=stVegaLiteChart] svg text')]"
            ".filter(n => n.textContent.trim() === t).length",
            text,
        )
    )


@pytest.mark.browser
def test_timeline_brush_zooms_the_panels(page: Page, demo_console: Console) -> None:
    page.set_viewport_size({"width": 1400, "height": 2000})  # the whole chart on screen, for the mouse
    open_console(page, demo_console, "Timeline")
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart).to_be_visible()
    expect(chart.locator("svg text", has_text="09:30")).to_have_count(2)  # zoomable panels' axis + overview
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None
    # Drag across the right sixth of the overview strip (the bottom panel) to zoom in.
    y = box["y"] + box["height"] - 75
    page.mouse.move(box["x"] + box["width"] * 0.83, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.98, y, steps=8)
    page.mouse.up()
    # The zoomed panels now start in the afternoon; the overview keeps the whole day.
    expect(chart.locator("svg text", has_text="09:30")).to_have_count(1)
    assert _axis_labels(page, "17:30") >= 2
    # Double-click resets the zoom.
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    expect(chart.locator("svg text", has_text="09:30")).to_have_count(2)


@pytest.mark.browser
def test_first_visit_by_url_gets_the_whole_shell(page: Page, demo_console: Console, tmp_path: Path) -> None:
    """Streamlit runs a page of pages/ on its own until some session ran app.py; we detour."""
    db = demo_console.log_path.parent / "demo" / "trials.duckdb"
    with running_console(["dashboard", "--db", str(db)], tmp_path) as fresh:
        page.goto(fresh.url + "/timeline")  # the very first session of this server
        expect(page.get_by_role("heading", name="Timeline", exact=True)).to_be_visible()
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Trials")).to_contain_text("12,830")
        # The shell's frame is there: the data-source picker, and the app's own navigation
        # (not Streamlit's listing of the files in pages/).
        expect(page.get_by_role("textbox", name="Trial database")).to_have_value(str(db))
        nav = page.locator("[data-testid=stSidebarNavLink]")
        expect(nav.filter(has_text="Timeline")).to_have_count(1)
        expect(nav.filter(has_text="common")).to_have_count(0)
        expect(page.get_by_text("This is a demo")).to_have_count(0)  # `dashboard`, not `demo`
