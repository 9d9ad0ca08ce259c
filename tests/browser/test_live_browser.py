"""The Live page of the demo console in a real browser (Debian's chromium).

`oasis-ops demo` runs as `make run` starts it (Ollama emulator, simulated harness, dashboard),
with the sampler on: a thread of the launcher, started before any browser connects. The page
must show the model's state and its runner, the simulated host memory labelled as such, the
sampler's heartbeat, and the chart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers_browser import open_console, wait_idle
from helpers_emulator import proc_cmdline
from helpers_server import running_console
from playwright.sync_api import Page, expect

SCREENSHOT = "/tmp/live.png"
CHART_SCREENSHOT = "/tmp/live_chart.png"


@pytest.mark.browser
def test_live_page_shows_the_model_state_and_the_chart(page: Page, tmp_path: Path) -> None:
    with running_console(["demo", "--dir", str(tmp_path / "demo")], tmp_path / "console", env={"OASIS_OPS_SAMPLER": "true"}) as console:
        open_console(page, console, "Live")
        metric = page.locator("[data-testid=stMetric]")
        # The harness loads the model within seconds; the header shows it once the sampler saw it.
        for _ in range(15):
            if page.get_by_text(re.compile(r"^(Loaded|Stopping for \d+m\d\ds)$")).count():
                break
            page.wait_for_timeout(2000)
            page.reload()
            expect(page.locator("[data-testid=stApp]")).to_be_visible()
            wait_idle(page)
        expect(page.get_by_text(re.compile(r"^(Loaded|Stopping for \d+m\d\ds)$")).first).to_be_visible()
        pid_text = metric.filter(has_text="Runner PID").first.inner_text()
        match = re.search(r"(\d+)\s*$", pid_text)
        assert match, pid_text
        argv = proc_cmdline(int(match.group(1)))  # the runner the page names is a real runner process
        assert len(argv) > 2 and argv[1] == "runner" and "--model" in argv, argv
        expect(metric.filter(has_text="Runner RSS")).to_contain_text(re.compile(r"\d+(\.\d+)? (MB|GB)"))
        expect(metric.filter(has_text="Free memory")).to_contain_text(re.compile(r"\d+(\.\d+)? GB"))
        expect(page.get_by_text("SIMULATED host memory")).to_be_visible()
        expect(page.get_by_text(re.compile(r"sampler running \(pid \d+"))).to_be_visible()
        # The chart: vega-embed drew it with its panels.
        chart = page.locator("[data-testid=stVegaLiteChart]").first
        expect(chart).to_be_visible()
        expect(chart.locator("canvas, svg").first).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 400
        wait_idle(page)
        page.screenshot(path=SCREENSHOT, full_page=True)
        chart.scroll_into_view_if_needed()
        chart.screenshot(path=CHART_SCREENSHOT)
