"""The official `ollama` Python client works against the emulator (the same calls a harness makes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import ollama
import pytest
from helpers_emulator import find_runner_pid, proc_stat, running_emulator, wait_until

GEMMA = "gemma4:e4b"


def test_official_client_end_to_end(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        client = ollama.Client(host=emu.url, timeout=20)
        assert client.ps().models == []

        reply = client.generate(model=GEMMA, prompt="Why is the sky blue?")
        assert reply.done and reply.done_reason == "stop" and reply.response
        assert reply.total_duration and reply.eval_count and reply.eval_duration and reply.prompt_eval_count
        assert reply.total_duration >= (reply.load_duration or 0) + (reply.eval_duration or 0)

        parts = list(client.generate(model=GEMMA, prompt="Count to three", stream=True))
        assert parts[-1].done and not any(p.done for p in parts[:-1])
        assert "".join(p.response or "" for p in parts)

        chat = client.chat(model=GEMMA, messages=[{"role": "user", "content": "hi"}])
        assert chat.message.role == "assistant" and chat.message.content and chat.done
        streamed = list(client.chat(model=GEMMA, messages=[{"role": "user", "content": "hi"}], stream=True))
        assert streamed[-1].done and streamed[-1].eval_count == len(streamed) - 1

        shown = client.show(GEMMA)
        assert shown.details and shown.details.family == "gemma4"
        assert shown.modelfile and f"FROM {emu.home.blobs_dir}/sha256-" in shown.modelfile
        assert shown.capabilities and "completion" in shown.capabilities and shown.modelinfo

        loaded = client.ps().models
        assert [m.model for m in loaded] == [GEMMA]
        assert loaded[0].size_vram == loaded[0].size and loaded[0].expires_at > datetime.now(UTC)
        pid = find_runner_pid(emu.pid)

        unloaded = client.generate(model=GEMMA, keep_alive=0)
        assert unloaded.done and unloaded.done_reason == "unload"
        wait_until(lambda: client.ps().models == [], 5, what="the model to unload")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the runner to exit")

        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model="nope:1b", prompt="x")
        assert info.value.status_code == 404 and "not found" in info.value.error
