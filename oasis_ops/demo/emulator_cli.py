"""`oasis-ops demo ollama`: run the Ollama emulator alone, in the foreground.

The command prepares the emulator's directory, then replaces itself (same PID) with
`<dir>/bin/ollama serve`, so process tools see an `ollama serve` whose children are the
runners. It prints the URL, OLLAMA_MODELS and the server.log path; Ctrl-C (or SIGTERM) stops
the emulator and every runner. Without --dir a temporary directory is used and removed on exit.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
from pathlib import Path

from oasis_ops.demo.ollama.home import OllamaHome
from oasis_ops.demo.ollama.process import emulator_env
from oasis_ops.demo.ollama.profiles import DEFAULT_VERSION, PROFILES, profile_for
from oasis_ops.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=11434, help="port (default 11434; 0 picks a free one)")
    parser.add_argument("--dir", help="emulator home (OLLAMA_MODELS is DIR/models). Default: a temp dir")
    parser.add_argument("--latency-ms", type=float, default=2000.0,
                        help="median generation time, ms (p95 about 1.5x; default 2000)")
    parser.add_argument("--load-ms", type=float, default=1500.0, help="simulated model load time, ms")
    parser.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL (default 1)")
    parser.add_argument("--keep-alive", help="OLLAMA_KEEP_ALIVE (default 5m)")
    parser.add_argument("--flash-attention", default="1",
                        help="OLLAMA_FLASH_ATTENTION (default 1, as in the incident; '' leaves it unset)")
    parser.add_argument("--version", default=DEFAULT_VERSION,
                        help=f"Ollama version to behave as ({', '.join(PROFILES)}; '0.20' picks the newest 0.20.x; "
                             f"default {DEFAULT_VERSION})")
    parser.add_argument("--host-memory", choices=("real", "simulated"), default="real",
                        help="real: the console reads this machine's memory and memory_pressure allocates real, "
                             "capped memory; simulated: a simulated macOS host at /_demo/host (default real)")
    parser.add_argument("--max-queue", type=int, help="OLLAMA_MAX_QUEUE (default 512)")
    parser.add_argument("--max-loaded-models", type=int, help="OLLAMA_MAX_LOADED_MODELS (default 0: 3 per GPU)")
    parser.add_argument("--seed", type=int, help="seed of the latency draws")
    parser.add_argument("--echo-log", action="store_true", help="also print server.log lines to stderr")


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.latency_ms < 0 or args.load_ms < 0 or args.num_parallel < 1:
        raise UsageError("--latency-ms and --load-ms must be >= 0 and --num-parallel >= 1")
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            print(f"warning: the emulator will accept connections from the network on {args.host}",
                  file=sys.stderr)
    except ValueError:
        pass
    profile_for(args.version)  # an unknown version is a usage error before anything starts
    temporary = not args.dir
    root = Path(args.dir).expanduser().resolve() if args.dir else Path(tempfile.mkdtemp(prefix="oasis-ops-ollama-"))
    home = OllamaHome(root).prepare()
    env = emulator_env(home, host=args.host, port=args.port, latency_ms=args.latency_ms, load_ms=args.load_ms,
                       num_parallel=args.num_parallel, keep_alive=args.keep_alive,
                       flash_attention=args.flash_attention or None, seed=args.seed,
                       version=profile_for(args.version).version, host_mode=args.host_memory,
                       max_queue=args.max_queue, max_loaded_models=args.max_loaded_models)
    env["OASIS_EMU_BANNER"] = "1"
    if temporary:
        env["OASIS_EMU_REMOVE_HOME"] = "1"
    if args.echo_log:
        env["OASIS_EMU_ECHO_LOG"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(home.launch_dir)
    try:
        os.execve(home.bin_ollama, [str(home.bin_ollama), "serve"], env)
    except OSError as exc:
        raise UsageError(f"cannot start {home.bin_ollama} serve: {exc}") from None
    return 0  # not reached: execve replaced this process
