"""What the recording proxy adds to a request, against a direct call to the same upstream in the
same run (alternating direct and proxied calls, so drift hits both alike):

  per request    a non-streamed /api/generate answered at once by a loopback upstream (the
                 proxy's own cost: an extra hop, the body read, the gate, the tail, one row)
  per token      a streamed answer of 1,000 NDJSON lines, (proxied - direct) / 1,000
  real runner    /api/generate of 16 tokens on the demo's llama.cpp runner (smollm2), to put
                 the overhead beside what a request really costs, and a stream of 128 tokens
                 (one NDJSON line per token as the runner makes it: the per-chunk cost)
  start-up, RSS  `oasis-ops proxy` as typed, until it answers; its RSS after the runs

    .venv/bin/python -m bench proxy
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import ROOT, quick, write_result

STREAM_TOKENS = 1000
REAL_STREAM_TOKENS = 128


class InstantOllama:
    """/api/generate answered at once: one JSON object, or `num_predict` NDJSON lines."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as Go's net/http (Ollama) does: no 40 ms delayed-ACK stalls

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(b'{"version":"0.12.6"}')

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                n = int((body.get("options") or {}).get("num_predict") or 1)
                if body.get("stream") is False:
                    self._send(json.dumps({"model": body.get("model"), "response": "x" * n, "done": True,
                                           "prompt_eval_count": 5, "eval_count": n}).encode())  # fmt: skip
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(n):
                    line = b'{"model":"m","response":"x","done":false}\n'
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                final = json.dumps({"model": "m", "response": "", "done": True, "eval_count": n}).encode() + b"\n"
                self.wfile.write(f"{len(final):x}\r\n".encode() + final + b"\r\n0\r\n\r\n")

            def _send(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_proxy(upstream: str, work: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_")}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "oasis_ops", "proxy", "--db", str(work / "trials.duckdb"), "--upstream", upstream,
                             "--listen", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/api/version", timeout=0.5).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > 60:
            raise RuntimeError("the proxy did not start")
        time.sleep(0.01)


def alternate(direct: Callable[[], None], proxied: Callable[[], None], runs: int) -> tuple[float, float]:
    """Median seconds of each, run alternately."""
    a, b = [], []
    for _ in range(runs):
        for fn, out in ((direct, a), (proxied, b)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def measure() -> dict[str, float]:
    runs = 60 if quick() else 300
    upstream = InstantOllama()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="oasis-bench-proxy-") as tmp:
        proc, url, startup = start_proxy(upstream.url, Path(tmp))
        out["startup_s"] = startup
        try:
            with httpx.Client(timeout=30) as client:
                plain = {"model": "m", "prompt": "p", "stream": False, "options": {"num_predict": 8}}
                streamed = {"model": "m", "prompt": "p", "options": {"num_predict": STREAM_TOKENS}}

                def call(base: str, body: dict[str, Any]) -> Callable[[], None]:
                    def go() -> None:
                        with client.stream("POST", base + "/api/generate", json=body) as resp:
                            for _ in resp.iter_raw():
                                pass

                    return go

                alternate(call(upstream.url, plain), call(url, plain), 20)  # warm both paths
                out["direct_request_s"], out["proxied_request_s"] = alternate(call(upstream.url, plain), call(url, plain), runs)
                direct_stream, proxied_stream = alternate(call(upstream.url, streamed), call(url, streamed), max(10, runs // 10))
                out["direct_stream_s"], out["proxied_stream_s"] = direct_stream, proxied_stream
                out["per_token_us"] = (proxied_stream - direct_stream) / STREAM_TOKENS * 1e6
            out["proxy_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 1e6
            out.update(_real_runner(Path(tmp)))
        finally:
            proc.terminate()
            proc.wait(30)
            upstream.close()
    out["per_request_ms"] = (out["proxied_request_s"] - out["direct_request_s"]) * 1000
    return out


def _real_runner(work: Path) -> dict[str, float]:
    from oasis_ops.demo.ollama.home import REAL_MODEL, real_engine_available
    from oasis_ops.demo.ollama.process import EmulatorProcess

    if not real_engine_available():
        return {}
    emulator = EmulatorProcess(work / "home").start()
    proc = None
    try:
        (work / "real").mkdir()
        proc, url, _ = start_proxy(emulator.url, work / "real")  # its own trial DB and control directory
        body = {"model": REAL_MODEL, "prompt": "Name three colours.", "stream": False, "options": {"num_predict": 16, "seed": 1}}
        with httpx.Client(timeout=60) as client:
            def call(base: str) -> Callable[[], None]:
                return lambda: client.post(base + "/api/generate", json=body).raise_for_status()

            def stream(base: str) -> Callable[[], None]:
                def go() -> None:
                    tokens = {**body, "prompt": "Tell me a very long story about a lighthouse keeper.", "stream": True,
                              "options": {"num_predict": REAL_STREAM_TOKENS, "seed": 1}}
                    with client.stream("POST", base + "/api/generate", json=tokens) as resp:
                        chunks = sum(1 for _ in resp.iter_lines())
                    assert chunks > REAL_STREAM_TOKENS // 2, chunks  # really token by token

                return go

            alternate(call(emulator.url), call(url), 3)
            direct, proxied = alternate(call(emulator.url), call(url), 10 if quick() else 30)
            direct_stream, proxied_stream = alternate(stream(emulator.url), stream(url), 5 if quick() else 15)
        return {"real_direct_s": direct, "real_proxied_s": proxied, "real_direct_stream_s": direct_stream,
                "real_proxied_stream_s": proxied_stream,
                "real_per_token_us": (proxied_stream - direct_stream) / REAL_STREAM_TOKENS * 1e6}  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        emulator.stop()


def rows(m: dict[str, float]) -> list[dict[str, Any]]:
    """bench_cost's table rows."""
    real = ""
    if "real_direct_s" in m:
        real = (f"; a real 16-token request: {m['real_direct_s'] * 1000:.0f} ms direct, "
                f"{m['real_proxied_s'] * 1000:.0f} ms proxied")  # fmt: skip
    return [
        {"what": "proxy overhead per request (instant upstream)", "whole_s": None, "rss_mb": m["proxy_rss_mb"],
         "inproc_s": m["per_request_ms"] / 1000,
         "vs": f"direct {m['direct_request_s'] * 1000:.2f} ms, proxied {m['proxied_request_s'] * 1000:.2f} ms{real}",
         "target": "", "met": None},
        {"what": f"proxy overhead per streamed token ({STREAM_TOKENS} lines)", "whole_s": m["startup_s"], "rss_mb": None,
         "inproc_s": m["per_token_us"] / 1e6,
         "vs": f"{m['per_token_us']:.1f} us/token; stream direct {m['direct_stream_s'] * 1000:.0f} ms, "
               f"proxied {m['proxied_stream_s'] * 1000:.0f} ms" + (f"; real runner {m['real_per_token_us']:.0f} us/token "
               f"({REAL_STREAM_TOKENS} tokens: {m['real_direct_stream_s'] * 1000:.0f} vs {m['real_proxied_stream_s'] * 1000:.0f} ms)"
               if "real_per_token_us" in m else "") + "; whole = start-up until it answers",
         "target": "", "met": None},
    ]  # fmt: skip


def main() -> int:
    m = measure()
    for key, value in m.items():
        print(f"  {key:<20} {value:.4g}")
    print(f"results: {write_result('bench_proxy', m)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
