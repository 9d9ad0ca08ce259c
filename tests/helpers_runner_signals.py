"""A stand-in llama-server for the runner-signal tests: real HTTP servers on 127.0.0.1:0.

`FakeLlamaServer` answers /slots and /metrics with recorded bodies (tests/fixtures/llama_server/)
that a test can swap while it runs; `SilentServer` accepts connections and never answers (what a
SIGSTOPped runner looks like from outside; with accept=False it does not even accept: the
kernel's backlog does); `TrickleServer` answers one byte at a time, slowly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llama_server"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def slots_with(decoded: int, *, busy: bool = True, task: int = 3) -> bytes:
    """The recorded busy /slots body with slot 0's task and n_decoded replaced."""
    slots = json.loads(fixture("slots_busy.json"))
    slots[0]["is_processing"] = busy
    slots[0]["id_task"] = task
    slots[0]["next_token"][0]["n_decoded"] = decoded
    return json.dumps(slots).encode()


def metrics_with(tokens_predicted_total: int) -> bytes:
    lines = []
    for line in fixture("metrics.txt").decode().splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            line = f"llamacpp:tokens_predicted_total {tokens_predicted_total}"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


METRICS_501 = (501, fixture("metrics_501.json"), "application/json; charset=utf-8")


class FakeLlamaServer:
    """routes: path -> (status, body, content type). Counts requests per path."""

    def __init__(self, routes: dict[str, tuple[int, bytes, str]] | None = None) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = dict(routes or {
            "/slots": (200, fixture("slots_busy.json"), "application/json; charset=utf-8"),
            "/metrics": METRICS_501,
        })  # fmt: skip
        self.hits: dict[str, int] = {}
        self.delay_s = 0.0  # answer this late (a runner starved of CPU)
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as llama-server

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with owner.lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                    status, body, ctype = owner.routes.get(self.path, (404, b'{"error":{"code":404,"message":"File Not Found"}}',
                                                                       "application/json"))  # fmt: skip
                time.sleep(owner.delay_s)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, path: str, body: bytes, status: int = 200, ctype: str = "application/json; charset=utf-8") -> None:
        with self.lock:
            self.routes[path] = (status, body, ctype)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> FakeLlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RawServer:
    def __init__(self, accept: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        if accept:
            self.thread = threading.Thread(target=self._accept_loop, daemon=True)
            self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Hold the connection, say nothing."""

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
        for conn in self.conns:
            conn.close()
        self.sock.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer(_RawServer):
    """Accepts (or, accept=False, leaves connections in the backlog) and never answers."""


class TrickleServer(_RawServer):
    """Answers 200 with a Content-Length body, one byte every `gap_s`: every read succeeds."""

    def __init__(self, gap_s: float = 0.1, length: int = 1000) -> None:
        self.gap_s = gap_s
        self.length = length
        super().__init__(accept=True)

    def serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {self.length}\r\n\r\n".encode())
            for _ in range(self.length):
                if self.stop.wait(self.gap_s):
                    return
                conn.sendall(b" ")
        except OSError:
            return


class HugeServer(_RawServer):
    """Answers a body of `size` bytes, with or without a Content-Length header (chunked)."""

    def __init__(self, size: int, declare: bool = True) -> None:
        self.size = size
        self.declare = declare
        super().__init__(accept=True)

    def serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            block = b"[" + b" " * 65534 + b"]"
            if self.declare:
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {self.size}\r\n\r\n".encode())
                sent = 0
                while sent < self.size and not self.stop.is_set():
                    part = block[: self.size - sent]
                    conn.sendall(part)
                    sent += len(part)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                sent = 0
                while sent < self.size and not self.stop.is_set():
                    conn.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                    sent += len(block)
                conn.sendall(b"0\r\n\r\n")
        except OSError:
            return


def wait_for(fn: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
