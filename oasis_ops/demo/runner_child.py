"""The emulator's runner process: one per loaded model, like Ollama's `ollama runner`.

It is started by the emulator as `<home>/bin/ollama runner --ollama-engine --model
<home>/models/blobs/sha256-<hex> --port N` (see `ollama_home.py` for how the command line gets
that exact shape) and serves, on 127.0.0.1:N only:
- `GET /health` -> `{"status": "ok" | "loading model", "busy": n, "pid": p}`;
- `POST /load` -> simulates the weights load (`load_ms`), logs the `load request` line;
- `POST /control` -> live fault state: stall, CPU spin threads, extra RSS target;
- `POST /completion` -> NDJSON token lines, then one `{"done": true, ...timings}` line.
Its stdout is copied by the emulator into server.log, so it prints Ollama's raw runner lines
(`slot print_timing: ...`, `image slice encoded in N ms`). It exits when its parent goes away,
so a crashed emulator never leaves runners behind (a real orphaned runner would linger).
"""

from __future__ import annotations

import argparse
import itertools
import json
import mmap
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from oasis_ops.demo.servelog import slog_line

WORDS = ("The", "model", "answers", "with", "a", "short", "and", "plain", "sentence", "about",
         "the", "question,", "then", "adds", "one", "more", "detail", "before", "it", "stops.")
_CHUNK = b"\x5a" * (1 << 20)


def emit(line: str) -> None:
    """One raw runner line (the emulator copies stdout into server.log)."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


class Cancelled(Exception):
    """The emulator closed its side: the client went away."""


class RunnerState:
    def __init__(self, model: str, port: int) -> None:
        self.model = model
        self.port = port
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.loaded = False
        self.parallel = 1
        self.slots = threading.Semaphore(1)
        self.free_slot_ids = [0]
        self.busy = 0
        self.tasks = itertools.count()
        self.control: dict[str, Any] = {"stall": False, "stall_s": 0.0, "spin_threads": 0,
                                        "rss_target_bytes": 0}
        self.ballast: list[mmap.mmap] = []
        self.ballast_bytes = 0
        self.spinners: list[threading.Event] = []
        self.apply_lock = threading.Lock()  # spinner and ballast changes, one at a time

    # --- live faults -------------------------------------------------------------------------
    def apply_control(self, control: dict[str, Any]) -> None:
        with self.changed:
            self.control.update({k: control[k] for k in self.control if k in control})
            self.changed.notify_all()
            spin = max(0, min(8, int(self.control["spin_threads"])))
            target = max(0, min(512 * 1024 * 1024, int(self.control["rss_target_bytes"])))
        with self.apply_lock:
            self._set_spinners(spin)
            self._set_ballast(target)

    def _set_spinners(self, count: int) -> None:
        while len(self.spinners) > count:
            self.spinners.pop().set()
        while len(self.spinners) < count:
            stop = threading.Event()
            self.spinners.append(stop)
            threading.Thread(target=_spin, args=(stop,), name="spill-spin", daemon=True).start()

    def _set_ballast(self, target: int) -> None:
        # Anonymous mmaps, written page by page: the RSS really grows, and really shrinks on close.
        chunk = 8 << 20
        while self.ballast_bytes + chunk <= target:
            block = mmap.mmap(-1, chunk)
            for _ in range(chunk // len(_CHUNK)):
                block.write(_CHUNK)
            self.ballast.append(block)
            self.ballast_bytes += chunk
        while self.ballast and self.ballast_bytes - chunk >= target:
            self.ballast.pop().close()
            self.ballast_bytes -= chunk


def _spin(stop: threading.Event) -> None:
    counter = 0
    while not stop.is_set():
        for _ in range(20000):  # check the flag rarely: this thread exists to burn CPU
            counter += 1


class Handler(BaseHTTPRequestHandler):
    server: RunnerServer
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        data = json.loads(raw or b"{}")
        return data if isinstance(data, dict) else {}

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        if self.path == "/health":
            self._json(200, {"status": "ok" if state.loaded else "loading model", "busy": state.busy,
                             "pid": os.getpid(), "ballast_bytes": state.ballast_bytes,
                             "spin_threads": len(state.spinners)})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        try:
            body = self._body()
        except (ValueError, OSError) as exc:
            self._json(400, {"error": f"bad request: {exc}"})
            return
        if self.path == "/load":
            self._load(state, body)
        elif self.path == "/control":
            state.apply_control(body)
            self._json(200, {"ok": True, "ballast_bytes": state.ballast_bytes,
                             "spin_threads": len(state.spinners)})
        elif self.path == "/completion":
            self._completion(state, body)
        else:
            self._json(404, {"error": "not found"})

    def _load(self, state: RunnerState, body: dict[str, Any]) -> None:
        parallel = max(1, int(body.get("parallel", 1)))
        flash = "Enabled" if body.get("flash_attention") else "Disabled"
        layers = int(body.get("gpu_layers", 35))
        request = (f"{{Operation:commit LoraPath:[] Parallel:{parallel} BatchSize:512 "
                   f"FlashAttention:{flash} KvSize:{int(body.get('kv_size', 4096))} KvCacheType: "
                   f"NumThreads:{int(body.get('num_threads', 8))} GPULayers:{layers}[ID:0 "
                   f"Layers:{layers}(0..{layers - 1})] MultiUserCache:false ProjectorPath: "
                   f"MainGPU:0 UseMmap:true}}")
        emit(slog_line("INFO", "runner.go:1284", "load", {"request": request}))
        time.sleep(max(0.0, float(body.get("load_ms", 0))) / 1000.0)
        with state.changed:
            state.parallel = parallel
            state.slots = threading.Semaphore(parallel)
            state.free_slot_ids = list(range(parallel))
            state.loaded = True
        self._json(200, {"status": "ok"})

    # --- generation --------------------------------------------------------------------------
    def _gone(self) -> bool:
        """True when the emulator shut its side (EOF) or reset the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))
            if self._gone():
                raise Cancelled

    def _line(self, obj: dict[str, Any]) -> None:
        try:
            self.wfile.write(json.dumps(obj).encode() + b"\n")
            self.wfile.flush()
        except OSError:
            raise Cancelled from None

    def _completion(self, state: RunnerState, body: dict[str, Any]) -> None:
        arrived = time.monotonic()
        while not state.slots.acquire(timeout=0.05):
            if self._gone():
                return
        with state.lock:
            slot_id = state.free_slot_ids.pop(0) if state.free_slot_ids else 0
            state.busy += 1
        task = next(state.tasks)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            self._generate(state, body, slot_id, task, time.monotonic() - arrived)
        except Cancelled:
            pass
        finally:
            with state.lock:
                state.busy -= 1
                state.free_slot_ids.append(slot_id)
            state.slots.release()

    def _generate(self, state: RunnerState, body: dict[str, Any], slot_id: int, task: int,
                  slot_wait_s: float) -> None:
        images = int(body.get("images", 0))
        encoder_ms = float(body.get("encoder_ms", 17.0))
        prompt_tokens = int(body.get("prompt_tokens", 16))
        eval_tokens = max(1, int(body.get("eval_tokens", 16)))
        started = time.monotonic()
        emit(f"slot launch_slot_: id  {slot_id} | task {task} | processing task")
        emit(f"slot update_slots: id  {slot_id} | task {task} | new prompt, n_ctx_slot = 4096, "
             f"n_keep = 0, task.n_tokens = {prompt_tokens}")
        for index in range(images):
            emit("encoding image slice...")
            t = time.monotonic()
            self._sleep(encoder_ms / 1000.0)
            emit(f"image slice encoded in {round((time.monotonic() - t) * 1000)} ms")
            emit(f"decoding image batch {index + 1}/{images}, n_tokens_batch = 256")
            t = time.monotonic()
            self._sleep(encoder_ms * 2.4 / 1000.0)
            emit(f"image decoded (batch {index + 1}/{images}) in {round((time.monotonic() - t) * 1000)} ms")
        self._sleep(float(body.get("prompt_ms", 5.0)) / 1000.0)
        prompt_s = time.monotonic() - started

        eval_started = time.monotonic()
        per_token_s = float(body.get("eval_ms", 50.0)) / 1000.0 / eval_tokens
        stall_done = False
        for index in range(eval_tokens):
            if body.get("wedge"):
                # stopping_deadlock: this request never ends and ignores the client going away.
                while True:
                    time.sleep(3600)
            if not stall_done:
                stall_done = self._stall(state)
            self._sleep(per_token_s)
            self._line({"content": WORDS[index % len(WORDS)] + " "})
        eval_s = time.monotonic() - eval_started
        self._line({"done": True, "done_reason": "length" if body.get("num_predict") == eval_tokens else "stop",
                    "prompt_eval_count": prompt_tokens, "prompt_eval_ms": prompt_s * 1000,
                    "eval_count": eval_tokens, "eval_ms": eval_s * 1000,
                    "slot_wait_ms": slot_wait_s * 1000, "pid": os.getpid()})
        total_ms = (prompt_s + eval_s) * 1000
        emit(_timing(slot_id, task, "prompt eval time", prompt_s * 1000, prompt_tokens, per_token=True))
        emit(_timing(slot_id, task, "       eval time", eval_s * 1000, eval_tokens, per_token=True))
        emit(_timing(slot_id, task, "      total time", total_ms, prompt_tokens + eval_tokens, per_token=False))

    def _stall(self, state: RunnerState) -> bool:
        """Hold this request while the stall fault is on; True once it stalled its one time."""
        stalled_at: float | None = None
        with state.changed:
            while state.control["stall"]:
                stalled_at = stalled_at or time.monotonic()
                limit = float(state.control["stall_s"])
                if limit > 0 and time.monotonic() - stalled_at >= limit:
                    return True
                state.changed.wait(0.05)
                if self._gone():
                    raise Cancelled
        return stalled_at is not None


def _timing(slot_id: int, task: int, label: str, ms: float, tokens: int, *, per_token: bool) -> str:
    line = f"slot print_timing: id  {slot_id} | task {task} | {label} = {ms:10.2f} ms / {tokens:5d} tokens"
    if per_token and tokens:
        line += f" ({ms / tokens:8.2f} ms per token, {tokens / max(ms, 1e-9) * 1000:8.2f} tokens per second)"
    return line


class RunnerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port clash must fail loudly so the emulator picks another

    def __init__(self, port: int, state: RunnerState) -> None:
        self.state = state
        super().__init__(("127.0.0.1", port), Handler)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ollama runner")
    parser.add_argument("--ollama-engine", action="store_true")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _unknown = parser.parse_known_args(argv)
    state = RunnerState(args.model, args.port)
    try:
        server = RunnerServer(args.port, state)
    except OSError as exc:
        emit(slog_line("ERROR", "runner.go:1340", "failed to listen", {"port": args.port, "error": str(exc)}))
        return 98
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    emit(slog_line("INFO", "runner.go:1353", f"Server listening on 127.0.0.1:{args.port}"))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0
