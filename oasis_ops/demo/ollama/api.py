"""The HTTP API of the emulated `ollama serve`: Ollama's endpoints in Ollama's shapes.

`GET|HEAD /`, `GET /api/version`, `GET /api/ps`, `GET /api/tags`, `POST /api/show`,
`POST /api/generate`, `POST /api/chat` (NDJSON streaming by default, one JSON object with
`"stream": false`), and the OpenAI-compatible `POST /v1/chat/completions`, `POST /v1/completions`
and `GET /v1/models` (openai_compat.py). Every request gets a Gin access line in server.log with the status Ollama's
handlers produce (see profiles.py for the abort statuses).

A generation: the request is queued with the scheduler (503 when the queue is full), waits
for its runner (a client leaving meanwhile: 499 `request canceled`), waits for one of the
runner's OLLAMA_NUM_PARALLEL slots, then streams the runner's `/completion` answer back. The
client is watched the whole time: when it goes away its hold on the runner ends at once (the
runner connection is closed, so llama.cpp cancels the task), and the access line says 200
when the stream had started, else 500.

Emulator-only endpoints (not Ollama's, never logged): `GET|POST /_demo/faults`,
`GET /_demo/host` (the simulated host; 404 when the emulator runs on the real host),
`GET /_demo/runners` (each runner's pid, engine, port, in-flight and waiting requests).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from oasis_ops.demo.ollama.goparse import KeepAliveError, parse_keep_alive
from oasis_ops.demo.ollama.home import InstalledModel
from oasis_ops.demo.ollama.netutil import peer_closed
from oasis_ops.demo.ollama.openai_compat import OpenAIShape, error_body, models_list
from oasis_ops.demo.ollama.runners import ClientLeft, Runner, RunnerGone
from oasis_ops.demo.ollama.scheduler import (
    ZERO_TIME,
    LoadedRunner,
    SchedulerError,
    expiry,
    wait_ready,
)
from oasis_ops.demo.ollama.servelog import go_time_json
from oasis_ops.errors import DataError, UsageError
from oasis_ops.probes.gguf import read_gguf_metadata
from oasis_ops.sampler.hostsource import DEMO_HEADER, is_loopback_url

if TYPE_CHECKING:
    from oasis_ops.demo.ollama.server import Emulator

RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")
RUNNER_EOF = "an error was encountered while running the model: unexpected EOF"
NO_ACCESS_LINE = -1  # a request Ollama drops without ever answering (nor logging) it
MAX_BODY_BYTES = 32 * 1024 * 1024
_OPTION_MAP = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p", "seed": "seed",
               "stop": "stop", "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
               "frequency_penalty": "frequency_penalty"}  # fmt: skip


def loopback_origin(origin: str) -> bool:
    """True for an Origin header naming a page served from this machine (http(s)://localhost,
    127.0.0.0/8, [::1]); "null" and every other site are foreign."""
    try:
        return urlsplit(origin.strip()).scheme in ("http", "https") and is_loopback_url(origin.strip())
    except ValueError:
        return False


def _parameter_count(text: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMB])", text)
    if not match:
        return 0
    return int(float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)])


class Handler(BaseHTTPRequestHandler):
    server: Emulator
    protocol_version = "HTTP/1.1"
    server_version = "ollama-emulator"
    openai: OpenAIShape | None = None  # per request (_start): a /v1 request answers in OpenAI's shapes
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def end_headers(self) -> None:
        # the one mark of the emulator (a real Ollama never sends it): only then does the console
        # ask the demo-only endpoints (/_demo/host, /_demo/runners)
        self.send_header(DEMO_HEADER, "emulator")
        super().end_headers()

    def _start(self) -> None:
        self.t0 = time.monotonic()
        self.status = 200
        self.openai = None

    def _access(self, status: int | None = None) -> None:
        if self.path.split("?", 1)[0].startswith("/_demo/"):
            return
        self.server.log.gin(status or self.status, time.monotonic() - self.t0, self.client_address[0],
                            self.command, self.path.split("?", 1)[0])  # fmt: skip

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, error_body(status, message) if self.openai is not None else {"error": message})

    def _body(self) -> dict[str, Any] | None:
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(400, "request body too large")
            return None
        length = int(declared)
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
        """Like Ollama's CORS check: a browser request from a foreign page gets 403. True when refused."""
        origin = self.headers.get("Origin")
        if origin is None or loopback_origin(origin):
            return False
        self._discard_body()
        self._error(403, f"origin not allowed: {origin[:100]}")
        return True

    def _client_gone(self) -> bool:
        return peer_closed(self.connection)

    # --- routing -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._start()
        if not self._cross_origin():
            if self.path in ("/", "/api/version"):
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
                self._json(200, {"version": self.server.profile.version})
            elif path == "/api/ps":
                self._json(200, {"models": self._ps()})
            elif path == "/api/tags":
                self._json(200, {"models": self._tags()})
            elif path == "/v1/models":
                self._json(200, models_list(self._tags()))
            elif path == "/_demo/faults":
                self._json(200, self.server.board.snapshot())
            elif path == "/_demo/host" and self.server.board.simulated_host:
                self._json(200, self.server.board.host_snapshot())
            elif path == "/_demo/gpu" and self.server.gpu is not None:
                self._json(200, self.server.gpu_answer())
            elif path == "/_demo/runners":
                self._json(200, {"runners": self._runners(), "version": self.server.profile.version,
                                 "host_mode": self.server.cfg.host_mode,
                                 "hog_pid": self.server.real_faults.hog_pid()})  # fmt: skip
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
            elif path in ("/v1/chat/completions", "/v1/completions"):  # Ollama's OpenAI-compatible API
                self.openai = OpenAIShape("chat" if path == "/v1/chat/completions" else "completion", body)
                status = self._generate(self.openai.native_request(), self.openai.native_kind)
            elif path == "/_demo/faults":
                self._faults(body)
            else:
                self._send(404, b"404 page not found", "text/plain")
        finally:
            if status != NO_ACCESS_LINE:
                self._access(status)

    # --- listing -----------------------------------------------------------------------------
    @staticmethod
    def _details(m: InstalledModel) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": m.info.family, "families": [m.info.family],
                "parameter_size": m.info.parameter_size, "quantization_level": m.info.quantization_level}

    def _ps(self) -> list[dict[str, Any]]:
        emu = self.server
        out = []
        runners = emu.scheduler.snapshot(lock_runners=emu.profile.ps_takes_runner_lock)
        listed = []
        for entry in runners:
            expires = entry.expires_at
            if expires == ZERO_TIME:
                # Not set until the first request ends: /api/ps shows now + keep-alive (PsHandler
                # up to 0.32.3, loadedModels from 0.32.4).
                expires = expiry(entry.session_s)
            listed.append((expires, entry))
        for expires, entry in sorted(listed, key=lambda pair: pair[0], reverse=True):
            m = entry.model
            out.append({
                "name": m.name, "model": m.name, "size": m.info.size, "digest": m.digest,
                "details": self._details(m), "expires_at": go_time_json(expires),
                # Memory accounting at load time: on the simulated GPU (--gpu), what was free at
                # the load; else the real engine runs on the CPU (0 in VRAM) and an emulated one
                # "fits the GPU" (a flash-attention spill never changes that: 100% GPU).
                "size_vram": entry.runner.vram_bytes if entry.runner.vram_bytes is not None else (
                    0 if m.info.engine == "real" else m.info.size),
                "context_length": emu.cfg.context_length,
            })  # fmt: skip
        return out

    def _tags(self) -> list[dict[str, Any]]:
        return [{
            "name": m.name, "model": m.name,
            "modified_at": go_time_json(datetime.fromtimestamp(m.modified_at).astimezone()),
            "size": m.manifest_size, "digest": m.digest, "details": self._details(m),
        } for m in sorted(self.server.models().values(), key=lambda m: m.modified_at, reverse=True)]  # fmt: skip

    def _runners(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.server.scheduler.snapshot(lock_runners=False):
            r = entry.runner
            out.append({"model": entry.model.name, "engine": r.engine, "pid": r.pid, "port": r.port,
                        "argv": r.argv, "blob": str(entry.model.blob), "alive": r.alive(),
                        "refs": entry.ref_count, "in_flight": r.in_flight, "waiting": r.waiting, "answering": r.answering,
                        "stopped_by_fault": r.stopped_by_fault, "loading": entry.loading,
                        "stopping": entry.expires_at <= datetime.now(UTC), "flash_attention": r.flash_attention,
                        "expires_at": go_time_json(entry.expires_at)})  # fmt: skip
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
        ])  # fmt: skip
        arch = m.info.architecture
        try:
            header = read_gguf_metadata(m.blob)
        except DataError:
            header = {}
        model_info: dict[str, Any] = {"general.architecture": arch,
                                      "general.parameter_count": _parameter_count(m.info.parameter_size)}
        model_info.update({k: v for k, v in header.items() if not k.startswith("tokenizer.")})
        self._json(200, {
            "license": "", "modelfile": modelfile, "parameters": "\n".join(params_lines),
            "template": m.info.template, "details": self._details(m), "model_info": model_info,
            "capabilities": list(m.info.capabilities),
            "modified_at": go_time_json(datetime.fromtimestamp(m.modified_at).astimezone()),
        })  # fmt: skip

    # --- generation ----------------------------------------------------------------------------
    def _generate(self, body: dict[str, Any], kind: str) -> int | None:
        emu = self.server
        name = str(body.get("model") or "")
        if not name:
            self._error(400, "model is required")
            return None
        model = emu.find_model(name)
        if model is None:
            self._error(404, f'model "{name}" not found, try pulling it first')
            return None
        raw_keep_alive = body.get("keep_alive")
        try:
            session = None if raw_keep_alive is None else parse_keep_alive(raw_keep_alive, 0.0)
        except KeepAliveError as exc:
            self._error(400, exc.message)
            return None
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        if empty and session == 0:
            emu.scheduler.expire_model(model)  # answered at once; the unload waits for in-flight work
            self._json(200, {**self._base(model, kind, ""), "done": True, "done_reason": "unload"})
            return None
        try:
            pending = emu.scheduler.get_runner(model, session)
        except SchedulerError as exc:
            self._error(exc.status, str(exc))
            return None
        try:
            if not wait_ready(pending, self._client_gone):
                self.close_connection = True
                # Loading: c.JSON(499, "request canceled"), nobody reads it. Still queued: Ollama
                # drops the request without a word (its handler never answers).
                return 499 if pending.picked else NO_ACCESS_LINE
            if pending.error is not None:
                self._error(pending.error.status, str(pending.error))
                return None
            assert pending.runner is not None
            if empty:
                self._json(200, {**self._base(model, kind, ""), "done": True, "done_reason": "load"})
                return None
            return self._complete(pending.runner, body, kind)
        finally:
            emu.scheduler.finished(pending)

    def _base(self, model: InstalledModel, kind: str, content: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model.name, "created_at": go_time_json(datetime.now(UTC))}
        if kind == "chat":
            out["message"] = {"role": "assistant", "content": content}
        else:
            out["response"] = content
        return out

    def _prompt(self, runner: Runner, body: dict[str, Any], kind: str) -> str:
        if kind == "generate" and body.get("raw"):
            return str(body.get("prompt") or "")
        if kind == "chat":
            messages = [{"role": str(m.get("role") or "user"), "content": str(m.get("content") or "")}
                        for m in body.get("messages") or [] if isinstance(m, dict)]  # fmt: skip
        else:
            messages = [{"role": "system", "content": str(body["system"])}] if body.get("system") else []
            messages.append({"role": "user", "content": str(body.get("prompt") or "")})
        return runner.apply_template(messages)

    def _runner_body(self, loaded: LoadedRunner, body: dict[str, Any], kind: str) -> dict[str, Any]:
        runner = loaded.runner
        raw_options = body.get("options")
        options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
        out: dict[str, Any] = {"prompt": self._prompt(runner, body, kind), "cache_prompt": True}
        num_predict = options.get("num_predict")
        out["n_predict"] = num_predict if isinstance(num_predict, int) and not isinstance(num_predict, bool) else -1
        for ours, theirs in _OPTION_MAP.items():
            if ours in options:
                out[theirs] = options[ours]
        if runner.engine == "emulated":
            out["oasis_plan"] = self.server.plan(body, kind, runner.flash_attention == "on", runner.cpu_share)
        return out

    def _complete(self, loaded: LoadedRunner, body: dict[str, Any], kind: str) -> int | None:
        runner = loaded.runner
        model = loaded.model
        ready = time.monotonic()
        stream = body.get("stream", True) is not False
        headers_sent = False

        def write_chunk(obj: dict[str, Any]) -> None:
            nonlocal headers_sent
            data = self.openai.events(obj) if self.openai is not None else json.dumps(obj).encode() + b"\n"
            if not headers_sent:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if self.openai is not None else "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                headers_sent = True
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        if not runner.acquire_slot(self._client_gone):
            self.close_connection = True
            return 500  # {"error": "context canceled"}, headers not sent yet
        text: list[str] = []
        final: dict[str, Any] | None = None
        failure = RUNNER_STOPPED
        try:
            request = self._runner_body(loaded, body, kind)
            events = runner.completion(request, self._client_gone)
            try:
                for event in events:
                    if event.get("stop"):
                        final = event
                        break
                    piece = str(event.get("content") or "")
                    text.append(piece)
                    if stream and piece:
                        write_chunk({**self._base(model, kind, piece), "done": False})
            finally:
                events.close()  # closes the runner connection: a runner still generating cancels
        except ClientLeft:
            self.close_connection = True
            return 200 if headers_sent else 500
        except OSError:  # our client's socket broke while we wrote to it
            self.close_connection = True
            return 200 if headers_sent else 500
        except RunnerGone as exc:
            final = None
            failure = RUNNER_EOF if exc.answered else RUNNER_STOPPED
        finally:
            runner.release_slot()
        if final is None:
            if headers_sent:  # the stream had started: an error line, status 200
                with contextlib.suppress(OSError):
                    write_chunk({"error": failure})
                    self.wfile.write(b"0\r\n\r\n")
                return 200
            self._error(500, failure)
            return 500
        raw_timings = final.get("timings")
        timings: dict[str, Any] = raw_timings if isinstance(raw_timings, dict) else {}
        end = time.monotonic()
        summary = {
            "done": True, "done_reason": "length" if final.get("stop_type") == "limit" else "stop",
            "total_duration": int((end - self.t0) * 1e9),
            "load_duration": int((ready - self.t0) * 1e9),
            "prompt_eval_count": int(timings.get("prompt_n", final.get("tokens_evaluated", 0)) or 0),
            "prompt_eval_duration": int(float(timings.get("prompt_ms", 0) or 0) * 1e6),
            "eval_count": int(timings.get("predicted_n", final.get("tokens_predicted", 0)) or 0),
            "eval_duration": int(float(timings.get("predicted_ms", 0) or 0) * 1e6),
        }  # fmt: skip
        try:
            if stream:
                write_chunk({**self._base(model, kind, ""), **summary})
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            else:
                answer = {**self._base(model, kind, "".join(text)), **summary}
                self._json(200, self.openai.final(answer) if self.openai is not None else answer)
        except OSError:
            self.close_connection = True
        return 200

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
