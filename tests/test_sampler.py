"""The sampler against the real Ollama emulator (real HTTP server, real runner processes).

Ticks are driven by hand (`Sampler.tick()`) so each step is checked exactly; the thread, the
per-process singleton, the lock and the CLI are tested on their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import (
    blob_of,
    find_runner_pid,
    proc_stat,
    running_emulator,
    set_fault,
    wait_until,
)

from oasis_ops.cli import main as cli_main
from oasis_ops.errors import ProbeError, SidecarBusy
from oasis_ops.probes import HostSample
from oasis_ops.sampler import HostSource, Sampler, get_sampler, running_samplers, stop_sampler
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar, records

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gemma4:e4b"


def settings_for(url: str, models_dir: Path | str = "", **overrides: Any) -> Any:
    base = {"ollama_host": url, "ollama_models": str(models_dir), "process_interval_s": 0.0, "server_log": ""}
    base.update(overrides)
    return load_settings(env={}).replace(**base)


def events(path: Path) -> list[dict[str, Any]]:
    rows = records(Sidecar(path).events_since(datetime(2000, 1, 1, tzinfo=UTC)))
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return rows


def kinds(path: Path) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["model"]) for e in events(path)]


def generate(url: str, **body: Any) -> dict[str, Any]:
    payload = {"model": MODEL, "prompt": "hi", "stream": False, **body}
    response = httpx.post(url + "/api/generate", json=payload, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def test_sampler_records_load_runner_change_stopping_and_gone(tmp_path: Path) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    with running_emulator(tmp_path) as emu:
        settings = settings_for(emu.url, emu.home.models_dir, server_log=str(emu.server_log))
        sampler = Sampler(sidecar, settings, flush_interval_s=0.2, log_interval_s=0.0)
        sampler.open()
        try:
            first = sampler.tick()
            assert first.ollama_reachable is True and first.models == [] and not first.errors
            assert first.host is not None and first.host.source == "simulated"  # the demo's host, labelled

            # Loaded: a model appears with the runner that really serves it.
            generate(emu.url)
            runner = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))
            loaded = sampler.tick()
            assert [(m.model, m.state, m.runner_pid) for m in loaded.models] == [(MODEL, "loaded", runner)]
            assert [(e["kind"], e["model"]) for e in loaded.events] == [("loaded", MODEL)]

            # Runner PID changed: SIGKILL the runner; the next request respawns one.
            os.kill(runner, signal.SIGKILL)
            wait_until(lambda: (proc_stat(runner) or ("Z",))[0] in ("Z", "X"), what="the runner to die")
            for _ in range(2):  # the first may fail on the ghost runner, as with Ollama
                try:
                    generate(emu.url)
                except httpx.HTTPStatusError:
                    continue
            new_runner = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))
            assert new_runner != runner
            changed = sampler.tick()
            assert ("runner_pid_changed", MODEL) in [(e["kind"], e["model"]) for e in changed.events]
            detail = next(e["detail"] for e in changed.events if e["kind"] == "runner_pid_changed")
            assert (detail["old_pid"], detail["new_pid"]) == (runner, new_runner)

            # Stopping: keep_alive 0 while a request is stalled (the emulator's stall fault).
            set_fault(emu.url, "stall", True, stall_s=30)
            stalled: dict[str, Any] = {}
            request = threading.Thread(target=lambda: stalled.update(generate(emu.url)), daemon=True)
            request.start()
            time.sleep(0.3)  # the request is in flight on the runner
            generate(emu.url, prompt="", keep_alive=0)
            wait_until(lambda: any(m.state == "stopping" for m in sampler.probe.client.ps()), what="Stopping")
            # The sampler met this runner moments ago and has seen no progress from it yet: it
            # keeps reading it (judged loaded, "reading its runner") for up to JUST_EXPIRED_S
            # before it calls the model Stopping, as a decoding runner with a stale expiry is not.
            stopping = sampler.tick()
            undecided = 0
            deadline = time.monotonic() + 20
            while stopping.models and stopping.models[0].state == "loaded" and time.monotonic() < deadline:
                assert "reading its runner" in (stopping.models[0].status.judged or "")
                undecided += 1
                time.sleep(max(settings.process_interval_s, 1.0))
                stopping = sampler.tick()
            assert [(m.model, m.state) for m in stopping.models] == [(MODEL, "stopping")]
            assert ("stopping", MODEL) in [(e["kind"], e["model"]) for e in stopping.events]
            assert stopping.models[0].status.stopping_since is not None

            # Gone: the stalled request ends, the unload completes, /api/ps is empty.
            set_fault(emu.url, "stall", False)
            request.join(30)
            wait_until(lambda: not sampler.probe.client.ps(), timeout=15, what="the model to unload")
            gone = sampler.tick()
            assert gone.models == [] and [(e["kind"], e["model"]) for e in gone.events] == [("gone", MODEL)]
            assert gone.events[0]["detail"]["runner_pid"] == new_runner
            assert sampler.errors == 0, sampler.last_error
        finally:
            sampler.close()

    # Everything is in the sidecar: events in order, samples with the right states and PIDs.
    assert kinds(sidecar) == [
        ("sampler_started", None),
        ("loaded", MODEL),
        ("runner_pid_changed", MODEL),
        ("stopping", MODEL),
        ("gone", MODEL),
        ("sampler_stopped", None),
    ]
    store = Sidecar(sidecar)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    models = records(store.model_samples_since(since))
    for _ in range(undecided):  # the ticks that kept reading the new runner: Ollama's Stopping, judged loaded
        assert (models[2]["state"], models[2]["ollama_state"]) == ("loaded", "stopping")
        models.pop(2)
    assert [m["state"] for m in models] == ["loaded", "loaded", "stopping", "gone"]
    assert [m["runner_pid"] for m in models[:3]] == [runner, new_runner, new_runner]
    assert models[2]["stopping_since"] is not None and models[0]["processor"] == "100% GPU"
    host = records(store.host_samples_since(since))
    assert len(host) == 5 + undecided and {h["source"] for h in host} == {"simulated"}
    assert all(h["page_size"] == 16384 and h["pages_free"] > 0 for h in host)
    beat = store.sampler_heartbeat()
    assert beat is not None and beat.ticks == 5 + undecided and beat.stopped_at is not None and not beat.running
    # The server.log was tailed into the sidecar's log tables.
    offsets = records(store.log_offsets())
    assert offsets and offsets[0]["offset_bytes"] > 0


def test_a_second_sampler_on_the_same_sidecar_is_refused(tmp_path: Path) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    settings = settings_for("http://127.0.0.1:9")
    first = Sampler(sidecar, settings).open()
    try:
        with pytest.raises(SidecarBusy, match=r"another sampler \(pid \d+"):
            Sampler(sidecar, settings).open()
        # The CLI in another process: exit 1 and one clear line.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OASIS_OPS_", "OLLAMA_"))}
        env["OLLAMA_HOST"] = "127.0.0.1:9"
        done = subprocess.run(
            [sys.executable, "-m", "oasis_ops", "sample", "--once", "--db", str(tmp_path / "trials.duckdb")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "another sampler" in lines[0] and f"pid {os.getpid()}" in lines[0], done.stderr
    finally:
        first.close()
    # Once the first one is gone, a new one may start.
    Sampler(sidecar, settings).open().close()


def test_sample_once_creates_the_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # nothing listens: Ollama down is not an error
    db = tmp_path / "runs" / "trials.duckdb"
    db.parent.mkdir()
    assert cli_main(["sample", "--once", "--db", str(db)]) == 0
    sidecar = tmp_path / "runs" / "trials.ops.duckdb"
    assert sidecar.exists() and not db.exists()  # the trial DB is the runner's: never created by us
    out = capsys.readouterr().out
    assert "sampled once into" in out and "Ollama NOT reachable" in out
    store = Sidecar(sidecar)
    assert store.schema_version() >= 1
    host = records(store.host_samples_since(datetime(2000, 1, 1, tzinfo=UTC)))
    assert len(host) == 1 and host[0]["source"] == "linux:/proc" and host[0]["mem_free_bytes"] > 0
    assert [k for k, _ in kinds(sidecar)] == ["sampler_started", "ollama_unreachable", "sampler_stopped"]
    # Bad usage is one line and exit 2 (argparse: the flag's range).
    with pytest.raises(SystemExit) as refused:
        cli_main(["sample", "--once", "--db", str(db), "--interval", "0"])
    assert refused.value.code == 2


class FlakyHost(HostSource):
    """Host samples from a script: a HostSample, or an exception to raise."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.script = list(script)

    def detect(self) -> bool:
        return False

    def sample(self) -> HostSample:
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item


def host_sample(pressure: float, swapouts: int = 0) -> HostSample:
    return HostSample(ts=datetime.now(UTC), mem_total_bytes=8 << 30, mem_free_bytes=1 << 30, mem_available_bytes=2 << 30,
                      page_size=4096, pages_free=(1 << 30) // 4096, swap_used_bytes=0, swapins=0, swapouts=swapouts,
                      pressure=pressure, source="linux:/proc",
                      pressure_level="critical" if pressure >= 40 else "warn" if pressure >= 10 else "normal")  # fmt: skip


def test_pressure_changes_and_errors_inside_a_tick(tmp_path: Path) -> None:
    sidecar = tmp_path / "s.ops.duckdb"
    script = [host_sample(1), host_sample(15), ProbeError("vm_stat printed nothing"), RuntimeError("a bug"), host_sample(50), host_sample(2)]
    sampler = Sampler(sidecar, settings_for("http://127.0.0.1:9"), host_source=FlakyHost(script), flush_interval_s=0.0)
    sampler.open()
    reports = [sampler.tick() for _ in range(6)]
    sampler.close()
    # Errors are counted and reported, never raised; later ticks go on.
    assert [bool(r.errors) for r in reports] == [False, False, True, True, False, False]
    assert "vm_stat printed nothing" in reports[2].errors[0] and "RuntimeError: a bug" in reports[3].errors[0]
    assert sampler.errors == 2 and sampler.ticks == 6
    pressure = [e["detail"] for e in events(sidecar) if e["kind"] == "pressure"]
    assert [(p["from"], p["to"]) for p in pressure] == [("normal", "warn"), ("warn", "critical"), ("critical", "normal")]
    beat = Sidecar(sidecar).sampler_heartbeat()
    assert beat is not None and beat.errors == 2 and beat.last_error and "a bug" in beat.last_error


def test_one_thread_per_process_survives_errors_and_says_when_it_is_down(tmp_path: Path) -> None:
    sidecar = tmp_path / "t.ops.duckdb"
    settings = settings_for("http://127.0.0.1:9", sample_interval_s=0.05)
    host = FlakyHost([RuntimeError("tick bug"), host_sample(1)])
    first = get_sampler(sidecar, settings, host_source=host, flush_interval_s=0.1)
    try:
        again = get_sampler(Path(str(sidecar)), settings)  # same sidecar: the same running sampler
        assert again is first
        assert [t.name for t in threading.enumerate()].count(f"oasis-sampler:{sidecar.name}") == 1
        wait_until(lambda: first.ticks >= 5, timeout=20, what="five ticks")
        assert first.alive and first.errors >= 1  # the error did not end the thread
        wait_until(lambda: (Sidecar(sidecar).sampler_heartbeat() or None) and Sidecar(sidecar).sampler_heartbeat().ticks >= 3,
                   timeout=20, what="a heartbeat")  # fmt: skip
        assert Sidecar(sidecar).sampler_heartbeat().running
        assert first in running_samplers()
    finally:
        stop_sampler(sidecar)
    assert not first.alive and first not in running_samplers()
    beat = Sidecar(sidecar).sampler_heartbeat()
    assert beat is not None and not beat.running and "stopped" in beat.describe()
    later = Sidecar(sidecar).sampler_heartbeat(now=datetime.now(UTC) + timedelta(minutes=2))
    assert later is not None and not later.running


def test_a_dead_thread_releases_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = tmp_path / "d.ops.duckdb"
    settings = settings_for("http://127.0.0.1:9", sample_interval_s=0.05)
    sampler = Sampler(sidecar, settings, host_source=FlakyHost([host_sample(1)]))

    def explode(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("simulated crash outside the tick's error handling")

    monkeypatch.setattr(sampler, "run", explode)
    sampler.start()
    wait_until(lambda: not sampler.alive, what="the thread to die")
    assert sampler.died and "simulated crash" in sampler.died
    Sampler(sidecar, settings).open().close()  # the lock is free again
