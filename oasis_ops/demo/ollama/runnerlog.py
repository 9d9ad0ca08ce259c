"""What runner children print (the emulator copies their output into server.log).

- llama-server (>= 0.30): llama.cpp's log lines, `[<time> <level> ]<message>`; the real engine's
  come from llama.cpp itself, the emulated engine prints the same shapes with `llama_line()`.
- `ollama runner` (0.5.8 - 0.24): Go slog lines of the runner (`go_runner_lines()`); no
  per-request timing lines at INFO.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from oasis_ops.demo.ollama.servelog import slog_line

_LOCK = threading.Lock()
_T0 = time.monotonic()


def print_line(line: str, stream: TextIO | None = None) -> None:
    """One whole line, flushed at once (stderr by default, like llama.cpp's own logger)."""
    out = stream or sys.stderr
    with _LOCK:
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):
            pass


def llama_prefix(level: str = "I") -> str:
    """llama.cpp's `0.00.613.241 I ` prefix: minutes.seconds.milliseconds.microseconds since start."""
    us = int((time.monotonic() - _T0) * 1e6)
    minutes, rest = divmod(us, 60_000_000)
    seconds, rest = divmod(rest, 1_000_000)
    ms, micro = divmod(rest, 1000)
    return f"{minutes}.{seconds:02d}.{ms:03d}.{micro:03d} {level} "


class LlamaLog:
    """llama.cpp-style lines honouring `--no-log-prefix` (level) and `--no-log-timestamps`."""

    def __init__(self, *, timestamps: bool, level: bool) -> None:
        self.timestamps = timestamps
        self.level = level

    def line(self, message: str, level: str = "I") -> None:
        prefix = ""
        if self.timestamps or self.level:
            full = llama_prefix(level)
            time_part, _, level_part = full.rstrip().rpartition(" ")
            prefix = (time_part + " " if self.timestamps else "") + (level_part + " " if self.level else "")
        print_line(prefix + message)


def timing_line(slot_id: int, task: int, label: str, ms: float, tokens: int, *, per_token: bool) -> str:
    """`slot print_timing: id  0 | task 3 | prompt eval time =  402.16 ms /   312 tokens (...)`."""
    line = f"slot print_timing: id  {slot_id} | task {task} | {label} = {ms:10.2f} ms / {tokens:5d} tokens"
    if per_token and tokens:
        line += f" ({ms / tokens:8.2f} ms per token, {tokens / max(ms, 1e-9) * 1000:8.2f} tokens per second)"
    return line


def go_runner_lines(args: object, load_s: float) -> list[str]:
    """The Go runner's lines around a load (Ollama 0.11.5 - 0.24, `ollama runner`): its start line
    (`starting ollama engine` or, on llama.cpp's engine, `starting go runner`), the listen line
    and one `load` line per operation of the server's load request."""
    port = getattr(args, "port", 0)
    parallel = getattr(args, "parallel", 1)
    ctx = getattr(args, "ctx_size", 4096)
    flash = {"on": "Enabled", "off": "Disabled"}.get(getattr(args, "flash_attn", "auto"), "Auto")
    threads = getattr(args, "threads", 0) or 8
    engine = bool(getattr(args, "ollama_engine", False))
    source = "runner.go:1417" if engine else "runner.go:965"
    lines = [slog_line("INFO", source, "starting ollama engine" if engine else "starting go runner")]
    lines.append(slog_line("INFO", "runner.go:1452" if engine else "runner.go:1001", f"Server listening on 127.0.0.1:{port}"))
    # The Ollama engine's load request goes out as fit, alloc and commit; llama.cpp's engine gets one.
    for operation in ("fit", "alloc", "commit") if engine else ("commit",):
        request = (f"{{Operation:{operation} LoraPath:[] Parallel:{parallel} BatchSize:512 FlashAttention:{flash} "
                   f"KvSize:{ctx} KvCacheType: NumThreads:{threads} GPULayers:[] MultiUserCache:false "
                   f"ProjectorPath: MainGPU:0 UseMmap:true}}")
        lines.append(slog_line("INFO", "runner.go:1290" if engine else "runner.go:895", "load", {"request": request}))
    return lines
