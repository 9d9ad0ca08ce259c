"""Who may use the dashboard (its buttons kill processes).

Loopback by default. Off loopback only with an access secret (the `access_secret` setting: the
environment or a settings file, never a command-line flag, where `ps` would show it to every
user of the machine); every session then signs in first. A wrong secret is audited and
rate-limited per client address. Host headers are checked against DNS rebinding: bound to
loopback, only loopback names; bound elsewhere, IP literals, this machine's names and the
`allowed_hosts` setting.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from oasis_ops.errors import UsageError

MIN_SECRET_CHARS = 12
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback_name(name: str) -> bool:
    name = name.strip().lower().strip("[]")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def check_bind(host: str, secret: str) -> None:
    """Refuse (UsageError, exit 2) a bind off loopback without a usable access secret."""
    if is_loopback_name(host):
        return
    if not secret:
        raise UsageError(
            f"refusing to listen on {host or '*'} without an access secret: anyone who can reach it could use the "
            "console, kill buttons included",
            hint="set OASIS_OPS_ACCESS_SECRET (or access_secret in the settings file) to a secret of "
            f"{MIN_SECRET_CHARS}+ characters, or bind 127.0.0.1 and use an SSH tunnel",
        )
    if len(secret) < MIN_SECRET_CHARS:
        raise UsageError(
            f"the access secret is {len(secret)} characters: too short to expose the console on {host}",
            hint=f"use at least {MIN_SECRET_CHARS} characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)",
        )


def secret_matches(given: str, secret: str) -> bool:
    """Constant-time comparison (of digests, so the length of the secret does not leak either)."""
    if not secret:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(secret.encode()).digest())


@functools.lru_cache(maxsize=1)
def machine_names() -> frozenset[str]:
    """This machine's host name and FQDN, looked up once (getfqdn may ask DNS: never per page run)."""
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return frozenset(n for n in names if n)


def host_name_of(header: str) -> str:
    """The name part of a Host header: `[::1]:8501` -> `::1`, `example:8501` -> `example`."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_header_allowed(host_header: str | None, bind_host: str, allowed_hosts: Iterable[str] = (),
                        names: Callable[[], frozenset[str]] = machine_names) -> bool:  # fmt: skip
    """Whether a request's Host header may reach a console bound to `bind_host`.

    Streamlit does not check Host, so a web page whose name is re-pointed at the console's
    address (DNS rebinding) could drive it, Recover buttons included. Bound to loopback, only
    loopback names pass. Bound elsewhere: IP literals (a browser that typed an address cannot be
    rebound), this machine's names, the bind name and `allowed_hosts` ("*" allows any name).
    A missing header (not a browser) is allowed."""
    if not host_header:
        return True
    name = host_name_of(host_header).lower()
    if is_loopback_name(bind_host):
        return is_loopback_name(name)
    allowed = {h.strip().lower() for h in allowed_hosts if h.strip()}
    if "*" in allowed:
        return True
    if is_loopback_name(name) or _is_ip_literal(name):
        return True
    return name in allowed or name == bind_host.strip().lower() or name in names()


class LoginGuard:
    """Failed sign-ins per client address: more than `max_failures` within `window_s` locks that
    client out until the oldest failure leaves the window. Bounded: at most `max_clients`
    addresses are remembered (the least recently seen go first); one lock for all threads."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, max_clients: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        return failures

    def wait_s(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if len(failures) < self.max_failures:
                return 0.0
            return max(0.0, self.window_s - (now - failures[0]))

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            failures.append(now)
            self._failures[client] = failures
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (loopback) -> (host, port); UsageError otherwise."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"listen address {value!r} is not HOST:PORT (e.g. 127.0.0.1:11435)") from None
    if not 0 <= port <= 65535:  # 0: any free port (the one chosen is printed)
        raise UsageError(f"listen port {port} is outside 0..65535")
    return host, port


def bearer_refusal(*, host_header: str | None, authorization: str, client: str, bind_host: str,
                   allowed_hosts: Iterable[str], secret: str, guard: LoginGuard | None,
                   what: str) -> tuple[int, str, str | None] | None:  # fmt: skip
    """Whether an HTTP request (not a dashboard session) may pass: None, or (status, one-line
    text, the refused secret's kind for the audit: "no secret given" / "wrong secret", None for
    a bad Host or a locked-out client). The proxy and the exporter share it: the Host guard
    always, then, when a secret is set, `Authorization: Bearer <secret>` rate-limited per client."""
    if not host_header_allowed(host_header, bind_host, allowed_hosts):
        return 403, f"host {host_header!r} is not allowed (DNS rebinding guard); see the allowed_hosts setting", None
    if not secret:
        return None
    if guard is not None and guard.wait_s(client) > 0:
        return 429, f"too many wrong secrets from {client}; try again in {guard.wait_s(client):.0f} s", None
    token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    if secret_matches(token, secret):
        if guard is not None:
            guard.succeeded(client)
        return None
    if guard is not None:
        guard.failed(client)
    return 401, f"this oasis-ops {what} needs `Authorization: Bearer <access secret>`", "no secret given" if not token else "wrong secret"


__all__ = ["LoginGuard", "bearer_refusal", "check_bind", "host_header_allowed", "is_loopback_name", "parse_listen", "secret_matches"]
