"""A healthy demo left alone never shows "Stopping": not on the Live page, in `status`, in
preflight, in the sidecar's judged state or its events.

The demo runs as `make run` starts it, but busier: a short keep-alive and trials always in flight
(`--keep-alive 15s --concurrency 3 --think-s 0`), so the runner is never idle, Ollama never
renews its expiry and its own /api/ps (like `ollama ps`) reads "Stopping" once the keep-alive
has passed while trials keep completing (after one idle moment: see _idle_once). The test checks that it did (else it would prove nothing), and that the
console, judging from evidence, says Loaded · busy everywhere.

By default it runs for SOAK_S = 45 s (the suite's budget; Ollama says Stopping from 15 s after the idle moment),
longer (up to SOAK_MAX_S) until Ollama has said Stopping at two looks; `OASIS_OPS_TEST_SOAK_S=600
OASIS_OPS_TEST_SOAK_KEEP_ALIVE=1m` gives the issue's 10 minutes with keep-alive 1 minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from helpers_browser import open_console, wait_idle
from helpers_server import ROOT, console_env, running_console
from playwright.sync_api import Page, expect

from oasis_ops.control import ControlChannel, RunnerState, control_dir_for
from oasis_ops.settings import load_settings

SOAK_S = float(os.environ.get("OASIS_OPS_TEST_SOAK_S", "45"))
KEEP_ALIVE = os.environ.get("OASIS_OPS_TEST_SOAK_KEEP_ALIVE", "15s")
SOAK_MAX_S = max(SOAK_S, 150.0)
LOOK_EVERY_S = 8.0


def _cli(args: list[str], work: Path, ollama_host: str) -> subprocess.CompletedProcess[str]:
    env = console_env(work, {"OLLAMA_HOST": ollama_host})
    return subprocess.run([sys.executable, "-m", "oasis_ops", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def _runner_state(db: Path) -> RunnerState | None:
    """The harness's state through the control channel (Contract 3), as `oasis-ops` reads it."""
    return ControlChannel(control_dir_for(db, load_settings(env={}))).runner_state()


def _idle_once(db: Path, work: Path, ollama_host: str) -> None:
    """Pause the run until nothing is in flight, then resume: the model goes idle once, so Ollama
    sets its expiry (now + keep-alive). With trials always in flight from the first one, Ollama
    never sets it and /api/ps shows now + keep-alive forever (its ps handler does so for an unset
    expiry): never Stopping, and nothing to test. After this, the expiry goes stale."""
    deadline = time.monotonic() + 90
    while not (db.exists() and (state := _runner_state(db)) is not None and (state.completed or 0) >= 3):
        assert time.monotonic() < deadline, "no trial completed in 90 s"
        time.sleep(1)
    assert _cli(["pause", "--db", str(db)], work, ollama_host).returncode == 0
    while not ((state := _runner_state(db)) is not None and state.paused is True and state.in_flight == 0):
        assert time.monotonic() < deadline, f"the harness did not pause: {_runner_state(db)}"
        time.sleep(0.5)
    time.sleep(1.0)
    assert _cli(["resume", "--db", str(db)], work, ollama_host).returncode == 0
    while (state := _runner_state(db)) is None or state.paused is not False:
        assert time.monotonic() < deadline, f"the harness did not resume: {_runner_state(db)}"
        time.sleep(0.5)


def _evidence(db: Path, model: dict[str, object]) -> str:
    """What the sources held when status judged Stopping: the trials that ended since the expiry
    and the sampler's newest serving reads (for a failure message)."""
    lines = []
    with duckdb.connect(":memory:") as con:
        for label, path, sql in (
            ("trials ended ok since expiry", db, "SELECT count(*), max(finished_at) FROM {t}.trials WHERE status = 'ok' "
                                                 "AND finished_at >= $e::TIMESTAMPTZ"),
            ("sampler's newest runner read with tokens", db.with_suffix(".ops.duckdb"),
             "SELECT max(ts), count(*) FROM {t}.runner_samples WHERE tokens_per_s > 0"),
            ("sampler's newest model sample", db.with_suffix(".ops.duckdb"),
             "SELECT max(ts), arg_max(state, ts), arg_max(ollama_state, ts) FROM {t}.model_samples"),
        ):  # fmt: skip
            try:
                copy = Path(str(path) + ".evidence-copy")
                copy.write_bytes(path.read_bytes())
                wal = Path(str(path) + ".wal")
                if wal.exists():  # the writer's newest rows may still be in its WAL
                    Path(str(copy) + ".wal").write_bytes(wal.read_bytes())
                con.execute(f"ATTACH '{copy}' AS t{len(lines)} (READ_ONLY)")
                query = sql.format(t=f"t{len(lines)}")
                row = con.execute(query, {"e": model["expires_at"]} if "$e" in query else {}).fetchone()
                lines.append(f"{label}: {row}")
            except Exception as exc:  # noqa: BLE001 - a failure message must not fail itself
                lines.append(f"{label}: unreadable ({exc})")
    return "\n".join(lines)


@pytest.mark.browser
def test_a_healthy_busy_demo_never_shows_stopping(page: Page, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    args = ["demo", "--dir", str(demo), "--keep-alive", KEEP_ALIVE, "--concurrency", "3", "--think-s", "0"]
    with running_console(args, tmp_path / "console", env={"OASIS_OPS_SAMPLER": "true"}) as console:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"export OLLAMA_HOST=(\S+)", console.log())) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert match, f"the demo banner printed no `export OLLAMA_HOST=` line:\n{console.log()}"
        ollama_host = match.group(1)
        db = demo / "trials.duckdb"
        _idle_once(db, tmp_path, ollama_host)
        open_console(page, console, "Live")
        main = page.locator("[data-testid=stMain]")
        looks = raw_stopping = 0
        states: set[str] = set()
        started = time.monotonic()
        # At least SOAK_S; on a loaded machine longer, until Ollama has shown Stopping at two looks
        # (a slow harness can let the runner go idle, which renews the expiry: then nothing to test yet).
        while (elapsed := time.monotonic() - started) < SOAK_S or (raw_stopping < 2 and elapsed < SOAK_MAX_S):
            time.sleep(LOOK_EVERY_S)
            page.reload()
            expect(page.locator("[data-testid=stApp]")).to_be_visible()
            expect(main.locator("h1").first).to_be_visible()
            wait_idle(page)
            text = main.inner_text()
            assert not re.search(r"\bStopping for\b|\bSTOPPING\b", text), f"the Live page says Stopping:\n{text[:3000]}"
            done = _cli(["status", "--json", "--db", str(db)], tmp_path, ollama_host)
            assert done.returncode in (0, 3), done.stderr
            for model in json.loads(done.stdout)["models"]:
                states.add(model["state"])
                if model["state"] == "stopping":  # say everything: a flake here needs its evidence
                    pytest.fail(f"status judged Stopping at {json.loads(done.stdout)['taken_at']}: "
                                f"{json.dumps(model, default=str)}\n{_evidence(db, model)}")  # fmt: skip
                if model["ollama_state"] == "stopping":
                    raw_stopping += 1
                    # busy, or in the first seconds after the expiry "checking that it still is"
                    assert model["busy"] is True or "checking" in (model["judged"] or ""), model
                    assert "Stopping" in (model["judged"] or ""), model
            looks += 1
        flight = _cli(["preflight", "--json", "--db", str(db)], tmp_path, ollama_host)
        assert flight.returncode in (0, 1, 3), flight.stdout + flight.stderr  # this machine's memory may warn or block
        stopping = next(c for c in json.loads(flight.stdout)["checks"] if c["id"] == "stopping")
        assert stopping["status"] == "ok" and not stopping["values"]["stopping"], stopping
        # Proof the condition was there: Ollama itself said Stopping while the console did not.
        assert raw_stopping >= 1, f"Ollama never showed Stopping in {looks} looks: the test proved nothing"
        assert "loaded" in states
        page.screenshot(path=tmp_path / "live_busy.png", full_page=True)
    # The console has stopped (its sampler too): the sidecar is free to read.
    with duckdb.connect(str(demo / "trials.ops.duckdb"), read_only=True) as con:
        judged = dict(con.execute("SELECT ollama_state, count(*) FROM model_samples GROUP BY ALL").fetchall())
        wrong = con.execute("SELECT count(*) FROM model_samples WHERE state = 'stopping'").fetchone()
        events = con.execute("SELECT count(*) FROM events WHERE kind = 'stopping'").fetchone()
    assert judged.get("stopping", 0) >= 1, judged  # samples where Ollama said Stopping ...
    assert wrong == (0,), "model_samples.state says stopping"  # ... and the judgement never did
    assert events == (0,), "a 'stopping' event was raised"
