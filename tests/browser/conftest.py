"""Reusable Playwright fixtures: Debian's chromium, and the console running as users start it.

Every browser test is marked `browser`. Waiting is always explicit: health is polled until
`ok`, then the app root `[data-testid=stApp]`, then specific text through `expect()` with
generous timeouts (2 shared cores). Periodic refreshes are off in the consoles started here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers_server import ROOT, Console, console_env, running_console
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

CHROMIUM = os.environ.get("OASIS_OPS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 45_000
VIEWPORT = {"width": 1400, "height": 1000}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"chromium not found at {CHROMIUM}: run `make browser` (Debian's chromium package)")
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@dataclass
class ReplayConsole:
    """`oasis-ops dashboard` serving the incident replay's trial database."""

    console: Console
    db: Path
    replay: dict[str, Any]  # what `oasis-ops demo replay --json` printed (trials, ok, failed, window, ...)


def write_replay(out: Path, work: Path) -> dict[str, Any]:
    """`oasis-ops demo replay --out OUT --json`, run as users run it; returns its JSON."""
    argv = [sys.executable, "-m", "oasis_ops", "demo", "replay", "--out", str(out), "--json"]
    done = subprocess.run(argv, cwd=ROOT, env=console_env(work), capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"demo replay exited with {done.returncode}:\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="session")
def replay_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayConsole]:
    """The replayed incident of 2025-11-20 in `oasis-ops dashboard` on a free loopback port
    (started once per session), its data, cache and logs in a temporary directory."""
    work = tmp_path_factory.mktemp("replay-console")
    replay = write_replay(work / "replay", work)
    db = Path(replay["files"]["trials.duckdb"])
    with running_console(["dashboard", "--db", str(db)], work) as console:
        yield ReplayConsole(console, db, replay)
