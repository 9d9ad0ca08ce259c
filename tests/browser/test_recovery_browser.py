"""Hard-kill from the Live page's action bar in a real browser (Debian's chromium): the console
runs as users start it (`oasis-ops dashboard --db ...`) against the Ollama emulator, whose
runner is a real process. Click Hard-kill, confirm in the dialog, see the runner PID change
(the bar probes live) and the audit row appear."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from helpers_browser import open_console, wait_idle
from helpers_emulator import blob_of, find_runner_pid, running_emulator
from helpers_server import Console, running_console
from playwright.sync_api import Page, expect

from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.sidecar import Sidecar

MODEL = "gemma4:e4b"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, Console, Path]]:
    with running_emulator(tmp_path / "emu", latency_ms=50, load_ms=0) as emu:
        httpx.post(emu.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}, timeout=30)
        db = tmp_path / "trials.duckdb"
        env = {"OASIS_OPS_OLLAMA_HOST": emu.url, "OASIS_OPS_OLLAMA_MODELS": str(emu.home.root / "models")}
        with running_console(["dashboard", "--db", str(db)], tmp_path / "console", env=env) as console:
            yield emu, console, db


@pytest.mark.browser
def test_hard_kill_from_the_live_page(page: Page, world: tuple[EmulatorProcess, Console, Path]) -> None:
    emu, console, db = world
    old_pid = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))
    open_console(page, console, "Live")
    main = page.locator("[data-testid=stMain]")
    expect(main.get_by_text("Recovery · confirm in a dialog")).to_be_visible()
    expect(main.get_by_text(f"runner pid {old_pid}")).to_be_visible()

    main.get_by_role("button", name=re.compile("Hard-kill")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"SIGKILL pid {old_pid}")
    expect(dialog).to_contain_text("--port")  # the command line is shown
    expect(dialog).to_contain_text("RSS")
    assert psutil.pid_exists(old_pid), "opening the dialog must not kill anything"
    dialog.get_by_role("button", name="Confirm hard-kill").click()
    expect(dialog).to_have_count(0)

    expect(page.get_by_text(re.compile(rf"Hard-kill: done.*killed runner pid {old_pid}"))).to_be_visible()
    new_pid = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))
    assert new_pid != old_pid
    # the model's line in the bar (probed live) now names the new runner
    expect(main.get_by_text(re.compile(rf"{re.escape(MODEL)}.*Loaded.*runner pid {new_pid}", re.S))).to_be_visible()
    expect(main.get_by_text(re.compile(rf"Recent actions.*hard_kill {re.escape(MODEL)} · done · ui"))).to_be_visible()
    wait_idle(page)
    page.screenshot(path=db.parent / "recovery_live.png", full_page=True)

    rows = Sidecar(db.with_name("trials.ops.duckdb")).actions_since(__import__("datetime").datetime(2000, 1, 1))
    assert list(zip(rows["action"], rows["outcome"], rows["requested_by"], strict=True)) == [("hard_kill", "done", "ui")]
