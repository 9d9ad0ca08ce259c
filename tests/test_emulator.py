"""The Ollama emulator: API shapes, keep-alive, real runner processes, kills, Stopping, logs."""

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

from oasis_ops.demo.emulator import KeepAliveError, parse_keep_alive
from oasis_ops.demo.servelog import gin_line, go_duration, go_time_json, slog_line

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
    assert slog_line("INFO", "server.go:1301", "llama runner started in 3.71 seconds",
                     when=datetime(2025, 11, 20, 9, 0, 1, 920000, tzinfo=tz)) == (
        'time=2025-11-20T09:00:01.920+01:00 level=INFO source=server.go:1301 '
        'msg="llama runner started in 3.71 seconds"')
    assert go_time_json(datetime(2024, 6, 4, 14, 38, 31, 837530, tzinfo=timezone(timedelta(hours=-7)))) == \
        "2024-06-04T14:38:31.83753-07:00"


def test_keep_alive_parsing_follows_ollama() -> None:
    assert parse_keep_alive(None, 300) == 300
    assert parse_keep_alive(0, 300) == 0
    assert parse_keep_alive("0", 300) == 0
    assert parse_keep_alive("5m", 300) == 300
    assert parse_keep_alive("1h30m", 300) == 5400
    assert parse_keep_alive(2.5, 300) == 2.5
    assert parse_keep_alive(-1, 300) == float("inf")
    assert parse_keep_alive("-1m", 300) == float("inf")
    with pytest.raises(KeepAliveError, match="missing unit"):
        parse_keep_alive("5", 300)
    with pytest.raises(KeepAliveError, match="invalid duration"):
        parse_keep_alive("soon", 300)


# --- the API -------------------------------------------------------------------------------------
def test_api_shapes_models_and_processes(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert httpx.get(url + "/").text == "Ollama is running"
        assert httpx.get(url + "/api/version").json() == {"version": "0.20.4"}
        assert ps(url) == []
        tags = {m["name"] for m in httpx.get(url + "/api/tags").json()["models"]}
        assert {GEMMA, LLAMA, "gemma4:latest"} <= tags

        # /api/show: FROM names the weights blob; the manifest's model layer names the same file.
        show = httpx.post(url + "/api/show", json={"model": GEMMA}).json()
        blob = blob_of(url, GEMMA)
        assert Path(blob).is_file() and Path(blob).parent == emu.home.blobs_dir
        manifest = json.loads((emu.home.manifests_dir / "gemma4" / "e4b").read_text())
        layer = next(x for x in manifest["layers"] if x["mediaType"] == "application/vnd.ollama.image.model")
        assert blob.endswith(layer["digest"].replace(":", "-"))
        assert show["details"]["family"] == "gemma4" and "vision" in show["capabilities"]
        assert show["model_info"]["general.architecture"] == "gemma4" and "stop" in show["parameters"]

        for path, body in (("/api/show", {"model": "nope:1b"}), ("/api/generate", {"model": "nope:1b", "prompt": "x"}),
                           ("/api/chat", {"model": "nope:1b", "messages": [{"role": "user", "content": "x"}]})):
            resp = httpx.post(url + path, json=body)
            assert (resp.status_code, resp.json()) == (404, {"error": "model 'nope:1b' not found"})
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
            assert re.fullmatch(r"[0-9a-f]{64}", m["digest"])

        # One real child process per model, shaped like Ollama's runner, child of `ollama serve`.
        assert proc_cmdline(emu.pid) == [str(emu.home.bin_ollama), "serve"]
        for model in (GEMMA, LLAMA):
            pid = find_runner_pid(emu.pid, blob_of(url, model))
            argv = proc_cmdline(pid)
            assert argv[:5] == [str(emu.home.bin_ollama), "runner", "--ollama-engine", "--model", blob_of(url, model)]
            assert argv[5] == "--port" and argv[6].isdigit() and len(argv) == 7
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "ollama"
            assert proc_stat(pid)[1] == emu.pid  # type: ignore[index]
        # A tag sharing the blob shares the runner.
        assert generate(url, "gemma4:latest").status_code == 200
        assert len(runner_pids(emu.pid)) == 2


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
        # Durations are consistent with each other and with the wall time the client saw.
        parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
        assert parts <= final["total_duration"] <= wall_ns
        assert final["load_duration"] > 0  # the first request paid for the runner start

        # Concurrent streaming requests on one runner (NUM_PARALLEL=1 queues them): all complete,
        # and the ones that waited for the slot carry the wait in load_duration.
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
        waits = sorted(r["load_duration"] for r in results)
        assert waits[-1] > max(r["eval_duration"] for r in results) * 0.5


def test_empty_prompt_loads_and_keep_alive_zero_unloads(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        # Not loaded: answers at once anyway.
        resp = generate(url, keep_alive=0, prompt="")
        body = resp.json()
        assert set(body) == {"model", "created_at", "response", "done", "done_reason"}
        assert (body["response"], body["done"], body["done_reason"]) == ("", True, "unload")
        assert runner_pids(emu.pid) == []
        # Empty prompt without keep_alive 0 loads the model.
        assert generate(url, prompt="").json()["done_reason"] == "load"
        pid = find_runner_pid(emu.pid)
        assert ps_entry(url, GEMMA) is not None
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the model to leave /api/ps")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the runner to be gone (and reaped)")
        # Idle expiry unloads too.
        assert generate(url, keep_alive="1s").status_code == 200
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


def _busy(url: str) -> bool:
    runners = httpx.get(url + "/_demo/runners", timeout=5).json()["runners"]
    return any(r["in_flight"] > 0 for r in runners)


def test_sigkill_runner_fails_request_leaves_ghost_and_respawns(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        blob = blob_of(url, GEMMA)
        old_pid = find_runner_pid(emu.pid, blob)
        set_fault(url, "stall", True)  # keeps the next request in flight until we act
        results: dict[str, Any] = {}
        thread = _in_flight(url, results)
        wait_until(lambda: _busy(url), 5, what="the request to be in flight")
        os.kill(old_pid, signal.SIGKILL)
        thread.join(10)
        assert results.get("status") == 500
        assert "model runner has unexpectedly stopped" in results["body"]["error"]
        # Reaped by the emulator (no zombie), yet still listed: the ghost entry.
        wait_until(lambda: proc_stat(old_pid) is None, 5, what="the killed runner to be reaped")
        assert ps_entry(url, GEMMA) is not None and not is_stopping(ps_entry(url, GEMMA))  # type: ignore[arg-type]
        clear_faults(url)
        assert generate(url).status_code == 200
        new_pid = find_runner_pid(emu.pid, blob)
        assert new_pid != old_pid
        log = emu.server_log.read_text()
        assert 'level=WARN source=server.go:736 msg="llama runner process no longer running" sys=9 string="signal: killed"' in log
        assert log.count('msg="starting runner"') == 2
        assert re.search(r'\| 500 \|.*POST     "/api/generate"', log)


def test_stopping_while_stalled_ends_when_the_request_ends(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        set_fault(url, "stall", True)
        results: dict[str, Any] = {}
        thread = _in_flight(url, results)
        wait_until(lambda: _busy(url), 5, what="the request to be in flight")
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        entry = ps_entry(url, GEMMA)
        assert entry is not None and is_stopping(entry)
        time.sleep(1.0)  # the unload waits for the in-flight request: still Stopping, runner alive
        entry = ps_entry(url, GEMMA)
        assert entry is not None and is_stopping(entry) and proc_stat(pid) is not None
        set_fault(url, "stall", False)
        thread.join(10)
        assert results.get("status") == 200 and results["body"]["done"] is True
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the unload after the request ended")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the runner to be stopped")


def test_stopping_deadlock_ends_only_when_the_runner_is_killed(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        set_fault(url, "stopping_deadlock", True)
        with pytest.raises(httpx.TimeoutException):
            generate(url, timeout=1.0)  # the harness's request timeout: the client goes away
        assert generate(url, keep_alive=0, prompt="").json()["done_reason"] == "unload"
        set_fault(url, "stopping_deadlock", False)  # clearing the fault does not unwedge it
        time.sleep(1.5)
        entry = ps_entry(url, GEMMA)
        assert entry is not None and is_stopping(entry) and proc_stat(pid) is not None
        log = emu.server_log.read_text()
        assert "aborting completion request due to client closing the connection" in log
        assert re.search(r'\| 499 \|.*POST     "/api/generate"', log)
        os.kill(pid, signal.SIGKILL)  # the write-up's recovery
        wait_until(lambda: ps_entry(url, GEMMA) is None, 5, what="the deadlocked model to leave /api/ps")
        assert generate(url).status_code == 200
        assert find_runner_pid(emu.pid) != pid


def test_cli_runs_in_the_foreground_as_ollama_serve(tmp_path: Path) -> None:
    home = tmp_path / "emu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "oasis_ops", "demo", "ollama", "--port", "0", "--dir", str(home),
         "--latency-ms", "50", "--load-ms", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen: set[tuple[int, int]] = set()
    try:
        ready = home / "run" / "emulator.json"
        info = wait_until(lambda: json.loads(ready.read_text()) if ready.exists() else None, 20,
                          what="the emulator's ready file")
        # exec: the command we started *is* `ollama serve` now (same PID).
        assert info["pid"] == proc.pid
        assert proc_cmdline(proc.pid) == [str(home / "bin" / "ollama"), "serve"]
        assert generate(info["url"], prompt="").json()["done_reason"] == "load"
        runner = find_runner_pid(proc.pid)
        seen = {(p, proc_stat(p)[2]) for p in (proc.pid, runner)}  # type: ignore[index]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert info["url"] in out and str(home / "models") in out and str(home / "logs" / "server.log") in out
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
        threads.append(_in_flight(url, second))  # default keep_alive 5m, same runner
        time.sleep(0.3)
        set_fault(url, "stall", False)
        for t in threads:
            t.join(10)
        assert first.get("status") == second.get("status") == 200
        time.sleep(0.5)
        entry = ps_entry(url, GEMMA)
        assert entry is not None and not is_stopping(entry)  # the unload was called off
        assert find_runner_pid(emu.pid) == pid
