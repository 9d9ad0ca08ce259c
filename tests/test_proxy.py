"""The recording proxy against a real HTTP upstream on loopback that counts what reaches it
(tests/helpers_proxy.py): what it records, how the control channel throttles it, how it holds
requests through a recovery, who may use it. The same proxy against the demo Ollama on the
real llama.cpp runner, with the official clients, is in test_proxy_real.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers_proxy import CountingOllama, running_proxy, trial_rows, wait_for

from oasis_ops.access import parse_listen
from oasis_ops.control import ControlChannel
from oasis_ops.control.recovery import RECOVERY_FILE, recovery_in_progress
from oasis_ops.errors import UsageError
from oasis_ops.proxy.gate import FairGate, QueueFull
from oasis_ops.proxy.record import classify, error_in_body, token_counts
from oasis_ops.proxy.service import plan_proxy
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar


@pytest.fixture
def upstream() -> CountingOllama:
    server = CountingOllama()
    yield server
    server.close()


def gen(url: str, prompt: str, stream: bool = True, timeout: float = 30.0, **extra: object) -> httpx.Response:
    return httpx.post(url + "/api/generate", json={"model": "m:1b", "prompt": prompt, "stream": stream, **extra}, timeout=timeout)


def in_threads(*calls: object) -> list[object]:
    results: list[object] = [None] * len(calls)

    def run(i: int, call: object) -> None:
        try:
            results[i] = call()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
        time.sleep(0.05)  # a known arrival order
    return [threads, results]  # type: ignore[list-item]


def test_a_streamed_and_a_plain_call_become_ok_trials_with_counts_latency_and_the_run_id(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url, run_id="eval-7") as proxy:
        start = time.monotonic()
        with httpx.stream("POST", proxy.url + "/api/generate", json={"model": "m:1b", "prompt": "a"}) as resp:
            arrivals = [time.monotonic() - start for _ in resp.iter_lines()]
        streamed_s = time.monotonic() - start
        plain = gen(proxy.url, "b", stream=False)
        assert plain.status_code == 200 and plain.json()["response"] == "t0 t1 t2 t3 t4 "
        assert httpx.get(proxy.url + "/api/version").json() == {"version": "0.12.6"}  # passed through, not a trial
    # token by token: the first line arrived long before the last (5 tokens, 50 ms apart)
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] > 0.15
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert [(r["status"], r["model"], r["run_id"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        ("ok", "m:1b", "eval-7", 7, 5), ("ok", "m:1b", "eval-7", 7, 5)]
    assert abs(rows[0]["latency_ms"] / 1000 - streamed_s) < 0.1 and rows[0]["latency_ms"] >= 250
    assert rows[0]["finished_at"] > rows[0]["started_at"] and rows[0]["error"] is None
    assert rows[0]["queued_ms"] < 50


def test_an_upstream_500_and_an_error_inside_a_stream_are_errors_with_ollamas_reason(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url) as proxy:
        upstream.mode = "500"
        failed = gen(proxy.url, "a", stream=False)
        assert failed.status_code == 500 and "llama runner process has terminated" in failed.json()["error"]  # unchanged
        upstream.mode = "midstream"
        with httpx.stream("POST", proxy.url + "/api/chat", json={"model": "m:1b", "messages": [{"role": "user", "content": "b"}]}) as resp:
            lines = [json.loads(line) for line in resp.iter_lines() if line]
        assert resp.status_code == 200 and "error" in lines[-1]
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert [(r["status"], r["error"]) for r in rows] == [
        ("error", "upstream 500: llama runner process has terminated: signal: killed"),
        ("error", "error in the answer: an error was encountered while running the model: unexpected EOF")]


def test_a_client_that_gives_up_is_a_timeout_and_the_upstream_call_is_cancelled(tmp_path: Path, upstream: CountingOllama) -> None:
    upstream.tokens, upstream.token_s = 40, 0.05  # 2 s of answer
    with running_proxy(tmp_path, upstream.url) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            gen(proxy.url, "slow", stream=False, timeout=0.4)
        # the proxy closed its upstream connection: the upstream's write fails, its request ends
        wait_for(lambda: upstream.disconnects == 1 and upstream.in_flight == 0, timeout=5, what="the upstream call to end")
        wait_for(lambda: proxy.app.counters.trials == 1, what="the trial to be recorded")
    (row,) = trial_rows(tmp_path / "trials.duckdb")
    assert row["status"] == "timeout" and row["error"] == "client disconnected before Ollama answered"
    assert 350 <= row["latency_ms"] <= 1500


def test_concurrency_1_lets_three_concurrent_requests_through_one_at_a_time_in_order(tmp_path: Path, upstream: CountingOllama) -> None:
    upstream.tokens = 30  # 1.5 s each: state.json (a heartbeat a second) sees the queue
    with running_proxy(tmp_path, upstream.url) as proxy:
        channel = ControlChannel(proxy.plan.control_dir)
        state = channel.wait_applied(channel.request(max_concurrency=1, requested_by="test"), timeout_s=5)
        assert state.kind == "proxy" and state.max_concurrency == 1
        threads, results = in_threads(*(lambda p=p: gen(proxy.url, p) for p in ("first", "second", "third")))
        wait_for(lambda: proxy.gate.queued == 2, what="two requests queued")
        state = wait_for(lambda: (s := channel.runner_state()) and s.queued == 2 and s)
        assert state.in_flight == 1 and "1 in flight, 2 queued" in state.describe()
        for t in threads:
            t.join(10)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert upstream.max_in_flight == 1 and upstream.order == ["first", "second", "third"]  # FIFO, never two at once
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert sorted(r["queued_ms"] > 1000 for r in rows) == [False, True, True]  # two of them waited their turn


def test_pause_holds_requests_and_resume_releases_them_none_lost(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url) as proxy:
        channel = ControlChannel(proxy.plan.control_dir)
        channel.wait_applied(channel.request(paused=True, requested_by="test"), timeout_s=5)
        threads, results = in_threads(*(lambda p=p: gen(proxy.url, p) for p in ("a", "b", "c")))
        time.sleep(0.5)
        assert upstream.order == [] and proxy.gate.queued == 3  # held, not refused
        wait_for(lambda: "3 queued" in channel.runner_state().describe(), what="state.json to show the queue")
        channel.wait_applied(channel.request(paused=False, requested_by="test"), timeout_s=5)
        for t in threads:
            t.join(10)
    # released together: all three answered (their order upstream is the connection pool's)
    assert [r.status_code for r in results] == [200, 200, 200] and sorted(upstream.order) == ["a", "b", "c"]
    assert [r["status"] for r in trial_rows(tmp_path / "trials.duckdb")] == ["ok"] * 3


def test_beyond_the_queue_limit_a_request_gets_a_clear_503_and_is_recorded(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url, proxy_max_queue=1, proxy_max_concurrency=1) as proxy:
        threads, results = in_threads(lambda: gen(proxy.url, "a"), lambda: gen(proxy.url, "b"))
        wait_for(lambda: proxy.gate.queued == 1, what="one queued")
        refused = gen(proxy.url, "c")
        for t in threads:
            t.join(10)
    assert refused.status_code == 503 and refused.json()["error"].startswith("oasis-ops proxy queue is full: 1 requests")
    assert [r.status_code for r in results] == [200, 200]
    statuses = sorted(r["status"] for r in trial_rows(tmp_path / "trials.duckdb"))
    assert statuses == ["error", "ok", "ok"]


def test_a_client_that_leaves_while_queued_is_a_timeout_and_frees_its_place(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url, proxy_max_concurrency=1) as proxy:
        threads, results = in_threads(lambda: gen(proxy.url, "long"))
        wait_for(lambda: upstream.in_flight == 1, what="the first in flight")
        with pytest.raises(httpx.ReadTimeout):
            gen(proxy.url, "impatient", timeout=0.1)
        wait_for(lambda: proxy.gate.queued == 0, what="the queue to empty")
        assert gen(proxy.url, "next").status_code == 200
        threads[0].join(10)
    rows = {r["error"] or r["status"] for r in trial_rows(tmp_path / "trials.duckdb")}
    assert "ok" in rows and any(str(e).startswith("client disconnected after 0.1 s while held in the proxy queue (max concurrency 1)") for e in rows)
    assert upstream.order == ["long", "next"]


def test_a_recovery_in_progress_holds_new_requests_then_one_probes_and_the_rest_follow_audited(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url) as proxy:
        with recovery_in_progress(proxy.plan.control_dir, "hard_kill", "m:1b", "watchdog"):
            wait_for(lambda: proxy.gate.hold_reason, what="the hold")
            threads, results = in_threads(*(lambda p=p: gen(proxy.url, p) for p in ("a", "b", "c")))
            time.sleep(0.4)
            assert upstream.order == [] and proxy.gate.queued == 3
            channel = ControlChannel(proxy.plan.control_dir)
            state = wait_for(lambda: (s := channel.runner_state()) and s.queued == 3 and s, what="state.json to show the hold")
            assert state.held == "hard_kill of m:1b in progress (requested by watchdog)"
        assert not (proxy.plan.control_dir / RECOVERY_FILE).exists()
        for t in threads:
            t.join(10)
        wait_for(lambda: not proxy.gate.probing and proxy.housekeeper._marker is None, what="the release")
    assert [r.status_code for r in results] == [200, 200, 200] and upstream.order[0] == "a"
    assert sorted(upstream.order[1:]) == ["b", "c"]
    # "a" went alone; b and c only once the upstream had started answering it (its first token: 50 ms)
    assert upstream.arrivals[1] - upstream.arrivals[0] >= 0.045 and upstream.arrivals[2] - upstream.arrivals[0] >= 0.045
    audit = Sidecar(proxy.plan.sidecar).actions_since(time_zero())
    assert list(audit["action"]) == ["proxy_hold", "proxy_release"]
    release = json.loads(audit["detail"].iloc[1])
    assert audit["outcome"].iloc[1] == "done" and release["most_queued"] == 3
    assert "the runner answered again (3 were waiting)" in release["message"]


def time_zero():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


def test_a_marker_whose_writer_is_gone_holds_nothing(tmp_path: Path, upstream: CountingOllama) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with running_proxy(tmp_path, upstream.url) as proxy:
        (proxy.plan.control_dir / RECOVERY_FILE).write_text(json.dumps(
            {"action": "hard_kill", "model": "m", "started_at": "2099-01-01T00:00:00+00:00", "pid": dead.pid}))
        time.sleep(0.5)
        assert proxy.gate.hold_reason is None and gen(proxy.url, "a").status_code == 200


def test_with_an_access_secret_every_request_needs_it_refusals_audited_and_the_secret_not_forwarded(tmp_path: Path, upstream: CountingOllama) -> None:
    secret = "s3cret-for-the-proxy"
    with running_proxy(tmp_path, upstream.url, access_secret=secret) as proxy:
        assert gen(proxy.url, "a").status_code == 401
        wrong = httpx.post(proxy.url + "/v1/chat/completions", headers={"Authorization": "Bearer nope"},
                           json={"model": "m", "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "proxy_error"  # the OpenAI shape on /v1
        ok = httpx.post(proxy.url + "/api/generate", headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "m", "prompt": "b", "stream": False})  # fmt: skip
        assert ok.status_code == 200
        wait_for(lambda: len(Sidecar(proxy.plan.sidecar).actions_since(time_zero())) == 2 if proxy.plan.sidecar.exists() else False)
    assert "authorization" not in upstream.headers[0]
    audit = Sidecar(proxy.plan.sidecar).actions_since(time_zero())
    assert list(audit["action"]) == ["proxy_access"] * 2 and set(audit["outcome"]) == {"refused"}


def test_binding_off_loopback_needs_a_secret_and_the_proxy_never_forwards_to_itself(tmp_path: Path) -> None:
    settings = load_settings(env={})
    with pytest.raises(UsageError, match="refusing to listen on 0.0.0.0 without an access secret"):
        plan_proxy(settings, db=str(tmp_path / "t.duckdb"), listen="0.0.0.0:11435")
    with pytest.raises(UsageError, match="is the proxy's own address"):
        plan_proxy(settings, db=str(tmp_path / "t.duckdb"), upstream="127.0.0.1:11435", listen="localhost:11435")
    with pytest.raises(UsageError, match="needs a trial database"):
        plan_proxy(settings)
    assert parse_listen("[::1]:8080") == ("::1", 8080) and parse_listen(":9") == ("127.0.0.1", 9)
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        parse_listen("localhost")
    plan = plan_proxy(settings.replace(ollama_host="http://10.1.2.3:11434"), db=str(tmp_path / "t.duckdb"))
    assert plan.upstream == "http://10.1.2.3:11434" and (plan.host, plan.port) == ("127.0.0.1", 11435)
    assert plan.run_id.startswith("proxy-") and plan.control_dir == tmp_path / "t.control"


def test_load_and_unload_requests_and_oversized_bodies(tmp_path: Path, upstream: CountingOllama) -> None:
    with running_proxy(tmp_path, upstream.url, proxy_max_body_mb=0.01) as proxy:
        assert gen(proxy.url, "", keep_alive=0, stream=False).status_code == 200  # an unload: passed, not a trial
        big = gen(proxy.url, "x" * 20_000)
        assert big.status_code == 413 and "over" in big.json()["error"]
        # a model upload is no model call: streamed through whatever its size, never held whole
        blob = httpx.post(proxy.url + "/api/blobs/sha256:" + "0" * 64, content=b"x" * (160 * 65536), timeout=30)
        assert blob.status_code == 201 and upstream.uploaded == 160 * 65536  # 10 MB through a 0.01 MB cap
    assert upstream.order == [""]
    assert not (tmp_path / "trials.duckdb").exists() or trial_rows(tmp_path / "trials.duckdb") == []


def test_what_is_a_trial_and_what_answers_say() -> None:
    assert classify("POST", "/api/chat", b'{"model":"a","messages":[{"role":"user","content":"x"}]}').is_trial
    assert not classify("POST", "/api/generate", b'{"model":"a","keep_alive":0}').is_trial
    assert not classify("GET", "/api/ps", b"").is_trial and not classify("POST", "/api/pull", b"{}").is_trial
    openai = classify("POST", "/v1/chat/completions", b'{"model":"a","messages":[],"stream":true}')
    assert openai.is_trial and openai.stream and openai.model == "a"
    assert classify("POST", "/api/generate", b'{"model":"a","prompt":"x"}').stream  # native streams by default
    assert classify("POST", "/api/generate", b"not json").is_trial  # Ollama answers 400: still a failed call
    sse = (b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
           b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}\n\ndata: [DONE]\n\n')
    assert token_counts(sse) == {"prompt_tokens": 11, "completion_tokens": 3}
    assert token_counts(b'{"done":true,"prompt_eval_count":9,"eval_count":4}') == {"prompt_tokens": 9, "completion_tokens": 4}
    assert error_in_body(b'data: {"error":{"message":"boom","type":"api_error"}}\n\n') == "boom"
    assert error_in_body(b'{"response":"the word error","done":true}') is None


def test_the_gate_is_first_come_first_served_and_a_cancelled_waiter_gives_its_slot_back() -> None:
    async def scenario() -> list[str]:
        gate = FairGate(1, max_queue=2)
        order: list[str] = []
        await gate.enter()

        async def worker(name: str) -> None:
            await gate.enter()
            order.append(name)
            gate.leave()

        first, second = asyncio.create_task(worker("first")), asyncio.create_task(worker("second"))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await gate.enter()
        gate.leave()  # the slot goes to "first", never to a newcomer
        late = asyncio.create_task(worker("late"))
        await asyncio.gather(first, second, late)
        assert gate.in_flight == 0 and gate.completed == 4
        # a waiter cancelled right after being handed the slot gives it back
        await gate.enter()
        waiter = asyncio.create_task(gate.enter())
        await asyncio.sleep(0.01)
        gate.leave()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.in_flight == 0 and gate.queued == 0
        # set_limit from another thread (the control poller's) wakes waiters
        gate.set_limit(1)
        await gate.enter()
        third = asyncio.create_task(worker("from-thread"))
        await asyncio.sleep(0.01)
        threading.Thread(target=gate.set_limit, args=(2,)).start()
        await asyncio.wait_for(third, 2)
        return order

    assert asyncio.run(scenario()) == ["first", "second", "late", "from-thread"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_command_records_until_sigterm_then_writes_what_it_buffered(tmp_path: Path, upstream: CountingOllama) -> None:
    port = free_port()
    env = {**os.environ, "OASIS_OPS_SNAPSHOT_DIR": str(tmp_path / "snap")}
    proc = subprocess.Popen([sys.executable, "-m", "oasis_ops", "proxy", "--db", str(tmp_path / "t.duckdb"),
                             "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}", "--run-id", "cli-run"],
                            env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: _answers(port), timeout=20, what="the proxy to listen")
        assert gen(f"http://127.0.0.1:{port}", "a", stream=False).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"OLLAMA_HOST=127.0.0.1:{port}" in err and "1 trials recorded (1 ok, 0 error, 0 timeout)" in err
    assert [(r["run_id"], r["status"]) for r in trial_rows(tmp_path / "t.duckdb")] == [("cli-run", "ok")]


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
