"""`oasis-ops demo`: the built-in demo world that `make run` starts.

In a fresh directory (`~/.cache/oasis-ops/demo-<UTC time>`, or `--dir`):
1. the incident replay is written to DIR/replay/ (once; `oasis_ops.demo.replay`);
2. the Ollama emulator starts (`DIR/ollama/bin/ollama serve`, behaving as the newest Ollama
   profile, on this machine's real memory); the live run's model is `smollm2:135m`, served by a
   real llama.cpp runner (`llama-server` child process, PyPI xllamacpp, a real 135M GGUF), so
   the Live page shows a real PID, real RSS and real CPU; faults switchable from the Demo page
   or `oasis-ops demo fault` act on that real process (SIGSTOP, SIGKILL, a capped memory hog);
3. the simulated harness starts (`python -m oasis_ops.demo.harness`, max_concurrency 2),
   writing DIR/trials.duckdb, DIR/runner.log and acknowledging DIR/trials.control/;
4. the sampler (the launcher's SamplerService thread, as for `oasis-ops dashboard`) records
   the emulator's /api/ps, its runners, this host's memory and the server.log into
   DIR/trials.ops.duckdb;
5. the dashboard serves DIR/trials.duckdb; the replay's trial DB is offered as a second
   database (OASIS_OPS_DEMO_REPLAY_DB; the Demo page opens it in the Timeline).
Every child points at the emulator (settings ollama_host, ollama_models, server_log). All of
them stop together on Ctrl-C or SIGTERM (run_services stops them in reverse order; the
emulator takes its runners with it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from oasis_ops.access import check_bind
from oasis_ops.commands import settings_from
from oasis_ops.commands.dashboard import (
    add_server_arguments,
    background_services,
    serve,
    server_log_path,
)
from oasis_ops.control import control_dir_for, read_json
from oasis_ops.demo import replay
from oasis_ops.demo.ollama.home import REAL_MODEL, OllamaHome, real_engine_available
from oasis_ops.demo.ollama.process import emulator_env
from oasis_ops.server import (
    DEMO_DIR_ENV,
    ChildService,
    DashboardServer,
    Service,
    cache_dir,
    free_port,
    settings_env,
)
from oasis_ops.settings import Settings

TRIALS_FILE = "trials.duckdb"
REPLAY_DIR = "replay"
OLLAMA_DIR = "ollama"
# Read by the app (pages/demo.py, and the database picker when it offers the replay).
REPLAY_DB_ENV = "OASIS_OPS_DEMO_REPLAY_DB"
# The demo's live world: real generations of ~96 tokens (~1 s on 2 cores), 2 trials in flight on
# OLLAMA_NUM_PARALLEL=1, each worker pausing between trials so the runner is busy, not pegged.
EMULATOR_LATENCY_MS = 1200.0  # only for the emulated models (drills), not the live run
EMULATOR_LOAD_MS = 800.0
HARNESS_CONCURRENCY = 2
HARNESS_TIMEOUT_S = 20.0  # short enough that a stall fault shows as timeouts within a minute
HARNESS_EVICT_THRESHOLD = 3
HARNESS_NUM_PREDICT = 96
HARNESS_THINK_S = 1.5
FALLBACK_MODEL = "gemma4:e4b"  # emulated: when xllamacpp or the GGUF is not installed


def live_model() -> str:
    """The live run's model: the real one when its engine is installed."""
    return REAL_MODEL if real_engine_available() else FALLBACK_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", help="demo directory (default: a new ~/.cache/oasis-ops/demo-<time>); reused when given")
    # The live run's shape, to try the console on a busier or idler run (e.g. keep-alive 15s,
    # 3 in flight, no pause: the model is never idle, and Ollama's own expiry goes stale).
    parser.add_argument("--keep-alive", default=None, metavar="DURATION",
                        help="the emulator's OLLAMA_KEEP_ALIVE (a Go duration: 30s, 1m, 5m; default: Ollama's, 5m)")
    parser.add_argument("--concurrency", type=_positive_int, default=HARNESS_CONCURRENCY, metavar="N",
                        help=f"trials the simulated harness keeps in flight (default {HARNESS_CONCURRENCY})")
    parser.add_argument("--think-s", type=_non_negative_float, default=HARNESS_THINK_S, metavar="S",
                        help=f"each harness worker's pause between trials, seconds (default {HARNESS_THINK_S:g})")
    parser.add_argument("--gpu", action="store_true",
                        help="the emulator presents a simulated NVIDIA GPU (VRAM, CPU/GPU split; `demo fault vram_pressure on`)")
    add_server_arguments(parser)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to 64")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: seconds from 0 to 3600")
    return value


def _keep_alive(text: str | None) -> str | None:
    """The --keep-alive value as Ollama would read it (refused with one line when it would not)."""
    if text is None:
        return None
    from oasis_ops.demo.ollama.goparse import KeepAliveError, parse_go_duration

    try:
        parse_go_duration(text.strip())
    except KeepAliveError:
        if not text.strip().lstrip("-").isdigit():  # Ollama would silently use 5m instead
            raise ValueError(f"--keep-alive {text!r}: not a duration Ollama reads (e.g. 30s, 1m, 5m, or seconds)") from None
    return text.strip()


def default_demo_dir(now: datetime | None = None) -> Path:
    """A new directory per start: the live run begins from nothing every time."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    base = cache_dir() / f"demo-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


IN_USE_S = 600.0  # a demo directory written to this recently may be a running demo: never removed


def prune_demo_dirs(base: Path, keep: int, *, current: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove all but the `keep` newest `demo-<time>` directories under `base` (disk is bounded
    too: each holds a hard-linked model, trial tables and logs). Never `current`, never one with a
    file written in the last IN_USE_S (another demo may be running in it); keep 0 removes nothing.
    Returns what was removed."""
    if keep <= 0 or not base.is_dir():
        return []
    clock = time.time() if now is None else now
    dirs = sorted((p for p in base.glob("demo-*") if p.is_dir() and not p.is_symlink()), key=lambda p: p.name, reverse=True)
    removed = []
    for old in dirs[keep:]:
        if current is not None and old.resolve() == current.resolve():
            continue
        try:
            newest = max((f.lstat().st_mtime for f in old.rglob("*")), default=old.lstat().st_mtime)
        except OSError:
            continue
        if clock - newest < IN_USE_S:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def ensure_replay(demo_dir: Path) -> Path:
    """DIR/replay/trials.duckdb, written when absent (a few seconds); returns its path."""
    out = demo_dir / REPLAY_DIR
    db = out / replay.TRIALS_FILE
    if not db.exists():
        replay.write_replay(out, force=True)
    return db


class EmulatorService(ChildService):
    """The Ollama emulator (`<home>/bin/ollama serve`) as a child in its own session.

    Its own session (unlike EmulatorProcess, made for tests): a Ctrl-C in the terminal must not
    reach it before the harness is stopped, or the harness's last calls fail as connection
    errors. Stopped with SIGTERM (it stops its runners, which also exit when it is gone).
    """

    def __init__(self, home: Path, port: int, *, latency_ms: float = EMULATOR_LATENCY_MS, load_ms: float = EMULATOR_LOAD_MS,
                 keep_alive: str | None = None, gpu: bool = False) -> None:  # fmt: skip
        self.home = OllamaHome(home)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = emulator_env(self.home, port=port, latency_ms=latency_ms, load_ms=load_ms, host_mode="real", keep_alive=keep_alive)
        if gpu:
            env["OASIS_EMU_GPU"] = "1"
        super().__init__(
            "ollama emulator",
            [str(self.home.bin_ollama), "serve"],
            env=env,
            cwd=self.home.root,
            ready=self._ready,
            startup_timeout_s=30.0,
            log_path=self.home.root / "emulator.out",
        )

    @property
    def server_log(self) -> Path:
        return self.home.server_log

    def _ready(self) -> bool:
        data, _ = read_json(self.home.ready_file)
        return data is not None and data.get("pid") == self.pid

    def start(self) -> None:
        self.home.prepare()
        self.home.ready_file.unlink(missing_ok=True)
        self.cwd = self.home.launch_dir
        super().start()


def harness_service(settings: Settings, demo_dir: Path, ollama_url: str, *, concurrency: int = HARNESS_CONCURRENCY,
                    think_s: float = HARNESS_THINK_S) -> ChildService:  # fmt: skip
    """`python -m oasis_ops.demo.harness` on DIR/trials.duckdb; ready once its first trial is written."""
    db = demo_dir / TRIALS_FILE
    control_dir = control_dir_for(db, settings)
    model = live_model()
    argv = [
        sys.executable, "-m", "oasis_ops.demo.harness",
        "--db", str(db), "--ollama", ollama_url, "--model", model,
        "--max-concurrency", str(concurrency), "--request-timeout-s", f"{HARNESS_TIMEOUT_S:g}",
        *(["--no-images", "--num-predict", str(HARNESS_NUM_PREDICT), "--think-s", f"{think_s:g}"]
          if model == REAL_MODEL else []),
        "--evict-threshold", str(HARNESS_EVICT_THRESHOLD), "--control-dir", str(control_dir),
        "--runner-log", str(demo_dir / replay.RUNNER_LOG),
    ]  # fmt: skip
    service: ChildService

    def ready() -> bool:
        state, _ = read_json(control_dir / "state.json")
        return state is not None and state.get("pid") == service.pid and db.exists()

    service = ChildService(
        "harness",
        argv,
        env={**os.environ, **settings_env(settings)},
        cwd=demo_dir,
        ready=ready,
        startup_timeout_s=60.0,
        log_path=demo_dir / "harness.out",
    )
    return service


def world_settings(settings: Settings, demo_dir: Path, port: int) -> Settings:
    """Settings every child gets: the live trial DB, the emulator's URL, models and server.log."""
    home = OllamaHome(demo_dir / OLLAMA_DIR)
    return settings.replace(
        db=str(demo_dir / TRIALS_FILE),
        ollama_host=f"http://127.0.0.1:{port}",
        ollama_models=str(home.models_dir),
        server_log=str(home.server_log),
    )


def world_services(settings: Settings, demo_dir: Path, log_path: Path, *, replay_db: Path | None = None,
                   keep_alive: str | None = None, concurrency: int = HARNESS_CONCURRENCY,
                   think_s: float = HARNESS_THINK_S, gpu: bool = False) -> list[Service]:  # fmt: skip
    """Everything the demo runs, in start order: emulator, harness, sampler, dashboard.

    `settings` must come from world_settings() (they carry the emulator's port)."""
    port = int(str(settings.ollama_host).rsplit(":", 1)[1])
    emulator = EmulatorService(demo_dir / OLLAMA_DIR, port, keep_alive=keep_alive, gpu=gpu)
    extra_env = {DEMO_DIR_ENV: str(demo_dir)}
    if replay_db is not None:
        extra_env[REPLAY_DB_ENV] = str(replay_db)
    dashboard = DashboardServer(settings, extra_env=extra_env, log_path=log_path)
    harness = harness_service(settings, demo_dir, emulator.url, concurrency=concurrency, think_s=think_s)
    return [emulator, harness, *background_services(settings), dashboard]


def banner_lines(url: str, settings: Settings, replay_db: Path, log_path: Path, *, gpu: bool = False) -> list[str]:
    """What `oasis-ops demo` prints once everything is up. The emulator listens on a port of its
    own, so the banner gives the `export OLLAMA_HOST=...` line that aims a second shell's CLI
    commands at it; and it says what is real (the live run's host memory: this machine's) and
    what is recorded (the replay's: the write-up's Mac)."""
    return [
        f"oasis-ops demo: {url}",
        f"  live run (simulated harness -> {live_model()} on the Ollama emulator at {settings.ollama_host}): {settings.db}",
        "    host memory: REAL (this machine's), read by the sampler",
        *(["    GPU: SIMULATED (one NVIDIA card on the emulator's clock); try `oasis-ops demo fault vram_pressure on`"] if gpu else []),
        f"  replayed incident (2025-11-20, the write-up's day): {replay_db}",
        "    host memory: RECORDED (the write-up's Mac, reconstructed), not this machine's",
        "  the Ollama emulator is on a port of its own: in another shell, aim oasis-ops (and curl) at it with",
        f"    export OLLAMA_HOST={settings.ollama_host}",
        f"    then e.g.: oasis-ops status --db {settings.db}   or   oasis-ops demo fault stall on",
        "  this is a demo; to watch a real run: oasis-ops dashboard --db path/to/trials.duckdb",
        f"  server log: {log_path}",
    ]


def main(args: argparse.Namespace) -> int:
    settings = settings_from(args, host=getattr(args, "host", None), port=getattr(args, "port", None))
    check_bind(str(settings.host), str(settings.access_secret))  # before the emulator starts
    log_path = server_log_path(args, settings)
    if settings.db and not getattr(args, "dir", None):
        # `make run` with a configured database shows that database, not the demo.
        print(f"A trial database is configured ({settings.origins.get('db')}): serving {settings.db}.", file=sys.stderr)
        print("Run `oasis-ops demo --dir DIR` for the demo instead.", file=sys.stderr)
        server = DashboardServer(settings, log_path=log_path)
        return serve([*background_services(settings), server], [f"oasis-ops dashboard: {server.url}", f"  trial database: {settings.db}"])

    try:
        keep_alive = _keep_alive(getattr(args, "keep_alive", None))
    except ValueError as exc:
        print(f"oasis-ops demo: {exc}", file=sys.stderr)
        return 2
    demo_dir = (Path(args.dir).expanduser() if getattr(args, "dir", None) else default_demo_dir()).resolve()
    demo_dir.mkdir(parents=True, exist_ok=True)
    if not getattr(args, "dir", None):
        gone = prune_demo_dirs(demo_dir.parent, int(settings.keep_demo_dirs), current=demo_dir)
        if gone:
            print(f"Removed {len(gone)} older demo director{'y' if len(gone) == 1 else 'ies'} "
                  f"(keep_demo_dirs = {settings.keep_demo_dirs}).", flush=True)  # fmt: skip
    print(f"Preparing the demo world in {demo_dir} ...", flush=True)
    replay_db = ensure_replay(demo_dir)
    settings = world_settings(settings, demo_dir, free_port())
    services = world_services(settings, demo_dir, log_path, replay_db=replay_db, keep_alive=keep_alive,
                              concurrency=getattr(args, "concurrency", HARNESS_CONCURRENCY),
                              think_s=getattr(args, "think_s", HARNESS_THINK_S), gpu=bool(getattr(args, "gpu", False)))  # fmt: skip
    url = next((s.url for s in services if isinstance(s, DashboardServer)), "")
    return serve(services, banner_lines(url, settings, replay_db, log_path, gpu=bool(getattr(args, "gpu", False))))
