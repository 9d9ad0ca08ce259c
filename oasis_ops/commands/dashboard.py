"""`oasis-ops dashboard [--db PATH] [--host H] [--port P]`: serve the Streamlit console."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from oasis_ops.access import check_bind
from oasis_ops.commands import number_in, settings_from
from oasis_ops.server import DashboardServer, Service, cache_dir, run_services
from oasis_ops.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the dashboard (127.0.0.1 unless --host says otherwise)")
    add_server_arguments(p)
    p.add_argument("--db", help="trial database (DuckDB); default: the `db` setting")
    p.set_defaults(func=run)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=number_in(int, 1, 65535), help="port to listen on (default 8501)")
    p.add_argument("--log", help="where the server's own output goes (default: ~/.cache/oasis-ops/logs/)")


def server_log_path(args: argparse.Namespace, settings: Settings) -> Path:
    if getattr(args, "log", None):
        return Path(args.log).expanduser()
    return cache_dir() / "logs" / f"dashboard-{settings.port}.log"


def serve(services: Sequence[Service], lines: Sequence[str]) -> int:
    """Run `services` until Ctrl-C or SIGTERM; print `lines` once they are all up."""
    stop = threading.Event()

    running = threading.Event()  # set once every service is up

    def _on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def _on_int(signum: int, frame: FrameType | None) -> None:
        if not running.is_set():
            raise KeyboardInterrupt  # during start-up: stop what started, at once
        stop.set()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_term) if main_thread else None
    # Ctrl-C too, explicitly: a process started with SIGINT ignored (a background job of a
    # non-interactive shell, some CI runners) inherits that, and Python then raises no
    # KeyboardInterrupt: Ctrl-C (or `kill -INT`) would do nothing.
    previous_int = signal.signal(signal.SIGINT, _on_int) if main_thread else None
    if hasattr(signal, "SIGUSR1") and main_thread:
        # `kill -USR1 <pid>` prints every thread's stack to stderr (the launcher's log): how a
        # launcher that does not stop on Ctrl-C is diagnosed without a debugger.
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (ValueError, OSError):  # stderr is not a real file (embedded, captured): no dumps
            pass

    def _ready() -> None:
        for line in lines:
            print(line, flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        running.set()

    try:
        return run_services(services, on_ready=_ready, stop_event=stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def background_services(settings: Settings) -> list[Service]:
    """Services that run beside the dashboard server, started before it (the sampler)."""
    if not (settings.sampler and settings.db):
        return []
    # Imported here: the sampler pulls in the probes, which the rest of the CLI does not need.
    from oasis_ops.sampler.service import SamplerService

    return [SamplerService(settings, announce=lambda line: print(line, file=sys.stderr, flush=True))]


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db, host=args.host, port=args.port)
    check_bind(str(settings.host), str(settings.access_secret))  # before anything starts: exit 2, one line
    log_path = server_log_path(args, settings)
    server = DashboardServer(settings, log_path=log_path)
    lines = [f"oasis-ops dashboard: {server.url}"]
    if settings.db:
        db = Path(settings.db).expanduser().resolve()
        note = "" if db.exists() else "  (not there yet: the page will say so until the runner creates it)"
        lines.append(f"  trial database: {db}{note}")
    else:
        lines.append("  no trial database configured: pass --db path/to/trials.duckdb, or try `oasis-ops demo`")
    origin = settings.origins.get("ollama_host", "default")
    lines.append(f"  Ollama: {settings.ollama_host} ({'the default' if origin == 'default' else origin}); "
                 f"CLI commands in another shell read OLLAMA_HOST")  # fmt: skip
    if settings.access_secret:
        lines.append(f"  access: every session signs in with the access secret ({settings.origins.get('access_secret')})")
    lines.append(f"  server log: {log_path}")
    return serve([*background_services(settings), server], lines)
