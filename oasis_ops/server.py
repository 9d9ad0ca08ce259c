"""Start the Streamlit dashboard (and other child services) as child processes, and stop them.

Streamlit alone listens on every interface, so the server is always started with an explicit
`--server.address` (127.0.0.1 unless the settings say otherwise). The resolved settings reach
the app through `OASIS_OPS_*` environment variables, which `load_settings()` reads there.

`run_services()` is the one supervisor loop shared by `oasis-ops dashboard` and `oasis-ops
demo`: start a list of services in order, wait until one dies or we are told to stop, then
stop them all in reverse order.
"""

from __future__ import annotations

import collections
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

import httpx

from oasis_ops.access import check_bind, host_header_allowed  # noqa: F401 (host_header_allowed: for the pages)
from oasis_ops.errors import ServerError
from oasis_ops.settings import SETTINGS, Settings

ROOT = Path(__file__).resolve().parent.parent
APP_PATH = ROOT / "app.py"
# Settings holding file paths: made absolute before they reach the child, whose cwd differs.
PATH_SETTINGS = ("db", "sidecar", "control_dir", "snapshot_dir", "server_log", "ollama_models")
# Not a setting: set by `oasis-ops demo` so the app shows its "this is a demo" banner.
DEMO_DIR_ENV = "OASIS_OPS_DEMO_DIR"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/oasis-ops` (default `~/.cache/oasis-ops`): demo data, server logs."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "oasis-ops"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Raise ServerError when `port` on `host` cannot be bound (Streamlit would exit with less help)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            # Same option the server uses, so a port in TIME_WAIT does not count as busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServerError(f"port {port} on {host} is already in use", hint="choose another with --port") from None
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="check --host") from None


def connect_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_url(host: str, port: int, path: str = "/") -> str:
    target = connect_host(host)
    target = f"[{target}]" if ":" in target else target
    return f"http://{target}:{port}{path}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The `OASIS_OPS_*` variables that make `load_settings()` in a child return `settings`."""
    env: dict[str, str] = {}
    for s in SETTINGS:
        value = settings.values[s.name]
        if s.name in PATH_SETTINGS and value:
            value = str(Path(str(value)).expanduser().resolve())
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        env[s.env] = text
    return env


class Service(Protocol):
    """Something `run_services` starts, watches and stops (a child process, a thread...)."""

    name: str

    def start(self) -> None:
        """Start and return once the service is ready (raise ServerError otherwise)."""

    def poll(self) -> int | None:
        """None while running; an exit code once it has ended."""

    def stop(self) -> None:
        """Stop it; safe to call more than once and on a service that never started."""


class ChildService:
    """A child process in its own session, stopped with SIGTERM then SIGKILL.

    `ready` is called repeatedly after spawning until it returns True (or the startup times
    out, or the child exits: both raise ServerError with the end of the child's log).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready: Callable[[], bool] | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready = ready
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        if self.process is not None:
            raise ServerError(f"{self.name} already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        try:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the child in order.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log if self._log else None,
                stderr=subprocess.STDOUT if self._log else None,
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise ServerError(f"cannot start {self.name}: {exc}") from None
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        if self.ready is None:
            return
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.poll()
            if code is not None:
                raise ServerError(f"{self.name} exited with code {code} while starting{self._log_tail()}")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name} was not ready after {self.startup_timeout_s:.0f} s{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            tail = collections.deque(fh, maxlen=lines)
        text = b"".join(tail).decode("utf-8", "replace").strip()
        return f"; last lines of {self.log_path}:\n{text}" if text else ""

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout_s)
        elif proc is not None:
            # The leader is gone; its group may still hold helpers (none expected: be sure).
            self._signal_group(proc, signal.SIGKILL)
        self._close_log()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)  # the child leads its own session, so pgid == pid
        except ProcessLookupError:
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def health_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET `url` answers 200 with body `ok` (Streamlit's /_stcore/health)."""
    try:
        # trust_env=False: never route a loopback health check through a proxy.
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text.strip() == "ok"


class DashboardServer(ChildService):
    """`python -m streamlit run app.py` bound to settings.host:settings.port."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_env: Mapping[str, str] | None = None,
        app_path: str | os.PathLike[str] = APP_PATH,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.app_path = Path(app_path)
        self.host = str(settings.host)
        self.port = int(settings.port)
        env = {**os.environ, **settings_env(settings), **(extra_env or {})}
        argv = [
            sys.executable, "-m", "streamlit", "run", str(app_path),
            "--server.address", self.host,
            "--server.port", str(self.port),
            "--server.headless", "true",
            "--server.fileWatcherType", "none",
            "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false",
            # Streamlit's defaults, stated: a cross-site form cannot post to the console
            "--server.enableXsrfProtection", "true",
            "--server.enableCORS", "true",
        ]  # fmt: skip
        super().__init__(
            "dashboard",
            argv,
            env=env,
            cwd=Path(app_path).resolve().parent,  # picks up the project's .streamlit/config.toml
            ready=lambda: health_ok(self.health_url),
            startup_timeout_s=startup_timeout_s,
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        return http_url(self.host, self.port, "/")

    @property
    def health_url(self) -> str:
        return http_url(self.host, self.port, "/_stcore/health")

    def start(self) -> None:
        check_bind(self.host, str(self.settings.access_secret))  # off loopback only with a secret
        if not self.app_path.is_file():
            raise ServerError(f"app not found: {self.app_path}")
        check_port_free(self.host, self.port)
        super().start()


def run_services(
    services: Sequence[Service],
    *,
    on_ready: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
    poll_interval_s: float = 0.5,
) -> int:
    """Start `services` in order, run until one ends or `stop_event` is set (or Ctrl-C), stop all.

    Returns 0 on a requested stop, 1 when a service ended on its own. A service that fails to
    start stops the ones already started and its ServerError propagates.
    """
    started: list[Service] = []
    stop_event = stop_event or threading.Event()
    try:
        for service in services:
            service.start()
            started.append(service)
        if on_ready is not None:
            on_ready()
        while not stop_event.wait(poll_interval_s):
            for service in started:
                code = service.poll()
                if code is not None:
                    raise ServerError(f"{service.name} stopped unexpectedly (exit code {code})")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if started:
            # Said, because stopping can take a few seconds (a harness lets its trials finish).
            print(f"stopping {', '.join(s.name for s in reversed(started))} ...", file=sys.stderr, flush=True)
        for service in reversed(started):
            service.stop()
