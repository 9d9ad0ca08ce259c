"""An Ollama-compatible server (the `ollama serve` stand-in) with real runner child processes.

What plays which role (for process discovery): the emulator runs as `<home>/bin/ollama serve`
(/proc cmdline exactly that; `psutil.Process.name()` is `ollama`), and every loaded model has one
child process `<home>/bin/ollama runner --ollama-engine --model <home>/models/blobs/sha256-<hex>
--port N`, which really serves the generations (see `runner_child.py`, `ollama_home.py`).

Ollama API (real shapes): `GET|HEAD /`, `GET /api/version`, `GET /api/ps`, `GET /api/tags`,
`POST /api/show`, `POST /api/generate`, `POST /api/chat` (NDJSON streaming by default, or one
JSON object with `"stream": false`). Keep-alive follows Ollama's scheduler: `expires_at` is set
at load and whenever the last in-flight request ends; `keep_alive: 0` sets it to now (Stopping)
and unloads once nothing is in flight; a later request reuses the runner and postpones that.
A killed runner stays in /api/ps (ghost) until it expires; the next request logs WARN `llama
runner process no longer running` and spawns a new one.

Emulator-only endpoints (not Ollama's, never logged to server.log):
`GET|POST /_demo/faults`, `GET /_demo/host` (simulated host memory), `GET /_demo/runners`.

Configuration comes from the environment, as for `ollama serve`: `OLLAMA_HOST`,
`OLLAMA_MODELS`, `OLLAMA_KEEP_ALIVE`, `OLLAMA_NUM_PARALLEL`, `OLLAMA_FLASH_ATTENTION`, plus
`OASIS_EMU_*` knobs (see `EmulatorConfig`). `EmulatorProcess` starts one in a subprocess.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import math
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oasis_ops.demo.faults import FaultBoard
from oasis_ops.demo.ollama_home import (
    InstalledModel,
    OllamaHome,
    normalize_name,
    python_path_for_children,
)
from oasis_ops.demo.servelog import ServerLog, go_time_json, server_config_env
from oasis_ops.errors import OasisOpsError, UsageError

RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")
FOREVER_S = (2**63 - 1) / 1e9  # Go's math.MaxInt64 duration: expires_at lands in year ~2318
# Families whose flash attention Ollama 0.20 turns on by itself when OLLAMA_FLASH_ATTENTION is unset.
FLASH_ATTENTION_FAMILIES = frozenset({"gemma3", "gemma4", "qwen3", "gptoss"})
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class KeepAliveError(UsageError):
    """A keep_alive Ollama would reject (its message is Go's)."""


def parse_go_duration(text: str) -> float:
    """Go's `time.ParseDuration`, in seconds: "5m", "1h30m", "0", "-1m", "250ms"."""
    raw = text
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-") if text[:1] in "+-" else text
    if text == "0":
        return 0.0
    if not text:
        raise KeepAliveError(f'time: invalid duration "{raw}"')
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            if re.fullmatch(r"\d+\.?\d*", text[pos:]):
                raise KeepAliveError(f'time: missing unit in duration "{raw}"')
            raise KeepAliveError(f'time: invalid duration "{raw}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: Any, default_s: float) -> float:
    """Seconds to keep a model loaded; `math.inf` means forever (any negative value)."""
    if value is None:
        return default_s
    if isinstance(value, bool):
        raise KeepAliveError("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise KeepAliveError("json: cannot unmarshal keep_alive into Go value of type api.Duration")
    return math.inf if seconds < 0 else seconds


def parse_go_bool(text: str) -> bool:
    """strconv.ParseBool, where Ollama counts an unparsable value as true."""
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return True


@dataclass
class EmulatorConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 11434
    version: str = "0.20.4"
    latency_ms: float = 2000.0  # median of a generation's wall time (p95 about 1.5x)
    load_ms: float = 1500.0  # simulated weights load, on top of the runner's start-up
    encoder_ms: float = 17.0  # per image; faults never slow it (warm encoder, as in the incident)
    keep_alive_s: float = 300.0
    keep_alive_text: str = "5m0s"
    num_parallel: int = 1
    flash_attention: str | None = None  # raw OLLAMA_FLASH_ATTENTION, None when unset
    seed: int | None = None
    banner: bool = False
    remove_home: bool = False
    echo_log: bool = False

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
        keep_alive_text = env.get("OLLAMA_KEEP_ALIVE", "")
        try:
            keep_alive = parse_keep_alive(keep_alive_text, 300.0) if keep_alive_text else 300.0
        except KeepAliveError:
            keep_alive = 300.0  # Ollama silently falls back to 5m on junk
        seed_text = env.get("OASIS_EMU_SEED", "")
        try:
            return cls(
                home=Path(home_text), host=host, port=int(port_text),
                version=env.get("OASIS_EMU_VERSION", "0.20.4"),
                latency_ms=float(env.get("OASIS_EMU_LATENCY_MS", "2000")),
                load_ms=float(env.get("OASIS_EMU_LOAD_MS", "1500")),
                encoder_ms=float(env.get("OASIS_EMU_ENCODER_MS", "17")),
                keep_alive_s=keep_alive, keep_alive_text=keep_alive_text or "5m0s",
                num_parallel=max(1, int(env.get("OLLAMA_NUM_PARALLEL", "1") or 1)),
                flash_attention=env.get("OLLAMA_FLASH_ATTENTION") or None,
                seed=int(seed_text) if seed_text else None,
                banner=env.get("OASIS_EMU_BANNER") == "1",
                remove_home=env.get("OASIS_EMU_REMOVE_HOME") == "1",
                echo_log=env.get("OASIS_EMU_ECHO_LOG") == "1",
            )
        except ValueError as exc:
            raise UsageError(f"bad emulator setting: {exc}") from None

    def flash_attention_for(self, family: str) -> bool:
        if self.flash_attention is None:
            return family in FLASH_ATTENTION_FAMILIES
        return parse_go_bool(self.flash_attention)


def _now_local() -> datetime:
    return datetime.now().astimezone()


def _expiry(seconds: float) -> datetime:
    seconds = FOREVER_S if math.isinf(seconds) else seconds
    return _now_local() + timedelta(microseconds=int(seconds * 1e6))


class RunnerFailed(OasisOpsError):
    """A runner could not be started or died while starting."""


# --- runner processes ---------------------------------------------------------------------------
class Runner:
    """One real `ollama runner` child process and its HTTP port."""

    def __init__(self, emulator: Emulator, model: InstalledModel, flash_attention: bool) -> None:
        self.emulator = emulator
        self.model = model
        self.flash_attention = flash_attention
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.exited = threading.Event()
        self.stopping = False  # we asked it to stop: its exit is not a crash
        self.last_control: dict[str, Any] | None = None
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    def exit_description(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "running"
        if code < 0:
            names = {signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGSEGV: "segmentation fault"}
            return f"signal: {names.get(signal.Signals(-code), signal.Signals(-code).name.lower())}"
        return f"exit status {code}"

    def exit_signal(self) -> int:
        code = self.proc.returncode if self.proc else None
        return -code if code is not None and code < 0 else (code or 0)

    def start(self) -> None:
        emu = self.emulator
        started = time.monotonic()
        for _attempt in range(3):
            self.port = _free_port()
            argv = [str(emu.home.bin_ollama), "runner", "--ollama-engine", "--model", str(self.model.blob),
                    "--port", str(self.port)]
            emu.log.slog("INFO", "server.go:392", "starting runner", cmd=" ".join(argv))
            self.exited.clear()
            self.proc = subprocess.Popen(
                argv, cwd=emu.home.launch_dir, env=emu.child_env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
            threading.Thread(target=self._pump, args=(self.proc,), name=f"runner-out-{self.proc.pid}", daemon=True).start()
            threading.Thread(target=self._reap, args=(self.proc,), name=f"runner-wait-{self.proc.pid}", daemon=True).start()
            if self._wait_listening(timeout=30.0):
                break
            if self.proc.returncode == 98:  # port taken between our probe and its bind: retry
                continue
            raise RunnerFailed(f"llama runner process has terminated: {self.exit_description()}")
        else:
            raise RunnerFailed("llama runner process could not find a free port")
        body = {"parallel": emu.cfg.num_parallel, "flash_attention": self.flash_attention,
                "kv_size": self.model.info.context_length, "load_ms": emu.cfg.load_ms, "gpu_layers": 35}
        try:
            self.request("POST", "/load", body, timeout=emu.cfg.load_ms / 1000 + 60)
        except OSError:
            self.kill()
            raise RunnerFailed(f"llama runner process has terminated: {self.exit_description()}") from None
        emu.log.slog("INFO", "server.go:1301", f"llama runner started in {time.monotonic() - started:.2f} seconds")
        self.push_control()

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited.wait(0.03):
                return False
            try:
                self.request("GET", "/health", None, timeout=1.0)
                return True
            except OSError:
                continue
        self.kill()
        return False

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.emulator.log.raw(raw.decode("utf-8", errors="replace"))
        proc.stdout.close()

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()  # reaps at once: a killed runner never lingers as a zombie
        if proc is self.proc:
            self.exited.set()
        self.emulator.scheduler.runner_exited()

    def request(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                raise OSError(f"runner answered {resp.status}")
            result = json.loads(payload or b"{}")
            return result if isinstance(result, dict) else {}
        except (http.client.HTTPException, ValueError) as exc:
            raise OSError(str(exc)) from None
        finally:
            conn.close()

    def push_control(self, force: bool = False) -> None:
        if not self.alive():
            return
        control = self.emulator.board.runner_control(self.flash_attention)
        if control == self.last_control and not force:
            return
        with contextlib.suppress(OSError):
            self.request("POST", "/control", control, timeout=5.0)
            self.last_control = control

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def stop(self, grace_s: float = 3.0) -> None:
        """Terminate (then kill) and wait until reaped."""
        self.stopping = True
        if self.proc is None:
            return
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            if not self.exited.wait(grace_s):
                self.kill()
                self.exited.wait(5.0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the scheduler ------------------------------------------------------------------------------
@dataclass(eq=False)
class LoadedModel:
    """One loaded model (one runner), keyed by its weights blob like Ollama's scheduler."""

    model: InstalledModel
    runner: Runner
    session_s: float
    ref_count: int = 0
    expires_at: datetime = field(default_factory=_now_local)
    loaded: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    unloading: bool = False
    timer: threading.Timer | None = None
    dead_noticed: bool = False

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Scheduler:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.cond = threading.Condition()
        self.entries: dict[Path, LoadedModel] = {}
        self.closed = False

    def runner_exited(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def acquire(self, model: InstalledModel, keep_alive_s: float) -> tuple[LoadedModel, bool]:
        """Reserve the model's runner (loading it if needed); returns (entry, loaded_now)."""
        emu = self.emulator
        entry: LoadedModel | None = None
        with self.cond:
            while True:
                if self.closed:
                    raise RunnerFailed("server shutting down")
                entry = self.entries.get(model.blob)
                if entry is not None and entry.unloading:
                    self.cond.wait(0.1)
                    continue
                if entry is not None and entry.loaded.is_set() and not entry.runner.alive():
                    # Like Ollama: a dead runner is only noticed by the next request.
                    emu.log.slog("WARN", "server.go:736", "llama runner process no longer running",
                                 sys=entry.runner.exit_signal(), string=entry.runner.exit_description())
                    entry.cancel_timer()
                    del self.entries[model.blob]
                    self.cond.notify_all()
                    continue
                break
            mine = entry is None
            if entry is None:
                flash = emu.cfg.flash_attention_for(model.info.family)
                entry = LoadedModel(model=model, runner=Runner(emu, model, flash), session_s=keep_alive_s)
                self.entries[model.blob] = entry
            entry.ref_count += 1
            entry.session_s = keep_alive_s
            entry.cancel_timer()
        if mine:
            try:
                entry.runner.start()
            except (RunnerFailed, OSError) as exc:
                entry.runner.kill()
                with self.cond:
                    entry.load_error = str(exc)
                    entry.ref_count -= 1
                    if self.entries.get(model.blob) is entry:
                        del self.entries[model.blob]
                    self.cond.notify_all()
                entry.loaded.set()
                raise RunnerFailed(str(exc)) from None
            with self.cond:
                entry.expires_at = _expiry(entry.session_s)
            entry.loaded.set()
        else:
            entry.loaded.wait()
            if entry.load_error:
                with self.cond:
                    entry.ref_count -= 1
                raise RunnerFailed(entry.load_error)
        return entry, mine

    def release(self, entry: LoadedModel) -> None:
        with self.cond:
            entry.ref_count -= 1
            if entry.ref_count > 0 or self.entries.get(entry.model.blob) is not entry:
                return
            entry.expires_at = _expiry(entry.session_s)
            self._arm_locked(entry)

    def _arm_locked(self, entry: LoadedModel) -> None:
        entry.cancel_timer()
        if entry.session_s <= 0:
            self._unload_async(entry)
        elif not math.isinf(entry.session_s):
            entry.timer = threading.Timer(entry.session_s, self._expired, args=(entry,))
            entry.timer.daemon = True
            entry.timer.start()

    def _expired(self, entry: LoadedModel) -> None:
        with self.cond:
            if entry.ref_count == 0 and self.entries.get(entry.model.blob) is entry:
                self._unload_async(entry)

    def expire(self, model: InstalledModel) -> None:
        """keep_alive 0: Stopping now, unloaded once nothing is in flight."""
        with self.cond:
            entry = self.entries.get(model.blob)
            if entry is None or entry.unloading:
                return
            entry.session_s = 0.0
            entry.expires_at = _now_local()
            entry.cancel_timer()
            if entry.ref_count == 0 and entry.loaded.is_set():
                self._unload_async(entry)

    def _unload_async(self, entry: LoadedModel) -> None:
        if entry.unloading:
            return
        entry.unloading = True
        threading.Thread(target=self._unload, args=(entry,), name="unload", daemon=True).start()

    def _unload(self, entry: LoadedModel) -> None:
        entry.runner.stop()
        with self.cond:
            if self.entries.get(entry.model.blob) is entry:
                del self.entries[entry.model.blob]
            self.cond.notify_all()

    def loaded(self) -> list[LoadedModel]:
        with self.cond:
            return [e for e in self.entries.values() if e.loaded.is_set() and e.load_error is None]

    def close(self) -> None:
        with self.cond:
            self.closed = True
            entries = list(self.entries.values())
            for entry in entries:
                entry.cancel_timer()
        for entry in entries:
            entry.runner.stop(grace_s=2.0)


# --- the HTTP server ----------------------------------------------------------------------------
class ClientGone(Exception):
    """The API client closed its connection."""


class Emulator(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        self.home = OllamaHome(cfg.home).prepare(launchers=False)
        self.log = ServerLog(self.home.server_log, echo=sys.stderr if cfg.echo_log else None)
        self.board = FaultBoard()
        self.scheduler = Scheduler(self)
        self.rng = random.Random(cfg.seed)
        self.rng_lock = threading.Lock()
        self.child_env = dict(os.environ)
        self.child_env.update(PYTHONPATH=python_path_for_children(), PYTHONUNBUFFERED="1",
                              PYTHONDONTWRITEBYTECODE="1")
        self._models: dict[str, InstalledModel] = {}
        self._models_read = 0.0
        self._stop = threading.Event()
        super().__init__((cfg.host, cfg.port), Handler)
        self.port = int(self.server_address[1])
        self.url = f"http://{cfg.host}:{self.port}"

    def log_startup(self) -> None:
        env = {
            "HTTPS_PROXY": "", "HTTP_PROXY": "", "NO_PROXY": "", "OLLAMA_CONTEXT_LENGTH": "4096",
            "OLLAMA_DEBUG": "INFO",
            "OLLAMA_FLASH_ATTENTION": "false" if self.cfg.flash_attention is None
            else str(parse_go_bool(self.cfg.flash_attention)).lower(),
            "OLLAMA_GPU_OVERHEAD": "0", "OLLAMA_HOST": self.url, "OLLAMA_KEEP_ALIVE": self.cfg.keep_alive_text,
            "OLLAMA_KV_CACHE_TYPE": "", "OLLAMA_LLM_LIBRARY": "", "OLLAMA_LOAD_TIMEOUT": "5m0s",
            "OLLAMA_MAX_LOADED_MODELS": "0", "OLLAMA_MAX_QUEUE": "512", "OLLAMA_MODELS": str(self.home.models_dir),
            "OLLAMA_NOHISTORY": "false", "OLLAMA_NOPRUNE": "false", "OLLAMA_NUM_PARALLEL": str(self.cfg.num_parallel),
            "OLLAMA_ORIGINS": "[http://localhost https://localhost]", "OLLAMA_SCHED_SPREAD": "false",
        }
        self.log.slog("INFO", "routes.go:1544", "server config", env=server_config_env(env))
        self.log.slog("INFO", "images.go:477", f"total blobs: {len(list(self.home.blobs_dir.glob('sha256-*')))}")
        self.log.slog("INFO", "routes.go:1597",
                      f"Listening on {self.cfg.host}:{self.port} (version {self.cfg.version})")

    def models(self) -> dict[str, InstalledModel]:
        if time.monotonic() - self._models_read > 2.0:
            self._models = self.home.installed()
            self._models_read = time.monotonic()
        return self._models

    def find_model(self, name: str) -> InstalledModel | None:
        return self.models().get(normalize_name(name))

    def plan(self, body: dict[str, Any], kind: str, flash_attention: bool) -> dict[str, Any]:
        """What the runner will do for this request: token counts and phase times (ms)."""
        if kind == "chat":
            messages = body.get("messages") or []
            text = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            images = sum(len(m.get("images") or []) for m in messages if isinstance(m, dict))
        else:
            text = f"{body.get('system') or ''} {body.get('prompt') or ''}"
            images = len(body.get("images") or [])
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        with self.rng_lock:
            wall_ms = self.cfg.latency_ms * math.exp(self.rng.gauss(0.0, 0.242))  # p95/p50 ~ 1.49
            eval_tokens = self.rng.randint(20, 40)
        num_predict = options.get("num_predict") if options else None
        if isinstance(num_predict, int) and num_predict > 0:
            eval_tokens = min(num_predict, 2048)
        effects = self.board.request_effects(flash_attention)
        return {
            "prompt_tokens": max(1, len(text) // 4) + 12 + 256 * images,
            "images": images,
            "encoder_ms": self.cfg.encoder_ms,
            "prompt_ms": 0.1 * wall_ms * effects["prompt_multiplier"],
            "eval_tokens": eval_tokens,
            "eval_ms": 0.9 * wall_ms / 30.0 * eval_tokens * effects["eval_multiplier"],
            "num_predict": num_predict,
            "wedge": effects["wedge"],
        }

    def sync_runners(self) -> None:
        for entry in self.scheduler.loaded():
            entry.runner.push_control()

    def ticker(self) -> None:
        # Live faults (memory growth, spin threads) reach runners within ~0.3 s.
        while not self._stop.wait(0.3):
            try:
                self.board.host_snapshot()
                self.sync_runners()
            except Exception as exc:  # noqa: BLE001 - the ticker must outlive any one error
                self.log.slog("ERROR", "emulator.go:1", "fault ticker failed", error=str(exc))

    def write_ready_file(self) -> None:
        info = {"url": self.url, "host": self.cfg.host, "port": self.port, "pid": os.getpid(),
                "home": str(self.home.root), "models_dir": str(self.home.models_dir),
                "server_log": str(self.home.server_log), "version": self.cfg.version,
                "ollama": str(self.home.bin_ollama)}
        tmp = self.home.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(tmp, self.home.ready_file)

    def close_all(self) -> None:
        self._stop.set()
        self.scheduler.close()
        with contextlib.suppress(OSError):
            self.home.ready_file.unlink()
        self.server_close()
        self.log.close()


def loopback_origin(origin: str) -> bool:
    """True for an Origin header naming a page served from this machine (http(s)://localhost,
    127.0.0.0/8, [::1]); "null" and every other site are foreign."""
    try:
        parts = urlsplit(origin.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.scheme not in ("http", "https"):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server: Emulator
    protocol_version = "HTTP/1.1"
    server_version = "ollama-emulator"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _start(self) -> None:
        self.t0 = time.monotonic()
        self.status = 200

    def _access(self, status: int | None = None) -> None:
        if self.path.split("?", 1)[0].startswith("/_demo/"):
            return
        self.server.log.gin(status or self.status, time.monotonic() - self.t0, self.client_address[0],
                            self.command, self.path.split("?", 1)[0])

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            self._error(400, "missing request body")
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            self._error(400, f"invalid character in request body: {exc}")
            return None
        if not isinstance(data, dict):
            self._error(400, "json: cannot unmarshal request body into Go value of type api.Request")
            return None
        return data

    def _discard_body(self) -> None:
        """Read an unwanted request body so the keep-alive connection stays in sync."""
        declared = self.headers.get("Content-Length") or "0"
        if declared.isdigit() and int(declared) <= 1024 * 1024:
            self.rfile.read(int(declared))
        else:
            self.close_connection = True

    def _cross_origin(self) -> bool:
        """Like Ollama's CORS check: a browser request from a foreign page gets 403 (it must not
        drive the emulator, least of all its fault switches). True when refused."""
        origin = self.headers.get("Origin")
        if origin is None or loopback_origin(origin):
            return False
        self._discard_body()
        self._error(403, f"origin not allowed: {origin[:100]}")
        return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # --- routing -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._start()
        if self._cross_origin():
            pass
        elif self.path in ("/", "/api/version"):
            self._send(200, b"", "text/plain; charset=utf-8")
        else:
            self._send(404, b"", "text/plain")
        self._access()

    def do_GET(self) -> None:  # noqa: N802
        self._start()
        path = self.path.split("?", 1)[0]
        try:
            if self._cross_origin():
                return
            if path == "/":
                self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
            elif path == "/api/version":
                self._json(200, {"version": self.server.cfg.version})
            elif path == "/api/ps":
                self._json(200, {"models": self._ps()})
            elif path == "/api/tags":
                self._json(200, {"models": self._tags()})
            elif path == "/_demo/faults":
                self._json(200, self.server.board.snapshot())
            elif path == "/_demo/host":
                self._json(200, self.server.board.host_snapshot())
            elif path == "/_demo/runners":
                self._json(200, {"runners": self._runners()})
            else:
                self._send(404, b"404 page not found", "text/plain")
        finally:
            self._access()

    def do_POST(self) -> None:  # noqa: N802
        self._start()
        path = self.path.split("?", 1)[0]
        status: int | None = None
        try:
            if self._cross_origin():
                return
            # A text/plain POST is a "simple" cross-site request (no CORS preflight): demand JSON.
            if path.startswith("/_demo/") and self.headers.get_content_type() != "application/json":
                self._discard_body()
                self._error(415, "Content-Type must be application/json")
                return
            body = self._body()
            if body is None:
                return
            if path == "/api/show":
                self._show(body)
            elif path in ("/api/generate", "/api/chat"):
                status = self._generate(body, "chat" if path == "/api/chat" else "generate")
            elif path == "/_demo/faults":
                self._faults(body)
            else:
                self._send(404, b"404 page not found", "text/plain")
        finally:
            if status != 499:
                self._access(status)

    # --- Ollama endpoints --------------------------------------------------------------------
    @staticmethod
    def _details(m: InstalledModel) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": m.info.family, "families": [m.info.family],
                "parameter_size": m.info.parameter_size, "quantization_level": m.info.quantization_level}

    def _ps(self) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(self.server.scheduler.loaded(), key=lambda e: e.expires_at, reverse=True):
            m = entry.model
            out.append({
                "name": m.name, "model": m.name, "size": m.info.size, "digest": m.digest,
                "details": self._details(m), "expires_at": go_time_json(entry.expires_at),
                # Memory accounting at load time: a CPU spill never changes it (100% GPU).
                "size_vram": m.info.size, "context_length": m.info.context_length,
            })
        return out

    def _tags(self) -> list[dict[str, Any]]:
        return [{
            "name": m.name, "model": m.name,
            "modified_at": go_time_json(datetime.fromtimestamp(m.modified_at).astimezone()),
            "size": m.manifest_size, "digest": m.digest, "details": self._details(m),
        } for m in sorted(self.server.models().values(), key=lambda m: m.modified_at, reverse=True)]

    def _runners(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.server.scheduler.loaded():
            r = entry.runner
            out.append({"model": entry.model.name, "pid": r.pid, "port": r.port, "blob": str(entry.model.blob),
                        "alive": r.alive(), "in_flight": entry.ref_count,
                        "stopping": entry.expires_at <= _now_local(), "flash_attention": r.flash_attention,
                        "expires_at": go_time_json(entry.expires_at)})
        return out

    def _show(self, body: dict[str, Any]) -> None:
        name = str(body.get("model") or body.get("name") or "")
        m = self.server.find_model(name) if name else None
        if m is None:
            self._error(404, f"model '{name}' not found")
            return
        params_lines = []
        for key, value in sorted(m.info.parameters.items()):
            for v in value if isinstance(value, list) else [value]:
                params_lines.append(f"{key:<30} {json.dumps(v) if isinstance(v, str) else v}")
        modelfile = "\n".join([
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {m.name}", "", f"FROM {m.blob}", f'TEMPLATE """{m.info.template}"""',
            *(f"PARAMETER {line.split(None, 1)[0]} {line.split(None, 1)[1]}" for line in params_lines), "",
        ])
        arch = m.info.architecture
        self._json(200, {
            "license": "", "modelfile": modelfile, "parameters": "\n".join(params_lines),
            "template": m.info.template, "details": self._details(m),
            "model_info": {"general.architecture": arch, "general.file_type": 15,
                           "general.parameter_count": _parameter_count(m.info.parameter_size),
                           "general.quantization_version": 2, f"{arch}.context_length": 131072,
                           f"{arch}.block_count": 35, f"{arch}.embedding_length": 2560},
            "capabilities": list(m.info.capabilities),
            "modified_at": go_time_json(datetime.fromtimestamp(m.modified_at).astimezone()),
        })

    def _generate(self, body: dict[str, Any], kind: str) -> int | None:
        emu = self.server
        name = str(body.get("model") or "")
        if not name:
            self._error(400, "model is required")
            return None
        model = emu.find_model(name)
        if model is None:
            self._error(404, f"model '{name}' not found")
            return None
        try:
            keep_alive_s = parse_keep_alive(body.get("keep_alive"), emu.cfg.keep_alive_s)
        except KeepAliveError as exc:
            self._error(400, exc.message)
            return None
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        if empty:
            self._load_or_unload(model, kind, keep_alive_s)
            return None
        try:
            entry, _ = emu.scheduler.acquire(model, keep_alive_s)
        except RunnerFailed as exc:
            self._error(500, exc.message)
            return None
        try:
            return self._complete(entry, body, kind)
        finally:
            emu.scheduler.release(entry)

    def _base(self, model: InstalledModel, kind: str, content: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model.name,
                               "created_at": go_time_json(datetime.now(UTC))}
        if kind == "chat":
            out["message"] = {"role": "assistant", "content": content}
        else:
            out["response"] = content
        return out

    def _load_or_unload(self, model: InstalledModel, kind: str, keep_alive_s: float) -> None:
        emu = self.server
        if keep_alive_s == 0:
            emu.scheduler.expire(model)  # answered at once; the unload waits for in-flight work
            self._json(200, {**self._base(model, kind, ""), "done": True, "done_reason": "unload"})
            return
        try:
            entry, _ = emu.scheduler.acquire(model, keep_alive_s)
        except RunnerFailed as exc:
            self._error(500, exc.message)
            return
        emu.scheduler.release(entry)
        self._json(200, {**self._base(model, kind, ""), "done": True, "done_reason": "load"})

    def _complete(self, entry: LoadedModel, body: dict[str, Any], kind: str) -> int | None:
        emu = self.server
        model = entry.model
        ready = time.monotonic()
        stream = body.get("stream", True) is not False
        plan = emu.plan(body, kind, entry.runner.flash_attention)
        headers_sent = False
        text: list[str] = []

        def write_chunk(obj: dict[str, Any]) -> None:
            nonlocal headers_sent
            if not headers_sent:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                headers_sent = True
            data = json.dumps(obj).encode() + b"\n"
            try:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            except OSError:
                raise ClientGone from None

        def end_stream() -> None:
            with contextlib.suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        final: dict[str, Any] | None = None
        lines = self._runner_lines(entry.runner, plan)
        try:
            for item in lines:
                if "done" in item:
                    final = item
                    break
                text.append(item.get("content", ""))
                if stream:
                    try:
                        write_chunk({**self._base(model, kind, item.get("content", "")), "done": False})
                    except ClientGone:
                        self._abort_logged()
                        raise
        except ClientGone:
            self.close_connection = True
            return 499
        finally:
            lines.close()  # closes the runner connection: a runner still generating cancels
        if final is None:
            if headers_sent:
                with contextlib.suppress(ClientGone):
                    write_chunk({"error": RUNNER_STOPPED})
                end_stream()
                return 200
            self._error(500, RUNNER_STOPPED)
            return 500
        end = time.monotonic()
        summary = {
            "done": True, "done_reason": final.get("done_reason", "stop"),
            "total_duration": int((end - self.t0) * 1e9),
            "load_duration": int((ready - self.t0 + final.get("slot_wait_ms", 0) / 1000) * 1e9),
            "prompt_eval_count": int(final.get("prompt_eval_count", 0)),
            "prompt_eval_duration": int(final.get("prompt_eval_ms", 0) * 1e6),
            "eval_count": int(final.get("eval_count", 0)),
            "eval_duration": int(final.get("eval_ms", 0) * 1e6),
        }
        if stream:
            try:
                write_chunk({**self._base(model, kind, ""), **summary})
            except ClientGone:
                return 499
            end_stream()
        else:
            self._json(200, {**self._base(model, kind, "".join(text)), **summary})
        return 200

    def _runner_lines(self, runner: Runner, plan: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """Forward the request to the runner and yield its NDJSON lines.

        Watches the client meanwhile: when it goes away, log the abort like Ollama, shut our side
        of the runner connection (the runner cancels), and keep waiting for the runner to finish
        (a wedged runner never does: that is the Stopping deadlock). A dead runner ends the
        iteration early (the caller sees no `done` line).
        """
        try:
            sock = socket.create_connection(("127.0.0.1", runner.port), timeout=5.0)
        except OSError:
            return
        with sock:
            payload = json.dumps(plan).encode()
            try:
                sock.sendall(b"POST /completion HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            except OSError:
                return
            buffer = b""
            header_done = False
            watch_client = True
            client_left = False
            while True:
                watched = [sock, self.connection] if watch_client else [sock]
                try:
                    readable, _, _ = select.select(watched, [], [], 1.0)
                except (OSError, ValueError):
                    readable = [sock]
                if self.connection in readable and watch_client:
                    if self._client_gone():
                        client_left = True
                        watch_client = False
                        self._abort_logged()
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_WR)
                    else:
                        watch_client = False  # pipelined bytes, not a close: stop watching
                if sock not in readable:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                buffer += data
                if not header_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    header_done = True
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip() or client_left:
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    yield item
            if client_left:
                raise ClientGone

    def _abort_logged(self) -> None:
        log = self.server.log
        log.gin(499, time.monotonic() - self.t0, self.client_address[0], self.command, self.path.split("?", 1)[0])
        log.slog("INFO", "server.go:1187", "aborting completion request due to client closing the connection")

    # --- emulator control --------------------------------------------------------------------
    def _faults(self, body: dict[str, Any]) -> None:
        board = self.server.board
        try:
            if body.get("clear"):
                snapshot = board.clear_all()
            else:
                name = str(body.get("name") or "")
                params = body.get("params") or {}
                if not isinstance(params, dict):
                    raise UsageError("params must be an object")
                snapshot = board.set(name, bool(body.get("on")), params)
        except UsageError as exc:
            self._error(400, exc.message)
            return
        self.server.sync_runners()
        self._json(200, snapshot)


def _parameter_count(text: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMB])", text)
    if not match:
        return 0
    return int(float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)])


# --- `<home>/bin/ollama serve` ------------------------------------------------------------------
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
        threading.Thread(target=emulator.ticker, name="fault-ticker", daemon=True).start()
        emulator.write_ready_file()
        if cfg.banner:
            print(f"Ollama emulator (oasis-ops demo) listening on {emulator.url}\n"
                  f"  ollama serve pid  {os.getpid()}  ({emulator.home.bin_ollama} serve)\n"
                  f"  OLLAMA_MODELS     {emulator.home.models_dir}\n"
                  f"  server.log        {emulator.home.server_log}\n"
                  f"  faults            oasis-ops demo fault NAME on|off --url {emulator.url}\n"
                  f"  use it            export OLLAMA_HOST={emulator.url}\n"
                  "Ctrl-C stops the emulator and its runners.", flush=True)
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


# --- starting one from another process ----------------------------------------------------------
def emulator_env(home: OllamaHome, *, host: str = "127.0.0.1", port: int = 11434, latency_ms: float = 2000.0,
                 load_ms: float = 1500.0, encoder_ms: float = 17.0, num_parallel: int = 1,
                 keep_alive: str | None = None, flash_attention: str | None = "1", version: str = "0.20.4",
                 seed: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `<home>/bin/ollama serve` (Ollama's own variables plus OASIS_EMU_*).

    flash_attention is OLLAMA_FLASH_ATTENTION: "1" by default, as in the incident; None leaves it
    unset (then Ollama 0.20 enables it per model family, gemma4 included).
    """
    env = dict(os.environ if base is None else base)
    for var in ("OLLAMA_KEEP_ALIVE", "OLLAMA_NUM_PARALLEL", "OLLAMA_FLASH_ATTENTION", "OASIS_EMU_SEED",
                "OASIS_EMU_BANNER", "OASIS_EMU_REMOVE_HOME", "OASIS_EMU_ECHO_LOG"):
        env.pop(var, None)
    env.update({
        "OLLAMA_HOST": f"{host}:{port}", "OLLAMA_MODELS": str(home.models_dir),
        "OASIS_EMU_HOME": str(home.root), "OASIS_EMU_LATENCY_MS": str(latency_ms),
        "OASIS_EMU_LOAD_MS": str(load_ms), "OASIS_EMU_ENCODER_MS": str(encoder_ms),
        "OASIS_EMU_VERSION": version, "OLLAMA_NUM_PARALLEL": str(num_parallel),
        "PYTHONPATH": python_path_for_children(), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    })
    if keep_alive is not None:
        env["OLLAMA_KEEP_ALIVE"] = keep_alive
    if flash_attention is not None:
        env["OLLAMA_FLASH_ATTENTION"] = flash_attention
    if seed is not None:
        env["OASIS_EMU_SEED"] = str(seed)
    return env


class EmulatorProcess:
    """Start `<home>/bin/ollama serve` as a child process; stop it and every runner it spawned.

    ```
    with EmulatorProcess(tmp_path / "ollama", latency_ms=50, load_ms=0) as emu:
        httpx.get(emu.url + "/api/ps")
        emu.runner_pids()   # children of emu.pid shaped `.../bin/ollama runner ... --model <blob>`
    ```
    """

    def __init__(self, home: Path | str, *, host: str = "127.0.0.1", port: int = 0,
                 latency_ms: float = 2000.0, load_ms: float = 1500.0, encoder_ms: float = 17.0,
                 num_parallel: int = 1, keep_alive: str | None = None, flash_attention: str | None = "1",
                 version: str = "0.20.4", seed: int | None = None, extra_env: Mapping[str, str] | None = None) -> None:
        self.home = OllamaHome(Path(home))
        env = emulator_env(self.home, host=host, port=port, latency_ms=latency_ms, load_ms=load_ms,
                           encoder_ms=encoder_ms, num_parallel=num_parallel, keep_alive=keep_alive,
                           flash_attention=flash_attention, version=version, seed=seed)
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
        """PIDs of this emulator's runner children, oldest first (read from /proc)."""
        found = []
        for pid, start, argv in _children(self.pid):
            if len(argv) > 1 and os.path.basename(argv[0]) == "ollama" and argv[1] == "runner":
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
    fields = stat[stat.rindex(")") + 2:].split()
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
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(entry.name), int(fields[19]), [a.decode(errors="replace") for a in argv if a]))
    return out
