"""Ollama per version, as data: what the emulated `ollama serve` prints and does in each.

Read from Ollama's source at the release tags (server/sched.go, server/routes.go, llm/server.go,
llm/llama_server.go, envconfig/config.go, fs/ggml/ggml.go). A new version is one new entry in
PROFILES. What differs between the profiles here:

| | 0.20.4 | 0.30.0 | 0.32.15 (default) |
|---|---|---|---|
| runner | `ollama runner [--ollama-engine] --model B --port N` | `llama-server --model B --port N ...` | as 0.30 |
| log on a load | `starting runner`, `llama runner started in N seconds` (twice on llama.cpp's engine) | `starting llama-server`, `llama-server started in N seconds` twice | as 0.30 |
| dead runner (next request's ping) | WARN `llama runner process no longer running` | WARN `llama-server process no longer running` | as 0.30 |
| per-request timing lines | none at INFO | llama-server's `slot print_timing` (no prefix: Ollama passes `--no-log-prefix --no-log-timestamps`) | as 0.30 |
| flash attention unset | allow-list per architecture (Ollama engine), `Auto` for llama.cpp-engine models | `--flash-attn auto` | as 0.30 |
| loading model in /api/ps | listed (Ollama engine, holding its lock) or not yet (llama.cpp engine) | not yet | not yet |
| /api/ps takes the runners' locks | no | no | yes (from 0.32.4): waits during an unload or a reuse ping |

Common to all (see scheduler.py): only loads are queued (OLLAMA_MAX_QUEUE, then 503 `server busy,
please try again.  maximum pending requests exceeded`); keep_alive numbers are seconds, negative
is forever, strings are Go durations; a client that leaves while its runner loads gets 499
`request canceled`, while queued no line at all, while waiting for a slot 500 (after `aborting
completion request due to client closing the connection`), during generation 200 when the stream
had started, else 500; OLLAMA_MAX_LOADED_MODELS (0 = 3 per GPU) evicts the idle runner with the
shortest keep-alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oasis_ops.demo.ollama.goparse import parse_go_bool
from oasis_ops.demo.ollama.home import InstalledModel, OllamaHome
from oasis_ops.demo.ollama.servelog import ServerLog, server_config_env
from oasis_ops.errors import UsageError
from oasis_ops.ollama_versions import (
    OLLAMA_ENGINE_REQUIRED,
    PS_TAKES_RUNNER_LOCK_FROM,
    flash_attention_default,
    list_at,
    parse_version,
)

if TYPE_CHECKING:
    from oasis_ops.demo.ollama.server import EmulatorConfig


@dataclass(frozen=True)
class VersionProfile:
    version: str
    llama_server: bool  # runners are llama-server children (>= 0.30)

    @property
    def parsed(self) -> tuple[int, int, int]:
        parsed = parse_version(self.version)
        assert parsed is not None
        return parsed

    @property
    def ps_takes_runner_lock(self) -> bool:
        return self.parsed >= PS_TAKES_RUNNER_LOCK_FROM

    # --- flash attention ---------------------------------------------------------------------------
    def flash_for_load(self, cfg: EmulatorConfig, model: InstalledModel) -> str:
        """What this load is given: "on" | "off" | "auto" (llama.cpp decides)."""
        if cfg.flash_attention is not None:  # OLLAMA_FLASH_ATTENTION set: it decides
            return "on" if parse_go_bool(cfg.flash_attention) else "off"
        value = flash_attention_default(self.version, model.info.architecture).value
        return value or "off"

    def ollama_engine(self, model: InstalledModel) -> bool:
        return model.info.architecture in list_at(OLLAMA_ENGINE_REQUIRED, self.parsed)

    # --- runner command line -------------------------------------------------------------------------
    def runner_argv(self, home: OllamaHome, model: InstalledModel, port: int, cfg: EmulatorConfig, flash: str) -> list[str]:
        if self.llama_server:
            return [
                str(home.llama_server), "--model", str(model.blob), "--port", str(port), "--host", "127.0.0.1",
                "--no-webui", "--offline", "-c", str(cfg.context_length * cfg.num_parallel),
                "-np", str(cfg.num_parallel), "--log-verbosity", "4", "--no-log-prefix", "--no-log-timestamps",
                "--flash-attn", flash,
            ]  # fmt: skip
        argv = [str(home.bin_ollama), "runner"]
        if self.ollama_engine(model):
            argv.append("--ollama-engine")
        return [*argv, "--model", str(model.blob), "--port", str(port)]

    # --- server.log lines ------------------------------------------------------------------------------
    def log_startup(self, log: ServerLog, cfg: EmulatorConfig, url: str, models_dir: str, blobs: int) -> None:
        env = {
            "HTTPS_PROXY": "", "HTTP_PROXY": "", "NO_PROXY": "", "OLLAMA_CONTEXT_LENGTH": str(cfg.context_length),
            "OLLAMA_DEBUG": "INFO",
            "OLLAMA_FLASH_ATTENTION": "false" if cfg.flash_attention is None else str(parse_go_bool(cfg.flash_attention)).lower(),
            "OLLAMA_GPU_OVERHEAD": "0", "OLLAMA_HOST": url, "OLLAMA_KEEP_ALIVE": cfg.keep_alive_text,
            "OLLAMA_KV_CACHE_TYPE": "", "OLLAMA_LLM_LIBRARY": "", "OLLAMA_LOAD_TIMEOUT": "5m0s",
            "OLLAMA_MAX_LOADED_MODELS": str(cfg.max_loaded_models), "OLLAMA_MAX_QUEUE": str(cfg.max_queue),
            "OLLAMA_MODELS": models_dir, "OLLAMA_NOHISTORY": "false", "OLLAMA_NOPRUNE": "false",
            "OLLAMA_NUM_PARALLEL": str(cfg.num_parallel), "OLLAMA_ORIGINS": "[http://localhost https://localhost]",
            "OLLAMA_SCHED_SPREAD": "false",
        }  # fmt: skip
        log.slog("INFO", "routes.go:1544", "server config", env=server_config_env(env))
        log.slog("INFO", "images.go:477", f"total blobs: {blobs}")
        log.slog("INFO", "routes.go:1597", f"Listening on {url.split('://', 1)[-1]} (version {self.version})")
        if not self.llama_server:
            # 0.20's GPU discovery starts a runner without --model, logged like any other spawn
            # (discover/runner.go); >= 0.30 logs its discovery children only at TRACE.
            from oasis_ops.demo.ollama.runners import free_port

            log.slog("INFO", "server.go:444", "starting runner",
                     cmd=f"{home_bin(models_dir)} runner --ollama-engine --port {free_port()}")  # fmt: skip

    def log_runner_start(self, log: ServerLog, model: InstalledModel, argv: list[str], flash: str) -> None:
        if self.llama_server:
            log.slog("INFO", "server.go:109", "using llama-server for model", model=str(model.blob))
            log.slog("INFO", "llama_server.go:433", "starting llama-server", cmd=" ".join(argv))
            return
        if flash == "on" and self.ollama_engine(model):
            log.slog("INFO", "server.go:259", "enabling flash attention")
        log.slog("INFO", "server.go:444", "starting runner", cmd=" ".join(argv))

    def listed_while_loading(self, model: InstalledModel) -> bool:
        """0.20's Ollama engine enters the loaded list before its weights are loaded (holding the
        runner's lock); llama-server and 0.20's llama.cpp engine only once they answer."""
        return not self.llama_server and self.ollama_engine(model)

    def log_waiting(self, log: ServerLog) -> None:
        if self.llama_server:
            log.slog("INFO", "llama_server.go:1279", "waiting for llama-server to start responding")
        else:
            log.slog("INFO", "server.go:1364", "waiting for llama runner to start responding")

    def log_runner_started(self, log: ServerLog, seconds: float) -> None:
        if self.llama_server:
            log.slog("INFO", "llama_server.go:1362", f"llama-server started in {seconds:0.2f} seconds")
        else:
            log.slog("INFO", "server.go:1402", f"llama runner started in {seconds:0.2f} seconds")

    def log_runner_started_again(self, log: ServerLog, runner: Any) -> None:
        """The scheduler's load goroutine waits for the runner a second time (sched.go): for
        llama-server and 0.20's llama.cpp engine both lines appear twice per load."""
        if self.llama_server or not self.ollama_engine(runner.model):
            self.log_waiting(log)
            self.log_runner_started(log, time.monotonic() - runner.started_at)

    def log_loaded_runners(self, log: ServerLog, count: int) -> None:
        log.slog("INFO", "sched.go:728" if self.llama_server else "sched.go:561", "loaded runners", count=count)

    def log_load_failed(self, log: ServerLog, model: InstalledModel, error: str, *, listed: bool) -> None:
        """0.20's Ollama engine fails in the load goroutine (ERROR `error loading llama server`);
        llama-server and 0.20's llama.cpp engine inside Load (INFO `Load failed`)."""
        if listed:
            log.slog("ERROR", "sched.go:567", "error loading llama server", error=error)
        else:
            log.slog("INFO", "sched.go:641" if self.llama_server else "sched.go:511", "Load failed",
                     model=str(model.blob), error=error)  # fmt: skip

    def log_runner_gone(self, log: ServerLog, exit_signal: int, description: str, killed_by_signal: bool) -> None:
        """Logged by the next request's ping, and only for a runner a signal killed (as Ollama)."""
        if not killed_by_signal:
            return
        if self.llama_server:
            log.slog("WARN", "llama_server.go:1196", "llama-server process no longer running", sys=exit_signal, string=description)
        else:
            log.slog("WARN", "server.go:1284", "llama runner process no longer running", sys=exit_signal, string=description)

    def log_abort_waiting(self, log: ServerLog) -> None:
        """A client that left while its request waited for a free slot of the runner."""
        source = "llama_server.go:1538" if self.llama_server else "server.go:1582"
        log.slog("INFO", source, "aborting completion request due to client closing the connection")


def home_bin(models_dir: str) -> str:
    """`<home>/bin/ollama` from `<home>/models` (what the discovery line names)."""
    from pathlib import Path

    return str(Path(models_dir).parent / "bin" / "ollama")


PROFILES: dict[str, VersionProfile] = {
    p.version: p
    for p in (
        VersionProfile("0.20.4", llama_server=False),
        VersionProfile("0.30.0", llama_server=True),
        VersionProfile("0.32.15", llama_server=True),
    )
}
DEFAULT_VERSION = "0.32.15"


def profile_for(version: str | None) -> VersionProfile:
    """The profile of `version` ("0.20" picks the newest 0.20.x one); UsageError when none fits."""
    text = (version or DEFAULT_VERSION).strip().lstrip("v")
    if text in PROFILES:
        return PROFILES[text]
    matches = [p for v, p in PROFILES.items() if v.startswith(text.rstrip(".") + ".")]
    if matches:
        return max(matches, key=lambda p: p.parsed)
    raise UsageError(f"no emulator profile for Ollama {version!r} (profiles: {', '.join(PROFILES)})")
