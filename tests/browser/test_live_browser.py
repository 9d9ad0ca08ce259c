"""The Live page of the demo console in a real browser (Debian's chromium).

`oasis-ops demo` runs as `make run` starts it (Ollama emulator with the real llama.cpp runner,
simulated harness, dashboard), with the sampler on: a thread of the launcher, started before
any browser connects. The page must show the model's state and its real runner (PID, RSS as the
OS reports it, llama-server's slots), this machine's memory, the sampler's heartbeat, and the chart.
Then, with the replayed incident picked, one source at a time: the page says it shows a replay,
as of its last sample, offers no action on today's Ollama and no "start the sampler" advice.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest
from helpers_browser import open_console, wait_idle
from helpers_emulator import proc_cmdline
from helpers_server import running_console
from playwright.sync_api import Page, expect


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
        pid = int(match.group(1))
        argv = proc_cmdline(pid)  # the runner the page names is the real llama.cpp runner process
        assert argv[0].endswith("/llama-server") and argv[1] == "--model", argv
        real_rss = psutil.Process(pid).memory_info().rss
        assert real_rss > 50e6
        rss_text = metric.filter(has_text="Runner RSS").first.inner_text()
        shown = re.search(r"([\d.]+) (MB|GB)", rss_text)
        assert shown, rss_text
        shown_bytes = float(shown.group(1)) * (1e9 if shown.group(2) == "GB" else 1e6)
        assert abs(shown_bytes - real_rss) < 0.3 * real_rss, (rss_text, real_rss)  # its real memory
        expect(metric.filter(has_text="Free memory")).to_contain_text(re.compile(r"\d+(\.\d+)? GB"))
        expect(page.get_by_text("SIMULATED host memory")).to_have_count(0)  # this machine's memory
        expect(page.get_by_text("EMULATED")).to_have_count(0)  # smollm2:135m is real
        expect(page.get_by_text(re.compile(r"slots \d/\d busy")).first).to_be_visible()  # llama-server's /slots
        expect(page.get_by_text(re.compile(r"sampler running \(pid \d+"))).to_be_visible()
        # The chart: vega-embed drew it with its panels.
        chart = page.locator("[data-testid=stVegaLiteChart]").first
        expect(chart).to_be_visible()
        expect(chart.locator("canvas, svg").first).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 400
        wait_idle(page)
        page.screenshot(path=tmp_path / "live.png", full_page=True)
        chart.scroll_into_view_if_needed()
        chart.screenshot(path=tmp_path / "live_chart.png")
        main = page.locator("[data-testid=stMain]")
        expect(main.get_by_text(re.compile(r"Live run · Its sampler is running"))).to_be_visible()
        expect(main.get_by_role("button", name=re.compile("Evict")).first).to_be_visible()  # acts on what is shown

        # The replay picked: one source at a time.
        picks = page.locator("[data-testid=stSidebar]").get_by_role("radiogroup", name="Quick pick")
        picks.get_by_role("radio", name="Replayed incident 2025-11-20").click()
        expect(main.get_by_text(re.compile(r"Replay \(recorded on eval-mbp\.local\)"))).to_be_visible()
        expect(main.get_by_text(re.compile(r"as of 2025-11-20 1\d:\d\d:\d\d UTC")).first).to_be_visible()
        wait_idle(page)
        expect(main.get_by_text(re.compile(r"No recovery actions here"))).to_be_visible()
        for name in ("Evict", "Hard-kill", "Recover", "Pause"):
            expect(main.get_by_role("button", name=re.compile(name))).to_have_count(0)
        expect(main.get_by_text(re.compile(r"oasis-ops sample"))).to_have_count(0)  # no advice to sample a finished run
        expect(main.get_by_text(re.compile(r"Live run ·"))).to_have_count(0)
        expect(main.get_by_text(re.compile("RECORDED host memory"))).to_be_visible()
        page.screenshot(path=tmp_path / "live_replay.png", full_page=True)
