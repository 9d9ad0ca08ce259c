"""The Diagnostics page on the replayed incident, in Debian's chromium: one window, the three
stacked faults confirmed, cold start refuted with its evidence, the timing chart drawn, and the
post-mortem report downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from helpers_browser import open_console, wait_idle
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from conftest import ReplayConsole  # tests/browser/conftest.py

TIMEOUT_MS = 60_000


def test_diagnostics_page_proves_the_stacked_faults(page: Page, replay_console: ReplayConsole, tmp_path: Path) -> None:
    open_console(page, replay_console.console, "Diagnostics")
    main = page.locator("[data-testid=stMain]")
    expect(main.get_by_text("Window 1: 2025-11-20 17:58", exact=False)).to_be_visible(timeout=TIMEOUT_MS)
    expect(main.get_by_text("Window 2", exact=False)).to_have_count(0)
    for finding in ("stopping_deadlock", "memory_pressure", "flash_attention_cpu_spill", "cold_start"):
        expect(main.locator("code", has_text=finding).first).to_be_visible()
    expect(main.get_by_text("CONFIRMED", exact=True)).to_have_count(3)
    expect(main.get_by_text("REFUTED", exact=True)).to_have_count(1)
    expect(main.get_by_text("image encoder 17 ms", exact=False).first).to_be_visible()
    # The encoder-versus-generation chart is drawn (vega renders an SVG or a canvas).
    chart = main.locator("[data-testid=stVegaLiteChart]").last
    chart.scroll_into_view_if_needed()
    expect(chart.locator("svg, canvas").first).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    page.screenshot(path=tmp_path / "diagnostics.png", full_page=True)
    # The post-mortem downloads as one HTML file, built on the click.
    button = main.get_by_role("button", name="Post-mortem report (HTML)").first
    button.scroll_into_view_if_needed()
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        button.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert saved.suffix == ".html" and html.lstrip().lower().startswith("<!doctype html>")
    assert "17:58" in html and "stopping_deadlock" in html and "No report" not in html
