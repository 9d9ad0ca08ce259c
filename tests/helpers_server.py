"""Start `oasis-ops dashboard` / `oasis-ops demo` as a real child process for tests, and stop it.

Shared by tests/test_server.py and the browser tests: the console runs exactly as a user starts
it (the CLI, which starts Streamlit as its own child), on a free loopback port, with its cache,
snapshots and logs inside the test's directory and periodic refreshes turned off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from oasis_ops.server import free_port, health_ok

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 90.0  # 2 shared cores: Streamlit's first start can take a while


@dataclass
class Console:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def console_env(work: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_") and k not in ("OLLAMA_HOST", "OLLAMA_MODELS")}
    env.update(
        {
            "XDG_CACHE_HOME": str(work / "cache"),
            "OASIS_OPS_SNAPSHOT_DIR": str(work / "snapshots"),
            "OASIS_OPS_LIVE_REFRESH_S": "0",  # no periodic reruns: they make "idle" flaky
            "OASIS_OPS_SAMPLER": "false",
        }
    )
    env.update(extra or {})
    return env


@contextmanager
def running_console(
    args: Sequence[str], work: Path, *, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Console]:
    """Run `oasis-ops <args> --port P` until the block ends; waits for /_stcore/health == ok."""
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = work / f"console-{port}.log"
    argv = [sys.executable, "-m", "oasis_ops", *args, "--port", str(port), "--log", str(work / f"streamlit-{port}.log")]
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=console_env(work, env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    console = Console(f"http://127.0.0.1:{port}", port, process, log_path)
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not health_ok(console.url + "/_stcore/health"):
            if process.poll() is not None:
                raise AssertionError(f"console exited with {process.returncode}:\n{console.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"console not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{console.log()}")
            time.sleep(0.25)
        descendants = psutil.Process(process.pid).children(recursive=True)
        yield console
    finally:
        stop_console(process, descendants)


def stop_console(process: subprocess.Popen[bytes], descendants: list[psutil.Process]) -> None:
    """SIGTERM the CLI (it stops Streamlit itself); anything left after 20 s is killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for child in descendants:
        try:
            child.kill()
            child.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass


def listening_addresses(port: int) -> list[str]:
    """Local addresses with a TCP socket in LISTEN state on `port` (from /proc/net/tcp*)."""
    return sorted(
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    )
