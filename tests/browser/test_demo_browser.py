"""`oasis-ops demo` (what `make run` starts) end to end in a real browser: live trials flow on the
live database, the replayed incident's Timeline shows the failure window, and stopping the demo
leaves no process behind."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from helpers_browser import open_console, wait_idle
from helpers_server import running_console
from playwright.sync_api import Page, expect

LIVE_WITHIN_S = 60.0


def _trials_shown(page: Page) -> int:
    text = page.locator("[data-testid=stMetric]").filter(has_text="Trials").first.inner_text()
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text)]
    return numbers[0] if numbers else 0


@pytest.mark.browser
def _go_to(page: Page, name: str) -> None:
    """Click a page in the sidebar until its heading shows: a click that lands while the live
    page reruns can be swallowed, so it is retried (each attempt waits for Streamlit to idle)."""
    link = page.locator("[data-testid=stSidebarNavLink]", has_text=name).first
    heading = page.get_by_role("heading", name=name, exact=True)
    for _ in range(3):
        wait_idle(page)
        link.click()
        try:
            expect(heading).to_be_visible(timeout=15_000)
            return
        except AssertionError:
            continue
    expect(heading).to_be_visible()


def test_demo_shows_live_trials_and_the_replayed_incident(page: Page, tmp_path: Path) -> None:
    started = time.monotonic()
    with running_console(["demo", "--dir", str(tmp_path / "demo")], tmp_path, env={"OASIS_OPS_SAMPLER": "true"}) as console:
        open_console(page, console, "Timeline")
        banner = page.locator("[data-testid=stAlert]").filter(has_text="This is a demo")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("replayed incident of 2025-11-20")
        expect(banner).to_contain_text("oasis-ops dashboard --db path/to/trials.duckdb")
        expect(page.get_by_role("textbox", name="Trial database")).to_have_value(str(tmp_path / "demo" / "trials.duckdb"))

        # Live trials flowing: the Trials figure of the live run grows.
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Trials")).to_be_visible()
        first = _trials_shown(page)
        grown = first
        while grown <= first and time.monotonic() - started < LIVE_WITHIN_S:
            time.sleep(2)
            page.get_by_role("button", name="Refresh").first.click()
            wait_idle(page)
            grown = _trials_shown(page)
        assert grown > first > 0, f"the live trial count did not grow within {LIVE_WITHIN_S:.0f} s ({first} -> {grown})"

        # The replayed incident, opened from the Demo page, in the Timeline.
        _go_to(page, "Demo")
        expect(page.get_by_text("stopping_deadlock", exact=True)).to_be_visible()  # the emulator's fault switches
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Max concurrency")).to_contain_text("2")
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "demo_page.png"), full_page=True)  # for people checking the layout
        page.get_by_role("button", name="Open the replayed incident in the Timeline").click()
        expect(page.get_by_role("heading", name="Timeline", exact=True)).to_be_visible()
        expect(page.get_by_role("textbox", name="Trial database")).to_have_value(str(tmp_path / "demo" / "replay" / "trials.duckdb"))
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Trials")).to_contain_text("12,839")
        # The write-up's failure window; the replay's times are UTC, like the console's axes.
        expect(page.get_by_text(re.compile(r"17:58–18:04 UTC")).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"366 timeouts"))).to_be_visible()
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "demo_replay.png"), full_page=True)

        # The sidebar's quick pick goes back to the live run in one click.
        picks = page.locator("[data-testid=stSidebar]").get_by_role("radiogroup", name="Quick pick")
        expect(picks.get_by_role("radio", name="Replayed incident 2025-11-20")).to_be_checked()
        picks.get_by_role("radio", name="Live demo run").click()
        expect(picks.get_by_role("radio", name="Live demo run")).to_be_checked()
        expect(page.get_by_role("textbox", name="Trial database")).to_have_value(str(tmp_path / "demo" / "trials.duckdb"))
        expect(page.get_by_text(re.compile(r"366 timeouts"))).to_have_count(0)
        wait_idle(page)

        # Stop it the way a service manager does, and look for anything left behind.
        family = psutil.Process(console.process.pid).children(recursive=True)
        assert len(family) >= 4  # emulator, its runner, harness, streamlit
        console.process.send_signal(signal.SIGTERM)
        assert console.process.wait(timeout=40) == 0, console.log()
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline() for p in alive]
