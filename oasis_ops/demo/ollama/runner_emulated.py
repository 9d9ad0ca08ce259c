"""The emulated engine: a stand-in for the incident's large models (gemma4:e4b and friends).

There are no weights to run (the blob is a small dummy file), so the emulator dictates each
request's token counts and phase times (`oasis_plan` in the `/completion` body) and this process
sleeps them out, in the shape of llama.cpp's server: the same endpoints as the real engine
(`/health` (503 "Loading model" until loaded), `/completion` (server-sent events when streamed),
`/apply-template`, `/slots`, `/metrics` with `--metrics`) and the same log lines as llama-server
(`slot launch_slot_`, `image slice encoded in N ms`, `slot print_timing`, `slot release`).
Its live fault state comes over `POST /control` (demo only): stall on/off, CPU spin threads
(the flash-attention spill: real CPU burnt), an RSS target (real anonymous memory, capped).
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from oasis_ops.demo.ollama.netutil import peer_closed
from oasis_ops.demo.ollama.runner_main import RunnerArgs
from oasis_ops.demo.ollama.runnerlog import LlamaLog, go_runner_lines, print_line, timing_line

LOAD_MS_ENV = "OASIS_RUNNER_LOAD_MS"
RSS_CAP_BYTES = 512 * 1024 * 1024
WORDS = ("The", "model", "answers", "with", "a", "short", "and", "plain", "sentence", "about",
         "the", "question,", "then", "adds", "one", "more", "detail", "before", "it", "stops.")
_CHUNK = b"\x5a" * (1 << 20)


class Cancelled(Exception):
    """The emulator closed its side: the request was cancelled."""


class Slot:
    def __init__(self, slot_id: int, n_ctx: int) -> None:
        self.id = slot_id
        self.n_ctx = n_ctx
        self.task: int | None = None
        self.prompt_tokens = 0
        self.decoded = 0
        self.remain = 0


class RunnerState:
    def __init__(self, args: RunnerArgs, log: LlamaLog | None) -> None:
        self.args = args
        self.log = log  # None for the 0.20 shape: no per-request lines
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.loaded = False
        self.slots = [Slot(i, args.ctx_size // args.parallel) for i in range(args.parallel)]
        self.free = threading.Semaphore(args.parallel)
        self.tasks = itertools.count()
        self.deferred = 0
        self.counters = {"prompt_tokens_total": 0, "prompt_seconds_total": 0.0, "tokens_predicted_total": 0,
                         "tokens_predicted_seconds_total": 0.0, "n_decode_total": 0}  # fmt: skip
        self.control: dict[str, Any] = {"stall": False, "stall_s": 0.0, "spin_threads": 0, "rss_target_bytes": 0}
        self.ballast: list[mmap.mmap] = []
        self.ballast_bytes = 0
        self.spinners: list[threading.Event] = []
        self.apply_lock = threading.Lock()

    def emit(self, message: str) -> None:
        if self.log is not None:
            self.log.line(message)

    # --- live faults ----------------------------------------------------------------------
    def apply_control(self, control: dict[str, Any]) -> None:
        with self.changed:
            self.control.update({k: control[k] for k in self.control if k in control})
            self.changed.notify_all()
            spin = max(0, min(8, int(self.control["spin_threads"])))
            target = max(0, min(RSS_CAP_BYTES, int(self.control["rss_target_bytes"])))
        with self.apply_lock:
            while len(self.spinners) > spin:
                self.spinners.pop().set()
            while len(self.spinners) < spin:
                stop = threading.Event()
                self.spinners.append(stop)
                threading.Thread(target=_spin, args=(stop,), name="spill-spin", daemon=True).start()
            # Anonymous mmaps written page by page: RSS really grows, and really shrinks on close.
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

    # --- slots --------------------------------------------------------------------------------
    def slots_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"id": s.id, "n_ctx": s.n_ctx, "speculative": False, "is_processing": s.task is not None,
                     "id_task": s.task if s.task is not None else -1, "n_prompt_tokens": s.prompt_tokens,
                     "next_token": [{"has_next_token": s.task is not None, "n_remain": s.remain,
                                     "n_decoded": s.decoded}]} for s in self.slots]  # fmt: skip

    def metrics_text(self) -> str:
        with self.lock:
            busy = sum(1 for s in self.slots if s.task is not None)
            c = dict(self.counters)
            deferred = self.deferred
        lines = []
        for name, value in c.items():
            lines += [f"# TYPE llamacpp:{name} counter", f"llamacpp:{name} {value}"]
        predicted = c["tokens_predicted_total"] / c["tokens_predicted_seconds_total"] if c["tokens_predicted_seconds_total"] else 0.0
        for name, gauge in (("predicted_tokens_seconds", predicted), ("requests_processing", busy),
                            ("requests_deferred", deferred)):  # fmt: skip
            lines += [f"# TYPE llamacpp:{name} gauge", f"llamacpp:{name} {gauge}"]
        return "\n".join(lines) + "\n"


def _spin(stop: threading.Event) -> None:
    counter = 0
    while not stop.is_set():
        for _ in range(20000):  # check the flag rarely: this thread exists to burn CPU
            counter += 1


class Handler(BaseHTTPRequestHandler):
    server: RunnerServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}") if length else {}
        return data if isinstance(data, dict) else {}

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if state.loaded:
                self._json(200, {"status": "ok"})
            else:
                self._json(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        elif path == "/slots":
            self._json(200, state.slots_json())
        elif path == "/metrics" and self.server.metrics:
            self._send(200, state.metrics_text().encode(), "text/plain; version=0.0.4")
        elif path == "/metrics":
            self._json(501, {"error": {"code": 501, "message": "This server does not support metrics endpoint. Start it with `--metrics`",
                                       "type": "not_supported_error"}})  # fmt: skip
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
        except (ValueError, OSError) as exc:
            self._json(400, {"error": {"code": 400, "message": f"bad request: {exc}", "type": "invalid_request_error"}})
            return
        if path == "/control":
            state.apply_control(body)
            self._json(200, {"ok": True, "ballast_bytes": state.ballast_bytes, "spin_threads": len(state.spinners)})
        elif path == "/apply-template":
            messages = body.get("messages") or []
            text = "".join(f"<start_of_turn>{m.get('role', 'user')}\n{m.get('content', '')}<end_of_turn>\n"
                           for m in messages if isinstance(m, dict))  # fmt: skip
            self._json(200, {"prompt": text + "<start_of_turn>model\n"})
        elif path == "/completion":
            self._completion(state, body)
        else:
            self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    # --- generation ---------------------------------------------------------------------------
    def _gone(self) -> bool:
        """True when the emulator closed its side (EOF) or reset the connection."""
        return peer_closed(self.connection)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
            if self._gone():
                raise Cancelled

    def _event(self, obj: dict[str, Any]) -> None:
        try:
            data = b"data: " + json.dumps(obj).encode() + b"\n\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:
            raise Cancelled from None

    def _completion(self, state: RunnerState, body: dict[str, Any]) -> None:
        with state.lock:
            state.deferred += 1
        try:
            while not state.free.acquire(timeout=0.05):
                if self._gone():
                    return
        finally:
            with state.lock:
                state.deferred -= 1
        with state.lock:
            slot = next(s for s in state.slots if s.task is None)
            slot.task = next(state.tasks)
        try:
            self._generate(state, body, slot)
        except Cancelled:
            state.emit(f"slot      release: id  {slot.id} | task {slot.task} | stop processing: n_tokens = "
                       f"{slot.prompt_tokens + slot.decoded}, truncated = 0")  # fmt: skip
        finally:
            with state.lock:
                slot.task, slot.decoded, slot.remain, slot.prompt_tokens = None, 0, 0, 0
            state.free.release()

    def _generate(self, state: RunnerState, body: dict[str, Any], slot: Slot) -> None:
        raw_plan = body.get("oasis_plan")
        plan: dict[str, Any] = raw_plan if isinstance(raw_plan, dict) else {}
        stream = bool(body.get("stream"))
        images = int(plan.get("images", 0))
        encoder_ms = float(plan.get("encoder_ms", 17.0))
        prompt_tokens = int(plan.get("prompt_tokens", 16))
        eval_tokens = max(1, int(plan.get("eval_tokens", body.get("n_predict") or 16)))
        with state.lock:
            slot.prompt_tokens, slot.remain = prompt_tokens, eval_tokens
        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        task = slot.task
        state.emit(f"slot launch_slot_: id  {slot.id} | task {task} | processing task, is_child = 0")
        started = time.monotonic()
        for index in range(images):
            state.emit("encoding image slice...")
            t = time.monotonic()
            self._sleep(encoder_ms / 1000.0)
            state.emit(f"image slice encoded in {round((time.monotonic() - t) * 1000)} ms")
            state.emit(f"decoding image batch {index + 1}/{images}, n_tokens_batch = 256")
            t = time.monotonic()
            self._sleep(encoder_ms * 2.4 / 1000.0)
            state.emit(f"image decoded (batch {index + 1}/{images}) in {round((time.monotonic() - t) * 1000)} ms")
        self._sleep(float(plan.get("prompt_ms", 5.0)) / 1000.0)
        prompt_s = time.monotonic() - started
        eval_started = time.monotonic()
        per_token_s = float(plan.get("eval_ms", 50.0)) / 1000.0 / eval_tokens
        stall_done = False
        text: list[str] = []
        for index in range(eval_tokens):
            if plan.get("wedge"):
                while True:  # stopping_deadlock: ignores cancellation; only a kill ends it
                    time.sleep(3600)
            if not stall_done:
                stall_done = self._stall(state)
            self._sleep(per_token_s)
            word = WORDS[index % len(WORDS)] + " "
            text.append(word)
            with state.lock:
                slot.decoded, slot.remain = index + 1, eval_tokens - index - 1
            if stream:
                self._event({"index": 0, "content": word, "stop": False, "id_slot": slot.id,
                             "tokens_predicted": index + 1, "tokens_evaluated": prompt_tokens})
        eval_s = time.monotonic() - eval_started
        with state.lock:
            c = state.counters
            c["prompt_tokens_total"] += prompt_tokens
            c["prompt_seconds_total"] += prompt_s
            c["tokens_predicted_total"] += eval_tokens
            c["tokens_predicted_seconds_total"] += eval_s
            c["n_decode_total"] += eval_tokens
        n_predict = body.get("n_predict")
        final = {"index": 0, "content": "" if stream else "".join(text), "stop": True, "id_slot": slot.id,
                 "tokens_predicted": eval_tokens, "tokens_evaluated": prompt_tokens,
                 "stop_type": "limit" if n_predict == eval_tokens else "eos", "truncated": False,
                 "timings": {"cache_n": 0, "prompt_n": prompt_tokens, "prompt_ms": prompt_s * 1000,
                             "predicted_n": eval_tokens, "predicted_ms": eval_s * 1000}}  # fmt: skip
        if stream:
            self._event(final)
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
        else:
            self._json(200, final)
        state.emit(timing_line(slot.id, task or 0, "prompt eval time", prompt_s * 1000, prompt_tokens, per_token=True))
        state.emit(timing_line(slot.id, task or 0, "       eval time", eval_s * 1000, eval_tokens, per_token=True))
        state.emit(timing_line(slot.id, task or 0, "      total time", (prompt_s + eval_s) * 1000,
                               prompt_tokens + eval_tokens, per_token=False))  # fmt: skip
        state.emit(f"slot      release: id  {slot.id} | task {task} | stop processing: n_tokens = "
                   f"{prompt_tokens + eval_tokens}, truncated = 0")  # fmt: skip

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


class RunnerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port clash must fail loudly so the emulator picks another

    def __init__(self, args: RunnerArgs, state: RunnerState, metrics: bool) -> None:
        self.state = state
        self.metrics = metrics
        super().__init__((args.host, args.port), Handler)


def run(args: RunnerArgs) -> int:
    import sys

    log = LlamaLog(timestamps="--no-log-timestamps" not in sys.argv, level=args.log_prefix) if args.shape == "llama-server" else None
    state = RunnerState(args, log)
    try:
        server = RunnerServer(args, state, metrics="--metrics" in sys.argv)
    except OSError as exc:
        print_line(f"couldn't bind HTTP server socket, hostname: {args.host}, port: {args.port}: {exc}")
        return 98
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True).start()
    started = time.monotonic()
    state.emit(f"srv    load_model: loading model '{args.model}'")
    time.sleep(max(0.0, float(os.environ.get(LOAD_MS_ENV, "0") or 0)) / 1000.0)
    with state.lock:
        state.loaded = True
    if log is not None:
        state.emit(f"srv    load_model: initializing, n_slots = {args.parallel}, n_ctx_slot = {args.ctx_size // args.parallel}")
        state.emit("srv          init: model loaded")
        state.emit(f"srv          init: listening on http://{args.host}:{args.port}")
    else:
        for line in go_runner_lines(args, load_s=time.monotonic() - started):
            print_line(line, stream=sys.stdout)
    while True:
        time.sleep(3600)
