"""Access and offline, in the real browser: no page asks anything of the internet, and with an
access secret every page shows the sign-in form until the right secret is given (a wrong one is
refused and audited)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import duckdb
from conftest import TIMEOUT_MS, VIEWPORT
from helpers_browser import wait_idle
from helpers_server import running_console
from playwright.sync_api import Browser, Page, expect

if TYPE_CHECKING:
    from conftest import ReplayConsole

PAGES = ("/", "/timeline", "/recovery", "/diagnostics", "/demo")
SECRET = "correct horse battery staple"


def test_no_page_asks_anything_of_another_host(page: Page, replay_console: ReplayConsole) -> None:
    """Every page of the replayed incident: no request leaves 127.0.0.1, and no exception box."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    for path in PAGES:
        page.goto(replay_console.console.url + path)
        expect(page.locator("[data-testid=stMain] h1").first).to_be_visible()
        wait_idle(page)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    hosts = {urlsplit(url).hostname for url in asked if not url.startswith(("data:", "blob:", "about:"))}
    assert hosts == {"127.0.0.1"}, sorted(url for url in asked if urlsplit(url).hostname != "127.0.0.1")[:10]


def test_with_an_access_secret_every_page_waits_for_it(browser: Browser, tmp_path: Path, replay_console: ReplayConsole) -> None:
    env = {"OASIS_OPS_ACCESS_SECRET": SECRET}
    with running_console(["dashboard", "--db", str(replay_console.db)], tmp_path, env=env) as console:
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page = context.new_page()
        try:
            for path in ("/", "/recovery"):
                page.goto(console.url + path)
                expect(page.get_by_label("Access secret")).to_be_visible()
                expect(page.locator("[data-testid=stMetric]")).to_have_count(0)  # nothing of the run
                expect(page.locator("[data-testid=stSidebarNavLink]")).to_have_count(0)
            page.get_by_label("Access secret").fill("guess")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Wrong secret.")).to_be_visible()
            page.get_by_label("Access secret").fill(SECRET)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Recovery", exact=True)).to_be_visible()  # the page asked for
            expect(page.locator("[data-testid=stSidebarNavLink]").first).to_be_visible()
        finally:
            context.close()
    sidecar = replay_console.db.with_name(replay_console.db.stem + ".ops.duckdb")
    con = duckdb.connect(str(sidecar), read_only=True)
    try:
        rows = con.execute("SELECT outcome, detail FROM actions WHERE action = 'sign_in' ORDER BY ts").fetchall()
    finally:
        con.close()
    assert [outcome for outcome, _ in rows][-2:] == ["refused", "done"]
    assert "wrong access secret" in rows[-2][1] and SECRET not in "".join(d for _, d in rows)
