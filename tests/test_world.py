"""`oasis-ops demo` as a user starts it: emulator, harness, sampler and dashboard together, all
pointed at the emulator, and all gone after a Ctrl-C (no orphans, no trial lost to the stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import psutil
from helpers_server import STARTUP_TIMEOUT_S, console_env

from oasis_ops.demo import replay, world
from oasis_ops.server import free_port, health_ok
from oasis_ops.sidecar import Sidecar

ROOT = Path(__file__).resolve().parent.parent


def _trials(db: Path) -> int:
    # Read a copy: the harness writes the file (opening it here could cost it a lock retry).
    copy = db.with_name("copy.duckdb")
    for _ in range(20):
        try:
            copy.write_bytes(db.read_bytes())
            wal = db.with_name(db.name + ".wal")
            copy.with_name(copy.name + ".wal").unlink(missing_ok=True)
            if wal.exists():
                copy.with_name(copy.name + ".wal").write_bytes(wal.read_bytes())
            con = duckdb.connect(str(copy), read_only=True)
            try:
                return int(con.execute("SELECT count(*) FROM trials").fetchone()[0])  # type: ignore[index]
            finally:
                con.close()
        except (duckdb.Error, OSError):
            time.sleep(0.2)
    raise AssertionError(f"cannot read {db}")


def test_demo_world_runs_together_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    port = free_port()
    argv = [sys.executable, "-m", "oasis_ops", "demo", "--dir", str(demo), "--port", str(port), "--log", str(tmp_path / "st.log")]
    env = console_env(tmp_path, {"OASIS_OPS_SAMPLER": "true"})
    log = (tmp_path / "demo.out").open("ab")
    # Its own process group, so the SIGINT below is exactly what a terminal's Ctrl-C sends. Started
    # with SIGINT ignored, as a background job of a non-interactive shell (and so some CI runners)
    # starts it: Python then installs no KeyboardInterrupt handler, and the launcher must still stop.
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    family: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not health_ok(f"http://127.0.0.1:{port}/_stcore/health"):
            assert proc.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, "the demo did not come up"
            time.sleep(0.25)
        first = _trials(demo / world.TRIALS_FILE)
        assert first >= 1  # the dashboard starts only once the harness wrote a trial
        time.sleep(4)
        for p in psutil.Process(proc.pid).children(recursive=True):
            family[p.pid] = p
        commands = [" ".join(p.cmdline()) for p in family.values()]
        assert any(c.endswith("/ollama serve") for c in commands), commands
        # the live run's runner: a real llama.cpp server with the argv Ollama >= 0.30 gives it
        runner = next((p for p in family.values() if p.cmdline() and p.cmdline()[0].endswith("/llama-server")), None)
        assert runner is not None, commands
        assert runner.cmdline()[1] == "--model" and "--flash-attn" in runner.cmdline()
        assert runner.memory_info().rss > 50e6  # the real 135M model, not a sleeping stand-in
        assert any("oasis_ops.demo.harness" in c and "--ollama http://127.0.0.1:" in c for c in commands), commands
        assert any("streamlit run" in c for c in commands), commands
        assert _trials(demo / world.TRIALS_FILE) > first  # trials flow

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # the launcher prints its threads' stacks
            time.sleep(2)
            raise AssertionError("Ctrl-C did not stop the demo in 40 s:\n" + (tmp_path / "demo.out").read_text()[-12000:]) from None
        assert code == 0, (tmp_path / "demo.out").read_text()
        gone, alive = psutil.wait_procs(list(family.values()), timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for p in family.values():
            if p.is_running():
                p.kill()
        log.close()

    # The harness stopped cleanly: every finished trial written, none failed because of the stop.
    runner_log = (demo / replay.RUNNER_LOG).read_text()
    assert "harness stopped:" in runner_log.splitlines()[-1]
    assert " failed:" not in runner_log and "Connection refused" not in runner_log
    assert _trials(demo / world.TRIALS_FILE) == runner_log.count(" ok in ")
    # The sampler watched this host and the emulator's /api/ps into the live sidecar.
    sidecar = Sidecar(demo / "trials.ops.duckdb")
    hosts = sidecar.host_samples_since(sidecar.clock() - timedelta(hours=1))
    assert set(hosts["source"]) == {"linux:/proc"}
    models = sidecar.model_samples_since(sidecar.clock() - timedelta(hours=1))
    assert world.live_model() == "smollm2:135m" and "smollm2:135m" in set(models["model"])
    assert models["runner_pid"].notna().any() and (models["runner_rss_bytes"].dropna() > 50e6).any()
    # And the replay is there to browse.
    assert (demo / "replay" / replay.TRIALS_FILE).is_file() and (demo / "replay" / replay.SERVER_LOG).is_file()
