"""Helpers for the proxy tests: a slow, counting upstream (a real HTTP server on loopback) and a
proxy started in-process on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb

from oasis_ops.proxy.service import ProxyService, plan_proxy
from oasis_ops.settings import load_settings


class CountingOllama:
    """Answers /api/generate and /api/chat in Ollama's NDJSON shapes, one token every `token_s`,
    and counts the requests in flight (what the proxy lets through). Modes: "ok", "500" (Ollama's
    error body), "midstream" (two tokens, then an in-band error line)."""

    def __init__(self, tokens: int = 5, token_s: float = 0.05) -> None:
        self.tokens = tokens
        self.token_s = token_s
        self.mode = "ok"
        self.in_flight = 0
        self.max_in_flight = 0
        self.order: list[str] = []  # prompts in the order they reached us
        self.arrivals: list[float] = []  # and when (time.monotonic())
        self.headers: list[dict[str, str]] = []
        self.disconnects = 0
        self.uploaded = 0  # bytes of the last /api/blobs upload
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"version": "0.12.6"} if self.path == "/api/version" else {"models": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                owner._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/api/blobs/"):  # a model upload: count the bytes, answer 201 as Ollama does
            remaining, received = int(handler.headers.get("Content-Length") or 0), 0
            while remaining > 0:
                chunk = handler.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                received += len(chunk)
                remaining -= len(chunk)
            self.uploaded = received
            handler.send_response(201)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.arrivals.append(time.monotonic())
            self.order.append(str(body["prompt"] if "prompt" in body else body.get("messages", [{}])[-1].get("content")))
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        try:
            if self.mode == "500":
                payload = json.dumps({"error": "llama runner process has terminated: signal: killed"}).encode()
                handler.send_response(500)
                handler.send_header("Content-Type", "application/json; charset=utf-8")
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
                return
            stream = body.get("stream") is not False
            lines = []
            for i in range(self.tokens):
                time.sleep(self.token_s)
                if self.mode == "midstream" and i == 2:
                    lines.append({"error": "an error was encountered while running the model: unexpected EOF"})
                    break
                lines.append({"model": body.get("model"), "response": f"t{i} ", "done": False})
                if stream and len(lines) == 1:
                    handler.send_response(200)
                    handler.send_header("Content-Type", "application/x-ndjson")
                    handler.send_header("Transfer-Encoding", "chunked")
                    handler.end_headers()
                if stream:
                    self._chunk(handler, json.dumps(lines[-1]).encode() + b"\n")
            if self.mode != "midstream":
                lines.append({"model": body.get("model"), "response": "", "done": True, "done_reason": "stop",
                              "prompt_eval_count": 7, "eval_count": self.tokens})  # fmt: skip
            if stream:  # the done line (or the in-band error), then the end of the chunked body
                self._chunk(handler, json.dumps(lines[-1]).encode() + b"\n")
                self._chunk(handler, b"")
            else:
                final = dict(lines[-1])
                final["response"] = "".join(line.get("response", "") for line in lines)
                payload = json.dumps(final).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json; charset=utf-8")
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            with self.lock:
                self.disconnects += 1
        finally:
            with self.lock:
                self.in_flight -= 1

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()


@contextmanager
def running_proxy(tmp_path: Path, upstream: str, **settings: Any) -> Iterator[ProxyService]:
    values = {"proxy_listen": "127.0.0.1:0", **settings}
    config = load_settings(env={}).replace(**values)
    plan = plan_proxy(config, db=str(tmp_path / "trials.duckdb"), upstream=upstream)
    service = ProxyService(config, plan).start()
    try:
        yield service
    finally:
        service.stop()


def trial_rows(db: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM trials ORDER BY started_at, trial_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def wait_for(fn: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
