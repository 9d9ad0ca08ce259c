"""The emulated `ollama serve` process: configuration, the server object, and its main loop.

It runs as `<home>/bin/ollama serve` (/proc cmdline exactly that; psutil `name()` is `ollama`)
and behaves as the Ollama version of its profile (`OASIS_EMU_VERSION`, default the newest).
Configuration comes from the environment, as for `ollama serve`: `OLLAMA_HOST`,
`OLLAMA_MODELS`, `OLLAMA_KEEP_ALIVE`, `OLLAMA_NUM_PARALLEL`, `OLLAMA_FLASH_ATTENTION`,
`OLLAMA_MAX_QUEUE`, `OLLAMA_MAX_LOADED_MODELS`, `OLLAMA_CONTEXT_LENGTH`, plus `OASIS_EMU_*`
knobs (see `EmulatorConfig.from_env`).

Host memory: `OASIS_EMU_HOST=simulated` (the default for tests and drills) serves a simulated
macOS-shaped host at `/_demo/host`, driven by the memory_pressure fault; `real` serves none (the
console then reads this machine's memory) and memory_pressure allocates real, capped memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from oasis_ops.demo.faults import FaultBoard
from oasis_ops.demo.gpu import SimulatedGpu
from oasis_ops.demo.ollama.goparse import parse_env_keep_alive
from oasis_ops.demo.ollama.home import (
    InstalledModel,
    OllamaHome,
    normalize_name,
    python_path_for_children,
)
from oasis_ops.demo.ollama.profiles import DEFAULT_VERSION, VersionProfile, profile_for
from oasis_ops.demo.ollama.realfaults import RealFaultDriver
from oasis_ops.demo.ollama.runners import Runner
from oasis_ops.demo.ollama.scheduler import PING_TIMEOUT_S, Scheduler
from oasis_ops.demo.ollama.servelog import ServerLog
from oasis_ops.errors import OasisOpsError, UsageError

HOST_MODES = ("simulated", "real")


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    return int(text) if text else default


@dataclass
class EmulatorConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 11434
    version: str = DEFAULT_VERSION
    latency_ms: float = 2000.0  # emulated models: median wall time of a generation (p95 about 1.5x)
    load_ms: float = 1500.0  # emulated models: simulated weights load
    encoder_ms: float = 17.0  # emulated models: per image; faults never slow it (a warm encoder)
    keep_alive_s: float = 300.0
    keep_alive_text: str = "5m0s"
    num_parallel: int = 1
    max_queue: int = 512
    max_loaded_models: int = 0
    context_length: int = 4096
    flash_attention: str | None = None  # raw OLLAMA_FLASH_ATTENTION, None when unset
    host_mode: str = "simulated"
    hog_cap_mb: float = 1024.0  # hard cap of the real memory_pressure hog
    ping_timeout_s: float = PING_TIMEOUT_S  # Ollama's needsReload ping timeout (a knob only to keep tests short)
    seed: int | None = None
    banner: bool = False
    remove_home: bool = False
    echo_log: bool = False
    gpu: bool = False  # present a simulated NVIDIA GPU at /_demo/gpu (oasis_ops.demo.gpu)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EmulatorConfig:
        host_text = env.get("OLLAMA_HOST", "127.0.0.1:11434") or "127.0.0.1:11434"
        host_text = host_text.split("://", 1)[-1].rstrip("/")
        host, _, port_text = host_text.rpartition(":")
        if not host:
            host, port_text = port_text, "11434"
        models = env.get("OLLAMA_MODELS", "")
        home_text = env.get("OASIS_EMU_HOME") or (str(Path(models).parent) if models else "")
        if not home_text:
            raise UsageError("the emulator needs OASIS_EMU_HOME (or OLLAMA_MODELS=<home>/models)")
        keep_alive_text = (env.get("OLLAMA_KEEP_ALIVE") or "").strip()
        host_mode = env.get("OASIS_EMU_HOST", "simulated") or "simulated"
        if host_mode not in HOST_MODES:
            raise UsageError(f"OASIS_EMU_HOST must be one of {', '.join(HOST_MODES)}, got {host_mode!r}")
        seed_text = env.get("OASIS_EMU_SEED", "")
        try:
            cfg = cls(
                home=Path(home_text), host=host, port=int(port_text),
                version=profile_for(env.get("OASIS_EMU_VERSION") or DEFAULT_VERSION).version,
                latency_ms=float(env.get("OASIS_EMU_LATENCY_MS", "2000")),
                load_ms=float(env.get("OASIS_EMU_LOAD_MS", "1500")),
                encoder_ms=float(env.get("OASIS_EMU_ENCODER_MS", "17")),
                keep_alive_s=parse_env_keep_alive(keep_alive_text, 300.0),
                keep_alive_text=keep_alive_text or "5m0s",
                num_parallel=max(1, _int_env(env, "OLLAMA_NUM_PARALLEL", 1)),
                max_queue=max(1, _int_env(env, "OLLAMA_MAX_QUEUE", 512)),
                max_loaded_models=max(0, _int_env(env, "OLLAMA_MAX_LOADED_MODELS", 0)),
                context_length=max(256, _int_env(env, "OLLAMA_CONTEXT_LENGTH", 4096)),
                flash_attention=env.get("OLLAMA_FLASH_ATTENTION") or None,
                host_mode=host_mode,
                hog_cap_mb=float(env.get("OASIS_EMU_HOG_CAP_MB", "1024")),
                ping_timeout_s=max(0.1, float(env.get("OASIS_EMU_PING_TIMEOUT_S", "10"))),
                seed=int(seed_text) if seed_text else None,
                banner=env.get("OASIS_EMU_BANNER") == "1",
                remove_home=env.get("OASIS_EMU_REMOVE_HOME") == "1",
                echo_log=env.get("OASIS_EMU_ECHO_LOG") == "1",
                gpu=env.get("OASIS_EMU_GPU") == "1",
            )  # fmt: skip
        except ValueError as exc:
            raise UsageError(f"bad emulator setting: {exc}") from None
        return cfg


class Emulator(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, cfg: EmulatorConfig) -> None:
        from oasis_ops.demo.ollama.api import Handler

        self.cfg = cfg
        self.profile: VersionProfile = profile_for(cfg.version)
        self.home = OllamaHome(cfg.home).prepare(launchers=False)
        self.log = ServerLog(self.home.server_log, echo=sys.stderr if cfg.echo_log else None)
        self.board = FaultBoard(simulated_host=cfg.host_mode == "simulated", gpu=cfg.gpu)
        self.gpu = SimulatedGpu() if cfg.gpu else None
        self._grab_target = (0.0, 0.0)  # (vram_pressure episode, bytes the other process takes)
        self.scheduler = Scheduler(self, max_queue=cfg.max_queue, max_runners=cfg.max_loaded_models,
                                   default_session_s=cfg.keep_alive_s)
        self.rng = random.Random(cfg.seed)
        self.rng_lock = threading.Lock()
        self.child_env = dict(os.environ)
        self.child_env.update(PYTHONPATH=python_path_for_children(), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        self.real_faults = RealFaultDriver(self)
        self._models: dict[str, InstalledModel] = {}
        self._models_read = 0.0
        self._stop = threading.Event()
        super().__init__((cfg.host, cfg.port), Handler)
        self.port = int(self.server_address[1])
        self.url = f"http://{cfg.host}:{self.port}"

    def log_startup(self) -> None:
        blobs = len(list(self.home.blobs_dir.glob("sha256-*")))
        self.profile.log_startup(self.log, self.cfg, self.url, str(self.home.models_dir), blobs)

    def models(self) -> dict[str, InstalledModel]:
        if time.monotonic() - self._models_read > 2.0:
            self._models = self.home.installed()
            self._models_read = time.monotonic()
        return self._models

    def find_model(self, name: str) -> InstalledModel | None:
        return self.models().get(normalize_name(name))

    def new_runner(self, model: InstalledModel) -> Runner:
        runner = Runner(self, model, self.profile.flash_for_load(self.cfg, model))
        if self.gpu is not None:  # placed at load, as Ollama does (the real engine too: it stands for a GPU runner)
            others = [r.vram_bytes or 0 for r in self.runners()]
            runner.vram_bytes = self.gpu.place(model.info.size, others, self.vram_grabbed_bytes())
        return runner

    def vram_grabbed_bytes(self) -> int:
        """VRAM the vram_pressure fault's other process holds now on the simulated GPU: grab_gb,
        or (grab_gb 0) all of the card but leave_fraction of the largest model loaded (or
        installed), reached over ramp_s."""
        progress, params, episode = self.board.vram_grab()
        if self.gpu is None or progress <= 0:
            return 0
        if self._grab_target[0] != episode:  # sized once per episode: a reload must not move it
            if params["grab_gb"] > 0:
                target = params["grab_gb"] * 1e9
            else:
                sizes = [r.model.info.size for r in self.runners()] or [m.info.size for m in self.models().values()] or [0]
                target = self.gpu.total_bytes - self.gpu.card.idle_used_mib * 1024 * 1024 - params["leave_fraction"] * max(sizes)
            self._grab_target = (episode, max(0.0, target))
        return int(self._grab_target[1] * progress)

    def gpu_answer(self) -> dict[str, Any] | None:
        """The /_demo/gpu body, None without a simulated GPU."""
        if self.gpu is None:
            return None
        runners = [r for r in self.runners() if r.pid is not None and r.vram_bytes]
        busy = any(r.in_flight > 0 for r in runners)
        return self.gpu.answer([(int(r.pid or 0), int(r.vram_bytes or 0)) for r in runners], self.vram_grabbed_bytes(), busy)

    def runners(self) -> list[Runner]:
        return [r.runner for r in self.scheduler.snapshot(lock_runners=False)]

    def plan(self, body: dict[str, Any], kind: str, flash_attention: bool, cpu_share: float = 0.0) -> dict[str, Any]:
        """Emulated models: token counts and phase times (ms) the runner will sleep out."""
        if kind == "chat":
            messages = body.get("messages") or []
            text = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            images = sum(len(m.get("images") or []) for m in messages if isinstance(m, dict))
        else:
            text = f"{body.get('system') or ''} {body.get('prompt') or ''}"
            images = len(body.get("images") or [])
        raw_options = body.get("options")
        options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
        with self.rng_lock:
            wall_ms = self.cfg.latency_ms * pow(2.718281828459045, self.rng.gauss(0.0, 0.242))  # p95/p50 ~ 1.49
            eval_tokens = self.rng.randint(20, 40)
        num_predict = options.get("num_predict") if options else None
        if isinstance(num_predict, int) and not isinstance(num_predict, bool) and num_predict > 0:
            eval_tokens = min(num_predict, 2048)
        effects = self.board.request_effects(flash_attention, cpu_share)
        return {
            "prompt_tokens": max(1, len(text) // 4) + 12 + 256 * images,
            "images": images,
            "encoder_ms": self.cfg.encoder_ms,
            "prompt_ms": 0.1 * wall_ms * effects["prompt_multiplier"],
            "eval_tokens": eval_tokens,
            "eval_ms": 0.9 * wall_ms / 30.0 * eval_tokens * effects["eval_multiplier"],
            "wedge": effects["wedge"],
        }

    def sync_runners(self) -> None:
        for runner in self.runners():
            runner.push_control()
        self.real_faults.tick()

    def ticker(self) -> None:
        # Live faults (memory growth, spin threads, signals to real runners) within ~0.1-0.3 s.
        while not self._stop.wait(0.1):
            try:
                self.board.host_snapshot()
                if self.board.vram_reload_due():
                    self.reload_for_vram()
                self.sync_runners()
            except Exception as exc:  # noqa: BLE001 - the ticker must outlive any one error
                self.log.slog("ERROR", "emulator.go:1", "fault ticker failed", error=str(exc))

    def reload_for_vram(self) -> None:
        """vram_pressure with reload: every loaded model expires (unloads once its requests
        end), so its next request loads it again into the VRAM left: a split."""
        for entry in self.scheduler.snapshot(lock_runners=False):
            self.log.slog("INFO", "sched.go:1", "vram_pressure: unloading to reload", model=entry.model.name)
            self.scheduler.expire_model(entry.model)

    def write_ready_file(self) -> None:
        info = {"url": self.url, "host": self.cfg.host, "port": self.port, "pid": os.getpid(),
                "home": str(self.home.root), "models_dir": str(self.home.models_dir),
                "server_log": str(self.home.server_log), "version": self.profile.version,
                "ollama": str(self.home.bin_ollama), "host_mode": self.cfg.host_mode}  # fmt: skip
        tmp = self.home.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(tmp, self.home.ready_file)

    def close_all(self) -> None:
        self._stop.set()
        self.real_faults.close()
        self.scheduler.close()
        with contextlib.suppress(OSError):
            self.home.ready_file.unlink()
        self.server_close()
        self.log.close()


def serve(cfg: EmulatorConfig) -> int:
    """Run the emulator in this process until SIGTERM/SIGINT; always stops every runner."""
    try:
        emulator = Emulator(cfg)
    except OSError as exc:
        raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=emulator.shutdown, name="shutdown", daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        emulator.log_startup()
        emulator.scheduler.start()
        threading.Thread(target=emulator.ticker, name="fault-ticker", daemon=True).start()
        emulator.write_ready_file()
        if cfg.banner:
            print(f"Ollama emulator (oasis-ops demo, behaves as Ollama {emulator.profile.version}) listening on {emulator.url}\n"
                  f"  ollama serve pid  {os.getpid()}  ({emulator.home.bin_ollama} serve)\n"
                  f"  OLLAMA_MODELS     {emulator.home.models_dir}\n"
                  f"  server.log        {emulator.home.server_log}\n"
                  f"  faults            oasis-ops demo fault NAME on|off --url {emulator.url}\n"
                  f"  use it            export OLLAMA_HOST={emulator.url}\n"
                  "Ctrl-C stops the emulator and its runners.", flush=True)  # fmt: skip
        emulator.serve_forever(poll_interval=0.2)
    finally:
        emulator.close_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if cfg.remove_home:
            import shutil

            shutil.rmtree(cfg.home, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `<home>/bin/ollama serve` (the launcher script passes argv after `serve`)."""
    try:
        return serve(EmulatorConfig.from_env(os.environ))
    except OasisOpsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
