"""The real engine: llama.cpp's own HTTP server (PyPI `xllamacpp`) serving a real GGUF blob.

`xllamacpp.Server(params)` loads the model and serves llama-server's endpoints on the given
port from native threads; this process only configures it from the runner argv and then waits.
Its log lines are llama.cpp's own, written by the native code to stderr:
- as `llama-server` (Ollama >= 0.30) they pass through, with llama.cpp's `0.00.613.241 I ` time
  and level prefix unless the argv says `--no-log-prefix` (the level) / `--no-log-timestamps`
  (the time), as llama-server's own flags do;
- as `ollama runner` (0.20) llama.cpp's chatter is discarded (Ollama's Go runner prints its own
  lines and no per-request timings) and the Go runner's slog lines are printed instead.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

from oasis_ops.demo.ollama.runner_main import RunnerArgs
from oasis_ops.demo.ollama.runnerlog import go_runner_lines, print_line

_PREFIX = re.compile(rb"^(\d+\.\d\d\.\d\d\d\.\d\d\d )?([IWEDT] )?")


def _filter_stderr(strip_time: bool, strip_level: bool) -> None:
    """Route fd 2 through a pipe that drops llama.cpp's time and/or level prefix per line."""
    out_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = []
                for line in lines:
                    m = _PREFIX.match(line)  # always matches (both groups optional)
                    assert m is not None
                    kept_time = b"" if strip_time else (m.group(1) or b"")
                    kept_level = b"" if strip_level else (m.group(2) or b"")
                    out.append(kept_time + kept_level + line[m.end() :] + b"\n")
                try:
                    os.write(out_fd, b"".join(out))
                except OSError:
                    return

    threading.Thread(target=pump, name="llama-log", daemon=True).start()


def _silence_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def build_params(args: RunnerArgs, *, metrics: bool) -> object:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.port = args.port
    params.hostnames = [args.host]
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size
    params.n_batch = args.batch_size
    params.endpoint_slots = True
    params.endpoint_metrics = metrics
    params.verbosity = args.verbosity
    fa = xllamacpp.llama_flash_attn_type
    params.flash_attn_type = {
        "on": fa.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": fa.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }.get(args.flash_attn, fa.LLAMA_FLASH_ATTN_TYPE_AUTO)
    if args.threads:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    return params


def run(args: RunnerArgs) -> int:
    metrics = "--metrics" in sys.argv
    if args.shape == "llama-server":
        no_time = "--no-log-timestamps" in sys.argv
        no_level = not args.log_prefix
        if no_time or no_level:
            _filter_stderr(strip_time=no_time, strip_level=no_level)
    else:
        _silence_stderr()
    started = time.monotonic()
    try:
        import xllamacpp

        server = xllamacpp.Server(build_params(args, metrics=metrics))
    except Exception as exc:  # noqa: BLE001 - llama.cpp's load errors come as RuntimeError/ValueError
        print_line(f"error loading model {args.model}: {exc}", stream=sys.stdout)
        return 1
    if args.shape == "ollama runner":
        for line in go_runner_lines(args, load_s=time.monotonic() - started):
            print_line(line, stream=sys.stdout)  # fd 2 carries llama.cpp's chatter to /dev/null
    while server is not None:  # the server lives as long as this object: wait for a signal
        time.sleep(3600)
    return 0
