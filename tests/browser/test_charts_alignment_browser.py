"""One time axis to the pixel, and a clean browser console, measured in Debian's chromium.

The charts of the Live page and the Timeline stack panels on one time axis. Here the drawn SVG is
measured: in every panel the domain's ends, the vertical grid lines (the shared ticks), each
marker's dashed rule and each bucket's left edge land at the same x, within 1 px, at two window
widths; a minute label of the last panel's axis sits over the same minute of the trials strip.
Then every page is visited and the browser console must hold no warning and no error (Vega's
"Infinite extent" warnings, a failed request, an exception).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ReplayConsole
from helpers_browser import open_console, wait_idle
from playwright.sync_api import ConsoleMessage, Page, expect

TOLERANCE_PX = 1.0
WIDTHS = (1400, 1000)

# Per top-level panel (Vega's concat_N_group, top to bottom): the x of its domain's two ends
# (the invisible bounds points), of its vertical grid lines, of its marker rules, of its bars'
# left edges (by mark name), and its bottom-axis labels with their centre x.
MEASURE_JS = r"""
(chart) => {
  const svg = chart.querySelector('svg');
  const panels = [];
  const groups = [...svg.querySelectorAll('g.role-scope')].filter(
      g => /(^|\s)concat_\d+_group(\s|$)/.test(g.getAttribute('class') || ''));
  for (const g of groups) {
    const name = (g.getAttribute('class').match(/concat_(\d+)_group/) || [])[1];
    const xs = (sel, pick) => [...g.querySelectorAll(sel)].map(n => pick(n.getBoundingClientRect()));
    const centre = r => r.x + r.width / 2;
    const bounds = xs('g.role-mark[class*="_bounds_marks"] path', centre);
    const grid = [...g.querySelectorAll('g.role-axis-grid line')]
        .map(n => n.getBoundingClientRect()).filter(r => r.width < 1 && r.height > 1).map(r => r.x);
    const markers = xs('g.role-mark[class$="_marker_marks"] line', r => r.x);
    const bars = {};
    for (const m of g.querySelectorAll('g.role-mark[class$="_bars_marks"]')) {
      const cls = m.getAttribute('class').split(/\s+/).find(c => c.endsWith('_bars_marks'));
      bars[cls] = [...m.querySelectorAll('path, rect')].map(n => n.getBoundingClientRect())
          .filter(r => r.width > 0).map(r => r.x);
    }
    const labels = [...g.querySelectorAll('g.role-axis-label text')].map(n => {
      const r = n.getBoundingClientRect();
      return [n.textContent.trim(), r.x + r.width / 2, r.y];
    });
    panels.push({index: Number(name), bounds, grid, markers, bars, labels});
  }
  return panels.sort((a, b) => a.index - b.index);
}
"""


def _measure(page: Page) -> list[dict[str, Any]]:
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart.locator("svg g.role-scope").first).to_be_attached()
    page.wait_for_timeout(500)  # vega-embed's last resize pass
    panels: list[dict[str, Any]] = chart.evaluate(MEASURE_JS)
    assert len(panels) >= 3, panels
    return panels


WORST: dict[str, float] = {}  # the largest offset seen per check, printed with -s


def _same(a: list[float], b: list[float], what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} ({a[:8]} vs {b[:8]})"
    worst = max((abs(x - y) for x, y in zip(sorted(a), sorted(b), strict=True)), default=0.0)
    assert worst <= TOLERANCE_PX, f"{what}: off by {worst:.2f} px ({sorted(a)[:8]} vs {sorted(b)[:8]})"
    key = what.split(": ", 1)[-1]
    WORST[key] = max(WORST.get(key, 0.0), worst)


def _near(x: float, xs: list[float]) -> bool:
    return any(abs(x - y) <= TOLERANCE_PX for y in xs)


def _check_one_axis(panels: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """Every panel against the trials strip (the last one); returns numbers for the report."""
    strip = panels[-1]
    assert len(strip["bounds"]) == 2, f"{where}: the strip has no bounds points"
    markers_seen = 0
    for panel in panels[:-1]:
        tag = f"{where}, panel {panel['index']} vs the strip"
        _same(panel["bounds"], strip["bounds"], f"{tag}: the domain's ends")
        _same(panel["grid"], strip["grid"], f"{tag}: the time grid")
        if panel["markers"]:
            _same(panel["markers"], panels[0]["markers"], f"{where}, panel {panel['index']} vs the top: marker rules")
            markers_seen += 1
    assert markers_seen >= 2, f"{where}: markers on fewer than two panels, nothing compared"
    # Bucket edges: every failure bar starts where the strip's bar of the same minute starts;
    # finer telemetry buckets (10 s) have an edge at every minute edge of the strip they span.
    strip_edges = strip["bars"].get("overview_bars_marks", [])
    assert len(strip_edges) > 10, f"{where}: the strip has {len(strip_edges)} bars"
    compared = 0
    for panel in panels[:-1]:
        for name, edges in panel["bars"].items():
            if name == "failure_bars_marks":
                off = [x for x in edges if not _near(x, strip_edges)]
                assert not off, f"{where}: failure bars not on the strip's bucket edges: {off[:5]}"
                compared += len(edges)
            elif edges:
                lo, hi = min(edges), max(edges)
                inner = [x for x in strip_edges if lo <= x <= hi]
                off = [x for x in inner if not _near(x, edges)]
                assert not off, f"{where}: {name} has no edge at the strip's minute edges {off[:5]}"
                compared += len(inner)
    assert compared > 10, f"{where}: only {compared} bucket edges compared"
    # The same minute label on the last panel's axis and on the strip's, at the same x.
    last = next(p for p in reversed(panels[:-1]) if p["labels"])
    times = re.compile(r"^\d\d:\d\d$")
    mine = {t: x for t, x, _ in last["labels"] if times.match(t)}
    theirs = {t: x for t, x, _ in strip["labels"] if times.match(t)}
    common = sorted(set(mine) & set(theirs))
    assert len(common) >= 3, (mine, theirs)
    for t in common[1:-1]:  # the end labels may be flushed inward
        assert abs(mine[t] - theirs[t]) <= TOLERANCE_PX, f"{where}: {t} at {mine[t]:.1f} vs {theirs[t]:.1f}"
    return {"panels": len(panels), "markers": len(panels[0]["markers"]), "edges": compared, "labels": len(common)}


@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS)
def test_every_panel_shares_one_time_axis(page: Page, replay_console: ReplayConsole, width: int, tmp_path: Path) -> None:
    page.set_viewport_size({"width": width, "height": 1000})
    for title in ("Live", "Timeline"):
        open_console(page, replay_console.console, title)
        if title == "Live":  # the replay is shown as a finished run, the 30 min before its last trial
            expect(page.get_by_text(re.compile(r"Finished run")).first).to_be_visible()
        wait_idle(page)
        panels = _measure(page)
        numbers = _check_one_axis(panels, f"{title} at {width} px")
        print(f"{title} at {width} px: {numbers}; worst offsets (px): { {k: round(v, 3) for k, v in WORST.items()} }")
        # Every panel is as wide as the strip: no axis label or legend made one narrower.
        assert all(len(p["bounds"]) == 2 for p in panels)
        page.locator("[data-testid=stVegaLiteChart]").first.screenshot(path=tmp_path / f"{title}-{width}.png")


@pytest.mark.browser
def test_no_console_warning_or_error_on_any_page(page: Page, replay_console: ReplayConsole) -> None:
    seen: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("warning", "error"):
            seen.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: seen.append(f"exception: {exc}"))
    # A lazy chunk still loading when the test navigates to the next page is aborted by the
    # browser (net::ERR_ABORTED, seen on a loaded machine): our navigation, not the app's fault.
    # Any other network failure, and any answer of 400 or more, is one.
    page.on("requestfailed", lambda request: None if "ERR_ABORTED" in (request.failure or "")
            else seen.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: seen.append(f"HTTP {response.status}: {response.url}") if response.status >= 400 else None)
    visited = []
    for title in ("Live", "Timeline", "Recovery", "Diagnostics", "Demo"):
        open_console(page, replay_console.console, title)
        charts = page.locator("[data-testid=stVegaLiteChart]")
        if charts.count():
            expect(charts.first.locator("svg, canvas").first).to_be_visible()
        page.wait_for_timeout(1000)  # late warnings (vega's are logged while it renders)
        wait_idle(page)
        visited.append(title)
    assert visited == ["Live", "Timeline", "Recovery", "Diagnostics", "Demo"]
    assert not seen, "\n".join(seen)
