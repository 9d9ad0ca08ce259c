"""HTTP with one strict *total* deadline per request, however slowly the bytes trickle in.

httpx's timeouts are per socket operation: a server that sends one byte every 0.1 s never trips
a 2 s read timeout and can hold a caller for minutes. DeadlineTransport is an httpx transport
over an httpcore connection pool whose sockets clip every connect, read and write to the time
left until `Deadline.at` (set by the caller around each request). Used by the Ollama client and
the llama-server probe; tests pass their own httpx transport instead (the one seam).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx


class Deadline:
    """The deadline of the request in progress (monotonic seconds), shared by the streams of one
    client, per thread (one client may serve several threads). Each socket read, write or
    connect gets at most the time left until it."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._local = threading.local()

    @property
    def at(self) -> float | None:
        return getattr(self._local, "at", None)

    @at.setter
    def at(self, value: float | None) -> None:
        self._local.at = value

    def clip(self, timeout: float | None, expired: type[Exception] = httpcore.ReadTimeout) -> float | None:
        if self.at is None:
            return timeout
        left = self.at - self.monotonic()
        if left <= 0:
            raise expired("the total deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, self._deadline.clip(timeout)), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        inner = super().connect_tcp(host, port, self._deadline.clip(timeout, httpcore.ConnectTimeout), local_address, socket_options)
        return _DeadlineStream(inner, self._deadline)


_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
)


def _httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    for theirs, ours in _HTTPCORE_ERRORS:
        if isinstance(exc, theirs):
            return ours(str(exc) or type(exc).__name__, request=request)
    return exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Any:
        try:
            yield from self._response.iter_stream()
        except Exception as exc:  # noqa: BLE001 - translated to httpx's own errors
            raise _httpx_error(exc, self._request) from None

    def close(self) -> None:
        self._response.close()


class DeadlineTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore connection pool whose sockets honour the shared
    deadline (httpx's own HTTPTransport takes no network backend), through public APIs only."""

    def __init__(self, deadline: Deadline) -> None:
        self._pool = httpcore.ConnectionPool(network_backend=_DeadlineBackend(deadline), max_connections=2,
                                             max_keepalive_connections=1, keepalive_expiry=30.0, retries=0)  # fmt: skip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),  # fmt: skip
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core)
        except Exception as exc:  # noqa: BLE001 - translated to httpx's own errors
            raise _httpx_error(exc, request) from None
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(response, request), extensions=response.extensions)  # fmt: skip

    def close(self) -> None:
        self._pool.close()
