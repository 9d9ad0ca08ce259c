"""`oasis-ops demo`: the built-in demo world that `make run` starts.

For now the world is a generated trial database (a realistic day with the incident's failure
window) and the dashboard on it. The full world (Ollama emulator, harness-shaped runner)
slots into `world_services()`: every child there is started in order and stopped together.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from oasis_ops.commands import settings_from
from oasis_ops.commands.dashboard import (
    add_server_arguments,
    background_services,
    serve,
    server_log_path,
)
from oasis_ops.server import DEMO_DIR_ENV, DashboardServer, Service, cache_dir
from oasis_ops.settings import Settings

TRIALS_FILE = "trials.duckdb"
# The incident's day: 09:00-18:15 UTC, ~12.8k trials, ~98% timeouts 17:58-18:04.
DAY_START = (9, 0)
DAY_MINUTES = 9 * 60 + 15
N_TRIALS = 12_830
FAILURE_WINDOW = ((17, 58), (18, 4))  # the generator times out ~98% of trials inside a window
SEED = 20251120


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="demo directory (default: ~/.cache/oasis-ops/demo); reused when it has data")
    add_server_arguments(parser)


def default_demo_dir() -> Path:
    return cache_dir() / "demo"


def demo_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of the demo run's day: yesterday, so the whole run lies in the past."""
    today = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def ensure_trials(demo_dir: Path, *, now: datetime | None = None) -> Path:
    """The demo trial DB in `demo_dir`, generated when absent (written aside, then renamed)."""
    from oasis_ops.trials.generate import generate_trials  # heavy-ish; only when generating

    demo_dir.mkdir(parents=True, exist_ok=True)
    path = demo_dir / TRIALS_FILE
    if path.exists():
        return path
    day = demo_day(now)
    start = day.replace(hour=DAY_START[0], minute=DAY_START[1])
    window = (day.replace(hour=FAILURE_WINDOW[0][0], minute=FAILURE_WINDOW[0][1]), day.replace(hour=FAILURE_WINDOW[1][0], minute=FAILURE_WINDOW[1][1]))
    partial = demo_dir / f".{TRIALS_FILE}.partial-{os.getpid()}"
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        generate_trials(
            partial,
            n_trials=N_TRIALS,
            start=start,
            minutes=DAY_MINUTES,
            failure_windows=[window],
            seed=SEED,
            run_id=f"oasis-{day:%Y%m%d}",
        )
        # The file of a run that ended at 18:15 was last written then: the console shows it as
        # finished, not as a live run that was written a moment ago.
        ended = start + timedelta(minutes=DAY_MINUTES)
        os.utime(partial, (ended.timestamp(), ended.timestamp()))
        os.replace(partial, path)
    finally:
        for leftover in (partial, partial.with_name(partial.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return path


def world_services(settings: Settings, demo_dir: Path, log_path: Path) -> list[Service]:
    """Everything the demo runs, in start order (later: the Ollama emulator and the runner first)."""
    dashboard = DashboardServer(settings, extra_env={DEMO_DIR_ENV: str(demo_dir)}, log_path=log_path)
    return [*background_services(settings), dashboard]


def main(args: argparse.Namespace) -> int:
    settings = settings_from(args, host=getattr(args, "host", None), port=getattr(args, "port", None))
    log_path = server_log_path(args, settings)
    if settings.db and not getattr(args, "dir", None):
        # `make run` with a configured database shows that database, not the demo.
        print(f"A trial database is configured ({settings.origins.get('db')}): serving {settings.db}.", file=sys.stderr)
        print("Run `oasis-ops demo --dir DIR` for the demo instead.", file=sys.stderr)
        server = DashboardServer(settings, log_path=log_path)
        return serve([*background_services(settings), server], [f"oasis-ops dashboard: {server.url}", f"  trial database: {settings.db}"])

    demo_dir = (Path(args.dir).expanduser() if getattr(args, "dir", None) else default_demo_dir()).resolve()
    fresh = not (demo_dir / TRIALS_FILE).exists()
    if fresh:
        print(f"Generating the demo run in {demo_dir} ...", flush=True)
    db = ensure_trials(demo_dir)
    settings = settings.replace(db=str(db))
    services = world_services(settings, demo_dir, log_path)
    url = next((s.url for s in services if isinstance(s, DashboardServer)), "")
    lines = [
        f"oasis-ops demo: {url}",
        f"  demo data: {db}",
        "  this is a demo; to watch a real run: oasis-ops dashboard --db path/to/trials.duckdb",
        f"  server log: {log_path}",
    ]
    return serve(services, lines)
