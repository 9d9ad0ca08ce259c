"""The Ollama emulator against Ollama's source, per version profile (0.20.4 and 0.32.15).

Each behaviour checked here is one Ollama's code has (server/sched.go, server/routes.go,
llm/server.go, llm/llama_server.go, api/types.go, envconfig/config.go at the release tags; see
oasis_ops/demo/ollama/profiles.py). These tests use the emulated models (fast, scriptable
timings); the real llama.cpp runner is tested in test_real_runner.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import (
    blob_of,
    clear_faults,
    find_runner_pid,
    is_stopping,
    leftovers,
    parse_expires_at,
    proc_cmdline,
    proc_stat,
    ps,
    ps_entry,
    runner_pids,
    running_emulator,
    set_fault,
    wait_until,
)

from oasis_ops.demo.ollama.goparse import KeepAliveError, parse_env_keep_alive, parse_keep_alive
from oasis_ops.demo.ollama.scheduler import ERR_MAX_QUEUE
from oasis_ops.demo.ollama.servelog import gin_line, go_duration, go_time_json, slog_line

GEMMA = "gemma4:e4b"
LLAMA = "llama3.2:3b"
RFC3339_FRACTION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)$")


def generate(url: str, model: str = GEMMA, timeout: float = 10.0, **body: Any) -> httpx.Response:
    payload = {"model": model, "prompt": "Why is the sky blue?", "stream": False, **body}
    return httpx.post(url + "/api/generate", json=payload, timeout=timeout)


# --- formats (no processes) ----------------------------------------------------------------------
def test_go_durations_and_gin_lines_match_ollamas_log(fixtures_dir: Path) -> None:
    assert [go_duration(s) for s in (312.417e-6, 0.666375868, 7.812337104, 60, 248.239102, 19869)] == [
        "312.417µs", "666.375868ms", "7.812337104s", "1m0s", "4m8.239102s", "5h31m9s"]
    when = datetime(2025, 11, 20, 9, 0, 5)
    line = gin_line(200, 7.812337104, "127.0.0.1", "POST", "/api/chat", when)
    assert line in (fixtures_dir / "ollama" / "server.log").read_text().splitlines()
    assert gin_line(200, 312.417e-6, "127.0.0.1", "GET", "/api/ps", datetime(2025, 11, 20, 9, 0, 10)) == \
        '[GIN] 2025/11/20 - 09:00:10 | 200 |     312.417µs |       127.0.0.1 | GET      "/api/ps"'
    # Gin drops the fraction of latencies over a minute.
    assert "|          1m0s |" in gin_line(499, 60.4, "127.0.0.1", "POST", "/api/chat", when)
    tz = timezone(timedelta(hours=1))
    assert go_time_json(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"  # Go's zero time
    assert slog_line("INFO", "server.go:1301", "llama runner started in 3.71 seconds",
                     when=datetime(2025, 11, 20, 9, 0, 1, 920000, tzinfo=tz)) == (
        'time=2025-11-20T09:00:01.920+01:00 level=INFO source=server.go:1301 '
        'msg="llama runner started in 3.71 seconds"')
    assert go_time_json(datetime(2024, 6, 4, 14, 38, 31, 837530, tzinfo=timezone(timedelta(hours=-7)))) == \
        "2024-06-04T14:38:31.83753-07:00"


def test_keep_alive_parsing_follows_ollama() -> None:
    # api.Duration.UnmarshalJSON: numbers are seconds, negative is forever, strings are Go durations
    assert parse_keep_alive(None, 300) == 300
    assert parse_keep_alive(0, 300) == 0
    assert parse_keep_alive("0", 300) == 0
    assert parse_keep_alive("5m", 300) == 300
    assert parse_keep_alive("1h30m", 300) == 5400
    assert parse_keep_alive(2.5, 300) == 2.5
    assert parse_keep_alive(-1, 300) == float("inf")
    assert parse_keep_alive("-1m", 300) == float("inf")
    with pytest.raises(KeepAliveError, match="missing unit"):
        parse_keep_alive("300", 300)  # a bare number in a string is NOT seconds in a request
    with pytest.raises(KeepAliveError, match="invalid duration"):
        parse_keep_alive("soon", 300)
    with pytest.raises(KeepAliveError, match="Unsupported type: 'bool'"):
        parse_keep_alive(True, 300)
    # envconfig.KeepAlive: a duration, else whole seconds, else 5m silently; negative is forever
    assert parse_env_keep_alive("10m") == 600 and parse_env_keep_alive("300") == 300
    assert parse_env_keep_alive("-1") == float("inf") and parse_env_keep_alive("1.5") == 300
    assert parse_env_keep_alive("junk") == 300 and parse_env_keep_alive("") == 300


def _runner_shape(version: str, emu: Any, model: str, arch_engine: bool) -> list[str]:
    blob = blob_of(emu.url, model)
    argv = proc_cmdline(find_runner_pid(emu.pid, blob))
    if version == "0.20.4":
        engine = ["--ollama-engine"] if arch_engine else []
        assert argv[: 2 + len(engine) + 2] == [str(emu.home.bin_ollama), "runner", *engine, "--model", blob]
        assert argv[-2] == "--port" and argv[-1].isdigit()
    else:
        assert argv[:3] == [str(emu.home.llama_server), "--model", blob]
        flags = argv[3:]
        assert flags[:6] == ["--port", flags[1], "--host", "127.0.0.1", "--no-webui", "--offline"]
        assert ["--log-verbosity", "4", "--no-log-prefix", "--no-log-timestamps"] == flags[10:14]
        assert flags[-2] == "--flash-attn"
    return argv


# --- the API, per version --------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.20.4", "0.32.15"])
def test_api_shapes_runner_argv_and_log_lines_per_version(tmp_path: Path, version: str) -> None:
    with running_emulator(tmp_path, version=version, flash_attention=None) as emu:
        url = emu.url
        assert httpx.get(url + "/").text == "Ollama is running"
        assert httpx.get(url + "/api/version").json() == {"version": version}
        assert ps(url) == []
        tags = {m["name"] for m in httpx.get(url + "/api/tags").json()["models"]}
        assert {GEMMA, LLAMA, "gemma4:latest", "smollm2:135m"} <= tags

        # /api/show: FROM names the weights blob; the manifest's model layer names the same file,
        # and the blob's GGUF header says the architecture.
        show = httpx.post(url + "/api/show", json={"model": GEMMA}).json()
        blob = blob_of(url, GEMMA)
        assert Path(blob).is_file() and Path(blob).parent == emu.home.blobs_dir
        manifest = json.loads((emu.home.manifests_dir / "gemma4" / "e4b").read_text())
        layer = next(x for x in manifest["layers"] if x["mediaType"] == "application/vnd.ollama.image.model")
        assert blob.endswith(layer["digest"].replace(":", "-"))
        assert show["details"]["family"] == "gemma4" and "vision" in show["capabilities"]
        assert show["model_info"]["general.architecture"] == "gemma4" and "stop" in show["parameters"]
        assert Path(blob).read_bytes()[:4] == b"GGUF"

        # routes.go handleScheduleError / GenerateHandler: exact error bodies
        resp = httpx.post(url + "/api/generate", json={"model": "nope:1b", "prompt": "x"})
        assert (resp.status_code, resp.json()) == (404, {"error": 'model "nope:1b" not found, try pulling it first'})
        bad = generate(url, keep_alive="5")
        assert bad.status_code == 400 and "missing unit" in bad.json()["error"]

        # Two models, different keep-alives: /api/ps sorted by expires_at, latest first.
        assert generate(url, LLAMA, keep_alive="1h").status_code == 200
        before = datetime.now(UTC)
        assert generate(url, GEMMA, keep_alive=-1).status_code == 200
        models = ps(url)
        assert [m["name"] for m in models] == [GEMMA, LLAMA]
        forever, hour = (parse_expires_at(m["expires_at"]) for m in models)
        assert forever.year > 2300
        assert timedelta(minutes=59) < hour - before < timedelta(minutes=61)
        for m in models:
            assert RFC3339_FRACTION.match(m["expires_at"]), m["expires_at"]
            assert m["size_vram"] == m["size"] > 1e9 and m["context_length"] == 4096
            assert set(m) == {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"}

        # One runner child of `ollama serve` per model, with that version's command line.
        assert proc_cmdline(emu.pid) == [str(emu.home.bin_ollama), "serve"]
        _runner_shape(version, emu, GEMMA, arch_engine=True)  # gemma4 needs the Ollama engine
        _runner_shape(version, emu, LLAMA, arch_engine=False)  # llama runs on llama.cpp's engine
        assert generate(url, "gemma4:latest").status_code == 200  # a tag sharing the blob shares the runner
        assert len(runner_pids(emu.pid)) == 2

        log = emu.server_log.read_text()
        assert f'msg="Listening on 127.0.0.1:{emu.port} (version {version})"' in log
        if version == "0.20.4":
            # two model runners, plus the GPU-discovery runner at start-up (no --model): 0.20 logs it too
            assert log.count('msg="starting runner"') == 3 and 'msg="llama runner started in ' in log
            assert re.search(r'msg="starting runner" cmd="\S+/bin/ollama runner --ollama-engine --port \d+"', log)
            assert "print_timing" not in log  # 0.20 runners print no per-request timings at INFO
            # flash attention unset: on for gemma4 (its allow-list), Auto for llama's engine
            assert 'msg="enabling flash attention"' in log and "FlashAttention:Enabled" in log
            assert "FlashAttention:Auto" in log
        else:
            assert log.count('msg="starting llama-server"') == 2 and 'msg="llama-server started in ' in log
            assert "slot print_timing: id  0 | task 0 | prompt eval time =" in log
            assert log.count("--flash-attn auto") == 2  # unset: auto for every model


def test_streaming_and_duration_fields(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=150) as emu:
        started = time.monotonic()
        with httpx.stream("POST", emu.url + "/api/generate", json={"model": GEMMA, "prompt": "hello"}, timeout=10) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            chunks = [json.loads(line) for line in r.iter_lines() if line]
        wall_ns = (time.monotonic() - started) * 1e9
        assert len(chunks) >= 3 and all(not c["done"] for c in chunks[:-1])
        assert all(set(c) == {"model", "created_at", "response", "done"} for c in chunks[:-1])
        final = chunks[-1]
        assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
        assert final["eval_count"] == len(chunks) - 1 and final["prompt_eval_count"] > 0
        parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
        assert parts <= final["total_duration"] <= wall_ns
        assert final["load_duration"] > 0  # the first request paid for the runner start

        # Concurrent requests on one runner (NUM_PARALLEL=1: Ollama's per-runner semaphore queues them).
        results: list[dict[str, Any]] = []

        def chat() -> None:
            body = {"model": GEMMA, "messages": [{"role": "user", "content": "hi"}], "stream": False}
            results.append(httpx.post(emu.url + "/api/chat", json=body, timeout=20).json())

        threads = [threading.Thread(target=chat) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and all(r["done"] and r["message"]["role"] == "assistant" for r in results)
        totals = sorted(r["total_duration"] for r in results)
        # the last one waited for the slot: its total holds the two others' generations, so it is
        # longer than the two shortest evals together (each eval is jittered: 2x the longest was a flake)
        evals = sorted(r["eval_duration"] for r in results)
        assert totals[-1] > evals[0] + evals[1], (totals, evals)


def test_empty_prompt_loads_and_keep_alive_zero_unloads(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        resp = generate(url, keep_alive=0, prompt="")  # not loaded: answered at once anyway
        body = resp.json()
        assert set(body) == {"model", "created_at", "response", "done", "done_reason"}
        assert (body["response"], body["done"], body["done_reason"]) == ("", True, "unload")
        assert runner_pids(emu.pid) == []
        assert generate(url, prompt="").json()["done_reason"] == "load"
        pid = find_runner_pid(emu.pid)
        assert ps_entry(url, GEMMA) is not None
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the model to leave /api/ps")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the runner to be gone (and reaped)")
        assert generate(url, keep_alive="1s").status_code == 200  # idle expiry unloads too
        expiring = find_runner_pid(emu.pid)
        wait_until(lambda: ps_entry(url, GEMMA) is None, 6, what="keep_alive 1s expiry")
        wait_until(lambda: proc_stat(expiring) is None, 5, what="the expired runner to be gone")


def _in_flight(url: str, results: dict[str, Any], timeout: float = 30.0, **body: Any) -> threading.Thread:
    def run() -> None:
        try:
            resp = generate(url, timeout=timeout, **body)
            results["status"] = resp.status_code
            results["body"] = resp.json()
        except httpx.HTTPError as exc:
            results["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _runners(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/_demo/runners", timeout=5).json()["runners"])


def _busy(url: str) -> bool:
    return any(r["in_flight"] > 0 for r in _runners(url))


@pytest.mark.parametrize(("version", "warning"), [
    ("0.20.4", 'level=WARN source=server.go:1284 msg="llama runner process no longer running" sys=9 string="signal: killed"'),
    ("0.32.15", 'level=WARN source=llama_server.go:1196 msg="llama-server process no longer running" sys=9 string="signal: killed"'),
])  # fmt: skip
def test_sigkill_runner_fails_request_leaves_ghost_and_respawns(tmp_path: Path, version: str, warning: str) -> None:
    with running_emulator(tmp_path, version=version) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        blob = blob_of(url, GEMMA)
        old_pid = find_runner_pid(emu.pid, blob)
        set_fault(url, "stall", True)  # keeps the next request in flight until we act
        results: dict[str, Any] = {}
        thread = _in_flight(url, results)
        wait_until(lambda: any(r["answering"] for r in _runners(url)), 15, what="the runner's answer to begin")
        os.kill(old_pid, signal.SIGKILL)
        thread.join(10)
        # its answer had started: Ollama's error for a runner that dies mid-stream (500, stream false)
        assert results.get("status") == 500
        assert results["body"]["error"] == "an error was encountered while running the model: unexpected EOF"
        # Reaped by the emulator (no zombie), yet still listed: the ghost entry.
        wait_until(lambda: proc_stat(old_pid) is None, 5, what="the killed runner to be reaped")
        assert ps_entry(url, GEMMA) is not None and not is_stopping(ps_entry(url, GEMMA))  # type: ignore[arg-type]
        assert warning not in emu.server_log.read_text()  # nothing is logged at the kill itself
        clear_faults(url)
        assert generate(url).status_code == 200  # the next request's ping notices, logs, reloads
        new_pid = find_runner_pid(emu.pid, blob)
        assert new_pid != old_pid
        log = emu.server_log.read_text()
        assert warning in log
        assert re.search(r'\| 500 \|.*POST     "/api/generate"', log)


def test_a_client_leaving_releases_its_hold_so_keep_alive_zero_unloads(tmp_path: Path) -> None:
    """sched.go: a request's reference ends when its context ends (the client disconnecting),
    not when the runner finishes: a wedged generation no longer blocks the unload once its
    client has gone. The runner is SIGKILLed by the unload."""
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        set_fault(url, "stopping_deadlock", True)  # the next request wedges for good
        with pytest.raises(httpx.TimeoutException):
            generate(url, timeout=1.0)  # the harness's timeout: the client goes away
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the unload once no client holds the runner")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the wedged runner to be killed and reaped")
        log = emu.server_log.read_text()
        assert re.search(r'\| 500 \|.*POST     "/api/generate"', log)  # not 499: it was generating
        assert '| 499 |' not in log


def test_stopping_lasts_while_a_client_stays_connected_to_a_wedged_runner(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        set_fault(url, "stopping_deadlock", True)
        results: dict[str, Any] = {}
        thread = _in_flight(url, results, timeout=4.0)  # a client that waits 4 s, then gives up
        wait_until(lambda: _busy(url), 5, what="the wedged request")
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        time.sleep(1.5)
        entry = ps_entry(url, GEMMA)
        assert entry is not None and is_stopping(entry) and proc_stat(pid) is not None  # Stopping...
        set_fault(url, "stopping_deadlock", False)  # clearing the fault does not unwedge it
        thread.join(10)
        assert isinstance(results.get("error"), httpx.TimeoutException)
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the unload when the client left")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the runner to be killed")


def test_a_busy_model_shows_stopping_because_its_expiry_is_not_renewed(tmp_path: Path) -> None:
    """useLoadedRunner adds a reference but does not renew expires_at; only the last reference
    going away does. A request longer than keep_alive makes a healthy model look Stopping."""
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url, keep_alive="1s").status_code == 200
        set_fault(url, "stall", True, stall_s=3)
        results: dict[str, Any] = {}
        thread = _in_flight(url, results, keep_alive="1s")
        time.sleep(2.0)
        entry = ps_entry(url, GEMMA)
        assert entry is not None and is_stopping(entry) and _busy(url)
        thread.join(10)
        assert results.get("status") == 200  # it was healthy all along
        entry = ps_entry(url, GEMMA)
        assert entry is None or not is_stopping(entry)


@pytest.mark.parametrize(("version", "model", "listed"), [
    ("0.20.4", GEMMA, True),     # the Ollama engine is listed while its weights load
    ("0.20.4", LLAMA, False),    # llama.cpp's engine only once it answers
    ("0.32.15", GEMMA, False),   # llama-server: only once it answers
])  # fmt: skip
def test_ps_during_a_load_per_version(tmp_path: Path, version: str, model: str, listed: bool) -> None:
    """/api/ps never waits for a GGUF load; what it lists meanwhile depends on the engine. A
    not-yet-set expiry (no request has ended) is shown as now + keep-alive, never year 1."""
    with running_emulator(tmp_path, version=version, load_ms=1500) as emu:
        url = emu.url
        results: dict[str, Any] = {}
        thread = _in_flight(url, results, model=model)
        wait_until(lambda: runner_pids(emu.pid), 5, what="the runner to be spawned")
        time.sleep(0.2)
        started = time.monotonic()
        models = ps(url)
        assert time.monotonic() - started < 0.5
        assert [m["name"] for m in models] == ([model] if listed else [])
        for m in models:
            assert parse_expires_at(m["expires_at"]) > datetime.now(UTC)
        thread.join(10)
        assert results.get("status") == 200


def test_ps_waits_for_a_runner_being_pinged_from_0_32_4(tmp_path: Path) -> None:
    """From 0.32.4 /api/ps takes each runner's lock, which a reuse ping holds for up to 10 s
    (here 2 s) when the runner does not answer (SIGSTOPped); 0.30 answers at once."""
    for version, waits in (("0.30.0", False), ("0.32.15", True)):
        with running_emulator(tmp_path / version, version=version, extra_env={"OASIS_EMU_PING_TIMEOUT_S": "2"}) as emu:
            assert generate(emu.url).status_code == 200
            pid = find_runner_pid(emu.pid)
            os.kill(pid, signal.SIGSTOP)
            try:
                results: dict[str, Any] = {}
                thread = _in_flight(emu.url, results, timeout=1.0)  # its ping waits on the stopped runner
                time.sleep(0.3)
                started = time.monotonic()
                ps(emu.url)
                took = time.monotonic() - started
                assert (took > 1.0) is waits, (version, took)
                thread.join(10)
            finally:
                os.kill(pid, signal.SIGCONT)


def test_a_client_leaving_during_the_load_is_logged_499(tmp_path: Path) -> None:
    with running_emulator(tmp_path, load_ms=2000) as emu:
        with pytest.raises(httpx.TimeoutException):
            generate(emu.url, timeout=0.5)
        wait_until(lambda: re.search(r'\| 499 \|.*POST     "/api/generate"', emu.server_log.read_text()), 5,
                   what="the 499 access line")  # fmt: skip


def test_a_client_leaving_while_waiting_for_a_slot_is_an_abort_line(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        set_fault(url, "stall", True)
        first: dict[str, Any] = {}
        thread = _in_flight(url, first)
        wait_until(lambda: _busy(url), 5, what="the first request")
        with pytest.raises(httpx.TimeoutException):
            generate(url, timeout=1.0)  # waits for the one slot, then leaves
        wait_until(lambda: "aborting completion request due to client closing the connection" in emu.server_log.read_text(),
                   5, what="the abort line")  # fmt: skip
        clear_faults(url)
        thread.join(10)
        assert first.get("status") == 200


def test_max_queue_overflow_is_503(tmp_path: Path) -> None:
    """getRunner: only requests that need a load are queued; a full pending queue
    (OLLAMA_MAX_QUEUE) answers ErrMaxQueue at once. While a llama-server loads, the scheduler
    waits for it, so requests for other models pile up in the queue."""
    with running_emulator(tmp_path, load_ms=2500, max_queue=1) as emu:
        url = emu.url
        loading = _in_flight(url, {})
        time.sleep(0.8)  # the scheduler is busy loading gemma4
        queued = _in_flight(url, {}, model=LLAMA)  # needs a load: waits in the queue's one place
        time.sleep(0.3)
        resp = generate(url, model="qwen3:0.6b")
        assert (resp.status_code, resp.json()) == (503, {"error": ERR_MAX_QUEUE})
        for t in (loading, queued):
            t.join(15)
        assert generate(url).status_code == 200  # a loaded model never queues: served at once


def test_max_loaded_models_evicts_the_idle_one(tmp_path: Path) -> None:
    with running_emulator(tmp_path, max_loaded_models=1) as emu:
        url = emu.url
        assert generate(url, GEMMA).status_code == 200
        gemma = find_runner_pid(emu.pid, blob_of(url, GEMMA))
        assert generate(url, LLAMA).status_code == 200
        assert [m["name"] for m in ps(url)] == [LLAMA]
        wait_until(lambda: proc_stat(gemma) is None, 5, what="the evicted runner to be gone")


def test_request_during_stopping_reuses_the_runner_and_postpones_the_unload(tmp_path: Path) -> None:
    with running_emulator(tmp_path, num_parallel=2) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        set_fault(url, "stall", True)
        first: dict[str, Any] = {}
        second: dict[str, Any] = {}
        threads = [_in_flight(url, first)]
        wait_until(lambda: _busy(url), 5, what="the first request to be in flight")
        generate(url, keep_alive=0, prompt="")
        assert is_stopping(ps_entry(url, GEMMA))  # type: ignore[arg-type]
        threads.append(_in_flight(url, second, keep_alive="5m"))  # same runner, session back to 5m
        time.sleep(0.3)
        set_fault(url, "stall", False)
        for t in threads:
            t.join(10)
        assert first.get("status") == second.get("status") == 200
        time.sleep(0.5)
        entry = ps_entry(url, GEMMA)
        assert entry is not None and not is_stopping(entry)  # the unload was called off
        assert find_runner_pid(emu.pid) == pid


def test_cli_runs_in_the_foreground_as_ollama_serve(tmp_path: Path) -> None:
    home = tmp_path / "emu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "oasis_ops", "demo", "ollama", "--port", "0", "--dir", str(home),
         "--latency-ms", "50", "--load-ms", "0", "--version", "0.20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: set[tuple[int, int]] = set()
    try:
        ready = home / "run" / "emulator.json"
        info = wait_until(lambda: json.loads(ready.read_text()) if ready.exists() else None, 20,
                          what="the emulator's ready file")  # fmt: skip
        assert info["pid"] == proc.pid and info["version"] == "0.20.4"  # exec: same PID
        assert proc_cmdline(proc.pid) == [str(home / "bin" / "ollama"), "serve"]
        assert generate(info["url"], prompt="").json()["done_reason"] == "load"
        runner = find_runner_pid(proc.pid)
        assert proc_cmdline(runner)[1] == "runner"  # the 0.20 shape
        seen = {(p, proc_stat(p)[2]) for p in (proc.pid, runner)}  # type: ignore[index]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert info["url"] in out and str(home / "models") in out and str(home / "logs" / "server.log") in out
        assert "Ollama 0.20.4" in out
        assert not ready.exists()
        wait_until(lambda: not leftovers(seen), 5, what="no process left")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runners_never_outlive_a_killed_emulator(tmp_path: Path) -> None:
    """Unlike real Ollama (orphaned runners keep their memory), ours exit when serve dies."""
    with running_emulator(tmp_path) as emu:
        assert generate(emu.url, prompt="").status_code == 200
        runner = find_runner_pid(emu.pid)
        start = proc_stat(runner)[2]  # type: ignore[index]
        os.kill(emu.pid, signal.SIGKILL)
        assert emu.proc is not None and emu.proc.wait(5) == -signal.SIGKILL
        wait_until(lambda: not leftovers({(runner, start)}), 5, what="the orphaned runner to exit")
