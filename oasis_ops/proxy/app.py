"""The proxy itself: an ASGI application that forwards every request to Ollama unchanged,
streams answers back as they arrive, and records each model call as a trial.

Per trial request: read the body (at most `max_body_bytes`: 413 beyond), wait at the gate (FIFO;
503 when the queue is full; the wait ends early if the client leaves), send it upstream, pass
every chunk of the answer through as it comes (one NDJSON line or SSE event per token when the
client asked for a stream), and record one row: `ok` when the whole answer arrived without an
error, `error` with the reason (an upstream error status, an error inside the stream, Ollama
unreachable), `timeout` when the client disconnected first: that is what the harness saw (its
own timeout, or an abort). Closing our upstream connection then makes Ollama cancel the
generation, as the client's own disconnect would have.

Other requests (`/api/ps`, `/api/tags`, `/v1/models`, a load or unload) pass straight through,
neither queued nor recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from oasis_ops.access import bearer_refusal
from oasis_ops.proxy.gate import FairGate, QueueFull
from oasis_ops.proxy.record import (
    TRIAL_PATHS,
    RequestInfo,
    Tail,
    classify,
    error_in_body,
    token_counts,
    upstream_reason,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1 connection-specific fields: never forwarded by a proxy
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length"})  # fmt: skip


@dataclass
class ProxyCounters:
    """What the proxy has seen (state.json and the exporter read these)."""

    requests: int = 0
    trials: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0, "timeout": 0})
    upstream_in_flight: int = 0
    upstream_max_in_flight: int = 0
    refused_queue_full: int = 0
    refused_access: int = 0


@dataclass
class ProxyConfig:
    upstream: str
    run_id: str
    bind_host: str = "127.0.0.1"
    access_secret: str = ""  # set: every request needs `Authorization: Bearer <secret>`
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024
    connect_timeout_s: float = 5.0


def _json_error(status: int, message: str, openai: bool) -> tuple[int, bytes]:
    """An error body in the shape the client's API uses (Ollama: {"error": "..."})."""
    body: dict[str, Any] = {"error": {"message": message, "type": "proxy_error", "param": None, "code": None}} \
        if openai else {"error": message}  # fmt: skip
    return status, json.dumps(body).encode()


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ClientGone(Exception):
    """The client disconnected."""


class ProxyApp:
    def __init__(
        self,
        config: ProxyConfig,
        gate: FairGate,
        record: Callable[[dict[str, Any]], None],
        *,
        client: httpx.AsyncClient | None = None,
        on_refused_access: Callable[[str, str], None] | None = None,
        guard: Any = None,  # access.LoginGuard: failed secrets per client address
        trial_ids: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.record = record
        self.client = client
        self.on_refused_access = on_refused_access
        self.guard = guard
        self.counters = ProxyCounters()
        self._next_id = trial_ids or self._sequence()

    @staticmethod
    def _sequence() -> Callable[[], int]:
        base = int(time.time() * 1000) * 1_000_000  # unique across restarts; fits a BIGINT
        count = iter(range(1, 1_000_000_000))
        return lambda: base + next(count)

    def upstream_client(self) -> httpx.AsyncClient:
        if self.client is None:
            timeout = httpx.Timeout(connect=self.config.connect_timeout_s, read=None, write=60.0, pool=None)
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
            self.client = httpx.AsyncClient(base_url=self.config.upstream, timeout=timeout, limits=limits,
                                            trust_env=False)  # fmt: skip
        return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    # --- ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.counters.requests += 1
        path = scope.get("path", "")
        openai = path.startswith("/v1/")
        headers = dict((k.lower(), v) for k, v in scope.get("headers", []))
        refusal = self._access_refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _respond(send, *_json_error(status, message, openai))
            return
        if scope.get("method") != "POST" or path not in TRIAL_PATHS:
            # not a model call (tags, ps, pulls, blob uploads of any size): streamed both ways, unrecorded
            body_done = asyncio.Event()
            await self._forward(scope, self._body_stream(receive, body_done), send, receive, None, openai, body_done)
            return
        try:
            body = await self._read_body(receive)
        except ClientGone:
            return
        except ValueError as exc:
            await _respond(send, *_json_error(413, str(exc), openai))
            return
        info = classify("POST", path, body)
        if not info.is_trial:
            await self._forward(scope, body, send, receive, None, openai)
            return
        await self._trial(scope, body, send, receive, info, openai)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _access_refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        client = (scope.get("client") or ("?", 0))[0]
        refusal = bearer_refusal(host_header=headers.get(b"host", b"").decode("latin-1"),
                                 authorization=headers.get(b"authorization", b"").decode("latin-1"), client=client,
                                 bind_host=self.config.bind_host, allowed_hosts=self.config.allowed_hosts,
                                 secret=self.config.access_secret, guard=self.guard, what="proxy")  # fmt: skip
        if refusal is None:
            return None
        status, text, refused_secret = refusal
        if status != 403:
            self.counters.refused_access += 1
        if refused_secret is not None and self.on_refused_access is not None:
            self.on_refused_access(client, refused_secret)
        return status, text

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                raise ValueError(f"request body over {self.config.max_body_bytes // (1024 * 1024)} MB "
                                 "(the proxy_max_body_mb setting)")  # fmt: skip
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # --- a trial ------------------------------------------------------------------------------
    async def _trial(self, scope: Scope, body: bytes, send: Send, receive: Receive, info: RequestInfo,
                     openai: bool) -> None:  # fmt: skip
        started_at = datetime.now(UTC)
        start = time.monotonic()
        disconnected = asyncio.ensure_future(self._wait_disconnect(receive))
        row: dict[str, Any] = {"trial_id": self._next_id(), "run_id": self.config.run_id, "model": info.model,
                               "started_at": started_at}  # fmt: skip
        queued_s = 0.0
        try:
            entering = asyncio.ensure_future(self.gate.enter())
            waiting: set[asyncio.Future[Any]] = {entering, disconnected}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if entering not in done:
                entering.cancel()
                try:
                    await entering
                except (asyncio.CancelledError, QueueFull):
                    pass
                else:  # it was admitted as the client left: give the slot back
                    self.gate.leave()
                queued_s = time.monotonic() - start
                self._finish(row, start, queued_s, "timeout",
                             f"client disconnected after {queued_s:.1f} s while held in the proxy queue"
                             f"{self._held_words()}", {})  # fmt: skip
                return
            try:
                entering.result()
            except QueueFull as exc:
                self.counters.refused_queue_full += 1
                message = f"oasis-ops proxy queue is full: {exc}"
                await _respond(send, *_json_error(503, message, openai))
                self._finish(row, start, time.monotonic() - start, "error", message, {})
                return
            queued_s = time.monotonic() - start
            try:
                outcome = await self._forward(scope, body, send, receive, disconnected, openai)
            finally:
                self.gate.leave()
            status, reason, tail = outcome
            self._finish(row, start, queued_s, status, reason, token_counts(tail) if tail else {})
        finally:
            if not disconnected.done():
                disconnected.cancel()

    def _held_words(self) -> str:
        if self.gate.hold_reason:
            return f" ({self.gate.hold_reason})"
        if self.gate.paused:
            return " (paused)"
        return f" (max concurrency {self.gate.limit})"

    def _finish(self, row: dict[str, Any], start: float, queued_s: float, status: str, reason: str | None,
                counts: dict[str, int | None]) -> None:  # fmt: skip
        elapsed = time.monotonic() - start
        row.update(finished_at=row["started_at"] + timedelta(seconds=elapsed), latency_ms=round(elapsed * 1000, 3),
                   status=status, error=reason, queued_ms=round(queued_s * 1000, 3), **counts)  # fmt: skip
        self.counters.trials += 1
        self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
        self.record(row)

    @staticmethod
    async def _wait_disconnect(receive: Receive, after: asyncio.Event | None = None) -> None:
        if after is not None:  # the request body is still being read from `receive`
            await after.wait()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    @staticmethod
    async def _body_stream(receive: Receive, done: asyncio.Event) -> AsyncIterator[bytes]:
        """The request body as it arrives (never held whole: a model upload can be gigabytes)."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                done.set()
                return

    # --- forwarding -------------------------------------------------------------------------------
    def _upstream_headers(self, scope: Scope, streamed: bool = False) -> list[tuple[bytes, bytes]]:
        out = []
        for key, value in scope.get("headers", []):
            name = key.lower()
            if name == b"content-length" and streamed:
                out.append((name, value))  # a streamed body keeps its length (else httpx would send it chunked)
                continue
            if name in HOP_BY_HOP:
                continue
            if name == b"authorization" and self.config.access_secret:
                continue  # our secret is not Ollama's business
            out.append((name, value))
        return out

    async def _forward(self, scope: Scope, body: bytes | AsyncIterator[bytes], send: Send, receive: Receive,
                       disconnected: asyncio.Future[None] | None, openai: bool,
                       body_done: asyncio.Event | None = None) -> tuple[str, str | None, bytes]:  # fmt: skip
        """Send upstream and stream the answer back: (status, reason, tail of the body)."""
        if disconnected is None:
            disconnected = asyncio.ensure_future(self._wait_disconnect(receive, body_done))
            own_watch = True
        else:
            own_watch = False
        client = self.upstream_client()
        query = scope.get("query_string", b"").decode("latin-1")
        url = scope.get("path", "/") + (f"?{query}" if query else "")
        streamed = not isinstance(body, bytes)
        request = client.build_request(scope.get("method", "GET"), url, headers=self._upstream_headers(scope, streamed),
                                       content=body)  # fmt: skip
        self.counters.upstream_in_flight += 1
        self.counters.upstream_max_in_flight = max(self.counters.upstream_max_in_flight, self.counters.upstream_in_flight)
        tail = Tail()
        try:
            sending = asyncio.ensure_future(client.send(request, stream=True))
            first: set[asyncio.Future[Any]] = {sending, disconnected}
            done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if sending not in done:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
                if sending.done() and not sending.cancelled() and sending.exception() is None:
                    await sending.result().aclose()
                return "timeout", "client disconnected before Ollama answered", b""
            try:
                response = sending.result()
            except ClientGone:
                return "timeout", "client disconnected while sending its request", b""
            except httpx.HTTPError as exc:
                reason = f"upstream unreachable: {type(exc).__name__}: {exc}".strip().rstrip(":")
                await _respond(send, *_json_error(502, f"oasis-ops proxy: Ollama at {self.config.upstream} "
                                                       f"did not answer ({type(exc).__name__})", openai))  # fmt: skip
                return "error", reason[:300], b""
            try:
                headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
                length = response.headers.get("content-length")
                if length is not None:  # the raw bytes are passed through, so their length holds
                    headers.append((b"content-length", length.encode()))
                await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
                if response.status_code < 500:
                    self.gate.probe_answered()  # the runner answers again (after a recovery hold)
                pump = asyncio.ensure_future(self._pump(response, send, tail))
                streaming: set[asyncio.Future[Any]] = {pump, disconnected}
                finished, _ = await asyncio.wait(streaming, return_when=asyncio.FIRST_COMPLETED)
                if pump not in finished:
                    pump.cancel()
                    await asyncio.gather(pump, return_exceptions=True)
                    return "timeout", "client disconnected before the answer was complete", tail.data
                try:
                    pump.result()
                except httpx.HTTPError as exc:
                    return "error", f"upstream broke off the answer: {type(exc).__name__}: {exc}"[:300], tail.data
            finally:
                await response.aclose()
        finally:
            self.counters.upstream_in_flight -= 1
            if own_watch and not disconnected.done():
                disconnected.cancel()
        if response.status_code >= 400:
            return "error", upstream_reason(response.status_code, tail.data), tail.data
        in_band = error_in_body(tail.data)
        if in_band is not None:
            return "error", f"error in the answer: {in_band}", tail.data
        return "ok", None, tail.data

    @staticmethod
    async def _pump(response: httpx.Response, send: Send, tail: Tail) -> None:
        async for chunk in response.aiter_raw():
            if chunk:
                tail.add(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
