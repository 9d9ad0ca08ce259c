"""DNS rebinding, for real: chromium resolves a foreign name to 127.0.0.1 (as a rebound DNS
answer would), so it sends that name in the Host header. Streamlit itself accepts it (its
websocket check compares Origin with Host); our guard must show nothing but a refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, VIEWPORT
from playwright.sync_api import Browser, Playwright, expect

if TYPE_CHECKING:
    from conftest import ReplayConsole

REBOUND = "rebind.example.test"


@pytest.fixture
def rebinding_browser(playwright_instance: Playwright) -> Iterator[Browser]:
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"]
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
    yield browser
    browser.close()


def test_a_rebound_name_gets_only_a_refusal(rebinding_browser: Browser, replay_console: ReplayConsole) -> None:
    context = rebinding_browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        for path in ("/", "/timeline", "/recovery"):
            page.goto(f"http://{REBOUND}:{replay_console.console.port}{path}")
            expect(page.locator("[data-testid=stApp]")).to_be_visible()
            expect(page.get_by_text("only answers on its loopback address")).to_be_visible()
            expect(page.locator("[data-testid=stMetric]")).to_have_count(0)
            expect(page.get_by_text("Data source")).to_have_count(0)  # the shell is not drawn either
            expect(page.locator("[data-testid=stVegaLiteChart]")).to_have_count(0)
        # The same console by its loopback name works (so the refusal above is the guard's doing).
        page.goto(f"http://localhost:{replay_console.console.port}/timeline")
        expect(page.locator("[data-testid=stMetric]").filter(has_text="Trials")).to_be_visible()
        expect(page.get_by_text("only answers on its loopback address")).to_have_count(0)
    finally:
        context.close()
