"""The exporter's HTTP server: `/metrics` in Prometheus' text format, under the console's access rule.

Loopback by default. Another address is refused (one line, exit 2) unless an access secret is
configured; then every scrape must carry `Authorization: Bearer <secret>` (Prometheus:
`authorization: {credentials_file: ...}` in the scrape config), compared in constant time, wrong
secrets rate-limited per client. The Host header is checked as the dashboard checks it (a DNS
rebinding guard). A scrape that fails inside the collector answers 500 with one line; the server
keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oasis_ops.access import LoginGuard, bearer_refusal, check_bind, parse_listen
from oasis_ops.errors import UsageError

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]


class MetricsApp:
    """The WSGI app: `/metrics` (and `/` pointing at it)."""

    def __init__(self, registry: CollectorRegistry, *, bind_host: str, access_secret: str = "",
                 allowed_hosts: Iterable[str] = (), guard: LoginGuard | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.bind_host = bind_host
        self.access_secret = access_secret
        self.allowed_hosts = tuple(allowed_hosts)
        self.guard = guard or LoginGuard()
        self.refused = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        refusal = self._refusal(environ)
        if refusal is not None:
            status, text = refusal
            return _text(start_response, status, text)
        path = environ.get("PATH_INFO") or "/"
        if path == "/":
            return _text(start_response, "200 OK", "oasis-ops exporter: metrics at /metrics\n")
        if path != "/metrics":
            return _text(start_response, "404 Not Found", "not found: the metrics are at /metrics\n")
        try:
            body = generate_latest(self.registry)
        except Exception as exc:  # noqa: BLE001 - one failed scrape is one 500, never a dead exporter
            log.warning("scrape failed: %s", exc)
            return _text(start_response, "500 Internal Server Error", f"scrape failed: {type(exc).__name__}: {exc}\n")
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    def _refusal(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        refusal = bearer_refusal(host_header=environ.get("HTTP_HOST"), authorization=str(environ.get("HTTP_AUTHORIZATION") or ""),
                                 client=str(environ.get("REMOTE_ADDR") or "?"), bind_host=self.bind_host,
                                 allowed_hosts=self.allowed_hosts, secret=self.access_secret, guard=self.guard, what="exporter")  # fmt: skip
        if refusal is None:
            return None
        status, text, _ = refusal
        if status != 403:
            self.refused += 1
        return f"{status} {HTTPStatus(status).phrase}", text + "\n"


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return  # one line per scrape would flood the sampler's log


class _ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        # A thread per scrape: a slow reader must not hold the next scrape (or the sampler) up.
        threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken client connection
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class MetricsServer:
    """`start()` serves `registry` on host:port in a daemon thread; `stop()` ends it."""

    def __init__(self, registry: CollectorRegistry, listen: str, *, access_secret: str = "", allowed_hosts: Iterable[str] = ()) -> None:
        self.host, port = parse_listen(listen)
        check_bind(self.host, access_secret)  # off loopback only with a secret, as the dashboard
        self.app = MetricsApp(registry, bind_host=self.host, access_secret=access_secret, allowed_hosts=allowed_hosts)
        try:
            self._server = make_server(self.host, port, self.app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise UsageError(f"the exporter could not listen on {listen}: {exc.strerror or exc}") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="oasis-exporter", daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
