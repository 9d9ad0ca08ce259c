"""Browser-test helpers: open a console page and wait for Streamlit to settle."""

from __future__ import annotations

from helpers_server import Console
from playwright.sync_api import Page, expect


def open_console(page: Page, console: Console, title: str | None = None) -> None:
    """Load the console and show page `title` (through the sidebar navigation when there is one)."""
    page.goto(console.url + "/")
    expect(page.locator("[data-testid=stApp]")).to_be_visible()
    # The first page's heading means the run finished drawing the navigation too.
    expect(page.locator("[data-testid=stMain] h1").first).to_be_visible()
    wait_idle(page)
    if title is not None:
        link = page.locator("[data-testid=stSidebarNavLink]", has_text=title)
        if link.count():
            link.first.click()
        expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    wait_idle(page)


def wait_idle(page: Page) -> None:
    """Streamlit shows its status widget while a script runs; wait until it is gone."""
    expect(page.locator("[data-testid=stStatusWidget]")).to_have_count(0)
