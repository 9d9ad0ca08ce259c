"""Starting the emulated `ollama serve` from another process (tests, benchmarks, the demo).

    with EmulatorProcess(tmp_path / "ollama", latency_ms=50, load_ms=0) as emu:
        httpx.get(emu.url + "/api/ps")
        emu.runner_pids()   # children of emu.pid whose argv is a runner's (any version's shape)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oasis_ops.demo.ollama.home import OllamaHome, python_path_for_children
from oasis_ops.demo.ollama.profiles import DEFAULT_VERSION
from oasis_ops.demo.ollama.runners import RunnerFailed
from oasis_ops.probes.processes import parse_runner_cmdline

_CLEARED = ("OLLAMA_KEEP_ALIVE", "OLLAMA_NUM_PARALLEL", "OLLAMA_FLASH_ATTENTION", "OLLAMA_MAX_QUEUE",
            "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_CONTEXT_LENGTH", "OASIS_EMU_SEED", "OASIS_EMU_BANNER",
            "OASIS_EMU_REMOVE_HOME", "OASIS_EMU_ECHO_LOG", "OASIS_EMU_HOST", "OASIS_EMU_HOG_CAP_MB",
            "OASIS_EMU_PING_TIMEOUT_S")  # fmt: skip


def emulator_env(home: OllamaHome, *, host: str = "127.0.0.1", port: int = 11434, latency_ms: float = 2000.0,
                 load_ms: float = 1500.0, encoder_ms: float = 17.0, num_parallel: int = 1,
                 keep_alive: str | None = None, flash_attention: str | None = "1", version: str = DEFAULT_VERSION,
                 host_mode: str = "simulated", max_queue: int | None = None, max_loaded_models: int | None = None,
                 seed: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `<home>/bin/ollama serve` (Ollama's own variables plus OASIS_EMU_*).

    flash_attention is OLLAMA_FLASH_ATTENTION: "1" by default, as in the incident; None leaves it
    unset (then the version's default applies: see oasis_ops.ollama_versions).
    """
    env = dict(os.environ if base is None else base)
    for var in _CLEARED:
        env.pop(var, None)
    env.update({
        "OLLAMA_HOST": f"{host}:{port}", "OLLAMA_MODELS": str(home.models_dir),
        "OASIS_EMU_HOME": str(home.root), "OASIS_EMU_LATENCY_MS": str(latency_ms),
        "OASIS_EMU_LOAD_MS": str(load_ms), "OASIS_EMU_ENCODER_MS": str(encoder_ms),
        "OASIS_EMU_VERSION": version, "OASIS_EMU_HOST": host_mode, "OLLAMA_NUM_PARALLEL": str(num_parallel),
        "PYTHONPATH": python_path_for_children(), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    })  # fmt: skip
    optional = {"OLLAMA_KEEP_ALIVE": keep_alive, "OLLAMA_FLASH_ATTENTION": flash_attention,
                "OASIS_EMU_SEED": None if seed is None else str(seed),
                "OLLAMA_MAX_QUEUE": None if max_queue is None else str(max_queue),
                "OLLAMA_MAX_LOADED_MODELS": None if max_loaded_models is None else str(max_loaded_models)}  # fmt: skip
    env.update({k: v for k, v in optional.items() if v is not None})
    return env


class EmulatorProcess:
    """Start `<home>/bin/ollama serve` as a child process; stop it and every runner it spawned."""

    def __init__(self, home: Path | str, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 2000.0,
                 load_ms: float = 1500.0, encoder_ms: float = 17.0, num_parallel: int = 1,
                 keep_alive: str | None = None, flash_attention: str | None = "1", version: str = DEFAULT_VERSION,
                 host_mode: str = "simulated", max_queue: int | None = None, max_loaded_models: int | None = None,
                 seed: int | None = None, extra_env: Mapping[str, str] | None = None) -> None:
        self.home = OllamaHome(Path(home))
        env = emulator_env(self.home, host=host, port=port, latency_ms=latency_ms, load_ms=load_ms,
                           encoder_ms=encoder_ms, num_parallel=num_parallel, keep_alive=keep_alive,
                           flash_attention=flash_attention, version=version, host_mode=host_mode,
                           max_queue=max_queue, max_loaded_models=max_loaded_models, seed=seed)  # fmt: skip
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.seen_runners: set[tuple[int, int]] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def server_log(self) -> Path:
        return self.home.server_log

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.home.prepare()
        with contextlib.suppress(OSError):
            self.home.ready_file.unlink()
        out = open(self.home.root / "logs" / "emulator.out", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([str(self.home.bin_ollama), "serve"], cwd=self.home.launch_dir,
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.home.root / "logs" / "emulator.out").read_text(errors="replace")[-800:]
                raise RunnerFailed(f"the Ollama emulator exited at start (code {self.proc.returncode}): {tail.strip()}")
            try:
                info = json.loads(self.home.ready_file.read_text(encoding="utf-8"))
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RunnerFailed(f"the Ollama emulator did not become ready within {timeout:.0f} s")

    def runner_pids(self) -> list[int]:
        """PIDs of this emulator's runner children (any version's argv shape), oldest first."""
        found = []
        for pid, start, argv in _children(self.pid):
            if parse_runner_cmdline(argv) is not None:
                found.append((start, pid))
                self.seen_runners.add((pid, start))
        return [pid for _, pid in sorted(found)]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) the emulator; make sure every runner it had is gone too."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.runner_pids()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Runners exit by themselves within ~0.5 s of losing their parent; make sure of it.
        deadline = time.monotonic() + 5.0
        for pid, start in sorted(self.seen_runners):
            while _start_time(pid) == start and time.monotonic() < deadline:
                time.sleep(0.05)
            if _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _children(parent: int) -> list[tuple[int, int, list[str]]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(entry.name), int(fields[19]), [a.decode(errors="replace") for a in argv if a]))
    return out
