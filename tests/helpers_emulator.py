"""Start the Ollama emulator for a test, and look at its processes the way the console does.

Usage (the emulator runs as a real `<home>/bin/ollama serve` child process on 127.0.0.1:0):

    from helpers_emulator import running_emulator, find_runner_pid, ps

    def test_something(tmp_path):
        with running_emulator(tmp_path) as emu:          # latency_ms=50, load_ms=0 by default
            httpx.post(emu.url + "/api/generate", json={"model": "gemma4:e4b", "prompt": "hi", "stream": False})
            pid = find_runner_pid(emu.pid, blob_of(emu.url, "gemma4:e4b"))

or as a fixture in your test module: `emulator = emulator_fixture()` (a pytest fixture factory, so
no import-and-shadow lint noise). On exit every process it started is stopped and the helper
ASSERTS that none is left: no emulator, no runner, no zombie. Anything given to
running_emulator() is passed to `oasis_ops.demo.ollama.process.EmulatorProcess` (num_parallel,
keep_alive, flash_attention, latency_ms, load_ms, seed, extra_env...).
Faults: `set_fault(emu.url, "stall", True, stall_s=2)`; `clear_faults(emu.url)`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from oasis_ops.demo.ollama.process import EmulatorProcess
from oasis_ops.probes.processes import parse_runner_cmdline

T = TypeVar("T")


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in ticks) from /proc/<pid>/stat, or None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pid:
                out.append(int(entry.name))
    return out


def runner_pids(emulator_pid: int, blob: str | None = None) -> list[int]:
    """Children of the emulator whose argv is a runner's, of any version (`.../ollama runner ...
    --model <blob>` or `.../llama-server --model <blob> ...`), from /proc only."""
    found = []
    for pid in children_of(emulator_pid):
        command = parse_runner_cmdline(proc_cmdline(pid))
        if command is None or command.model is None:
            continue
        if blob is not None and command.model != blob:
            continue
        stat = proc_stat(pid)
        if stat and stat[0] != "Z":
            found.append(pid)
    return found


def find_runner_pid(emulator_pid: int, blob: str | None = None, timeout: float = 10.0) -> int:
    """The one runner of that blob (waits for it); fails the test when there are several."""
    pids = wait_until(lambda: runner_pids(emulator_pid, blob), timeout, what=f"a runner for {blob}")
    assert len(pids) == 1, f"expected one runner for {blob}, found {pids}"
    return pids[0]


def blob_of(url: str, model: str) -> str:
    """The weights blob path from /api/show's modelfile FROM line (as the console maps runners)."""
    modelfile = httpx.post(url + "/api/show", json={"model": model}, timeout=5).json()["modelfile"]
    match = re.search(r"^FROM (/\S+/blobs/sha256-[0-9a-f]{64})$", modelfile, re.M)
    assert match, modelfile
    return match.group(1)


def ps(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/api/ps", timeout=5).json()["models"])


def ps_entry(url: str, model: str) -> dict[str, Any] | None:
    return next((m for m in ps(url) if m["name"] == model), None)


def parse_expires_at(text: str) -> datetime:
    """RFC 3339 with any fraction length (Go trims zeros; Python wants 0 or 3/6 digits)."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    frac = (match.group(2) or "0")[:6].ljust(6, "0")
    offset = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(f"{match.group(1)}.{frac}{offset}")


def is_stopping(entry: dict[str, Any]) -> bool:
    """What `ollama ps` prints as "Stopping...": expires_at in the past."""
    return parse_expires_at(entry["expires_at"]) < datetime.now(UTC)


def set_fault(url: str, name: str, on: bool, **params: float) -> dict[str, Any]:
    resp = httpx.post(url + "/_demo/faults", json={"name": name, "on": on, "params": params}, timeout=5)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def clear_faults(url: str) -> None:
    httpx.post(url + "/_demo/faults", json={"clear": True}, timeout=5).raise_for_status()


def wait_until(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll fn until it returns something truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def leftovers(seen: set[tuple[int, int]]) -> list[str]:
    """Processes from `seen` (pid, start) still present, zombies included."""
    out = []
    for pid, start in seen:
        stat = proc_stat(pid)
        if stat and stat[2] == start:
            out.append(f"pid {pid} state {stat[0]} {' '.join(proc_cmdline(pid))}")
    return out


@contextlib.contextmanager
def running_emulator(tmp_path: Path, **kwargs: Any) -> Iterator[EmulatorProcess]:
    """A started emulator under tmp_path/"ollama"; on exit: stopped, and nothing left behind."""
    kwargs.setdefault("latency_ms", 50)
    kwargs.setdefault("load_ms", 0)
    emu = EmulatorProcess(Path(tmp_path) / "ollama", **kwargs)
    emu.start()
    seen: set[tuple[int, int]] = set()

    def remember() -> None:
        for pid in [emu.pid, *children_of(emu.pid)]:
            stat = proc_stat(pid)
            if stat:
                seen.add((pid, stat[2]))

    try:
        remember()
        yield emu
    finally:
        with contextlib.suppress(Exception):
            remember()
            emu.runner_pids()
        seen |= emu.seen_runners
        emu.stop()
        # Runners are terminated and reaped by the emulator before it exits; give the kernel a beat.
        deadline = time.monotonic() + 5
        while leftovers(seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = leftovers(seen)
        assert not left, f"processes left after the emulator stopped: {left}"


def emulator_fixture(**kwargs: Any) -> Any:
    """Make a pytest fixture: `emulator = emulator_fixture(num_parallel=2)` in a test module."""

    @pytest.fixture
    def _emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
        with running_emulator(tmp_path, **kwargs) as emu:
            yield emu

    return _emulator
