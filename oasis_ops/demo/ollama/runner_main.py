"""Entry point of a runner child of the emulated `ollama serve` (one per loaded model).

The emulator starts it through `argv.spawn` with the command line of its version profile:
- `llama-server --model <blob> --port N --host 127.0.0.1 ... --flash-attn auto` (Ollama >= 0.30);
- `ollama runner --ollama-engine --model <blob> --port N` (Ollama 0.5.8 - 0.24).
Either way it serves llama.cpp's server API on 127.0.0.1:N (`/health`, `/completion`,
`/apply-template`, `/slots`, `/metrics`): the emulator talks to both shapes the same way, and the
console only looks at the argv and (for llama-server) at `/slots` and `/metrics`.

Engines (OASIS_RUNNER_ENGINE): `real` is llama.cpp's own server (PyPI `xllamacpp`) on the blob,
a real GGUF (`runner_real.py`); `emulated` is a Python stand-in for the incident's large models,
whose timings the emulator dictates per request (`runner_emulated.py`).
What the child prints follows its shape: llama-server's own log lines (>= 0.30, copied into
server.log by the emulator), or the Go runner's slog lines and no per-request timings (0.20).
The child exits when its parent goes away (a crashed emulator leaves no runner behind).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

ENGINE_ENV = "OASIS_RUNNER_ENGINE"
# The 0.20 Go runner is told flash attention in its load request, not on its command line.
FLASH_ENV = "OASIS_RUNNER_FLASH_ATTENTION"


@dataclass(frozen=True)
class RunnerArgs:
    shape: str  # "llama-server" | "ollama runner"
    model: str
    port: int
    host: str = "127.0.0.1"
    ctx_size: int = 4096
    parallel: int = 1
    flash_attn: str = "auto"  # on | off | auto (0.20 runners take no flag: the load request says)
    threads: int = 0  # 0: llama.cpp's default
    verbosity: int = 3
    log_prefix: bool = True
    batch_size: int = 512
    ollama_engine: bool = False  # 0.20: `--ollama-engine` (Go engine) vs llama.cpp's engine


def parse_runner_args(argv: list[str]) -> RunnerArgs:
    """argv[0] is the program (`.../llama-server` or `.../ollama`); the rest its flags."""
    program = os.path.basename(argv[0])
    rest = argv[1:]
    shape = "llama-server"
    if program in ("ollama", "ollama.exe"):
        if not rest or rest[0] != "runner":
            raise SystemExit(f"{program}: expected `runner`, got {rest[:1]}")
        shape, rest = "ollama runner", rest[1:]
    parser = argparse.ArgumentParser(prog=program, add_help=False)
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ctx-size", "-c", type=int, default=4096)
    parser.add_argument("--parallel", "-np", type=int, default=1)
    parser.add_argument("--flash-attn", "-fa", default="auto")
    parser.add_argument("--threads", "-t", type=int, default=0)
    parser.add_argument("--log-verbosity", "-lv", type=int, default=3)
    parser.add_argument("--no-log-prefix", action="store_true")
    parser.add_argument("--batch-size", "-b", type=int, default=512)
    args, _unknown = parser.parse_known_args(rest)  # --ollama-engine, --no-webui, --offline, ...
    if shape == "ollama runner":
        args.flash_attn = os.environ.get(FLASH_ENV, "off")
    return RunnerArgs(
        shape=shape, model=args.model, port=args.port, host=args.host, ctx_size=max(256, args.ctx_size),
        parallel=max(1, args.parallel), flash_attn=str(args.flash_attn).lower(), threads=max(0, args.threads),
        verbosity=args.log_verbosity, log_prefix=not args.no_log_prefix, batch_size=max(1, args.batch_size),
        ollama_engine="--ollama-engine" in rest,
    )  # fmt: skip


def watch_parent(parent: int, interval_s: float = 0.5) -> None:
    """Exit at once when the emulator is gone (we were re-parented)."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    full = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    args = parse_runner_args(full)
    watch_parent(os.getppid())
    # SIGTERM: leave at once (llama.cpp's server threads do not need an orderly stop).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    engine = os.environ.get(ENGINE_ENV, "real")
    if engine == "real":
        from oasis_ops.demo.ollama import runner_real

        return runner_real.run(args)
    from oasis_ops.demo.ollama import runner_emulated

    return runner_emulated.run(args)
