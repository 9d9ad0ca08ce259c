"""Pins for reading runner command lines and for verifying a kill target (written from the probes
mutation run's survivors): each variant's words, short flags, and every refusal's exact line."""

from __future__ import annotations

import pytest

from oasis_ops.errors import ProcessRefused
from oasis_ops.probes.processes import (
    RunnerCommand,
    parse_runner_cmdline,
    records_from,
    verify_runner,
)

BLOB = "/m/blobs/sha256-" + "ab" * 32


def test_runner_command_lines_of_every_variant() -> None:
    assert parse_runner_cmdline(["/usr/bin/ollama"]) is None
    assert parse_runner_cmdline(["/usr/bin/ollama", "serve"]) is None
    bare = parse_runner_cmdline(["/usr/bin/ollama", "runner"])  # GPU discovery: no arguments at all
    assert bare == RunnerCommand("ollama runner", None, None, None, None) and bare.is_discovery
    assert parse_runner_cmdline(["ollama", "runner", "--ollama-engine", "--model", BLOB, "--port", "5"]) == RunnerCommand(
        "ollama runner", BLOB, 5, None, "ollama-engine")  # fmt: skip
    assert parse_runner_cmdline(["ollama", "runner", "--mlx-engine", "--model", "qwen3:8b", "--port", "x"]) == RunnerCommand(
        "mlx", "qwen3:8b", None, None, "mlx-engine")  # fmt: skip
    assert parse_runner_cmdline(["/lib/ollama/llama-server", "-m", BLOB, "--port", "7", "-fa", "AUTO"]) == RunnerCommand(
        "llama-server", BLOB, 7, "auto", None)  # fmt: skip
    assert parse_runner_cmdline(["ollama_llama_server", "--model", BLOB, "--flash-attn"]) == RunnerCommand(
        "ollama_llama_server", BLOB, None, "on", None)  # an old bare boolean flag  # fmt: skip
    assert parse_runner_cmdline(["llama-server", "--model", BLOB, "--flash-attn", "maybe"]).flash_attn is None  # type: ignore[union-attr]


def _tree(**runner: object) -> list[object]:
    serve = {"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 1.0, "username": "me"}
    child = {"pid": 200, "ppid": 100, "name": "llama-server", "create_time": 2.0, "username": "me",
             "cmdline": ["/lib/ollama/llama-server", "--model", BLOB, "--port", "7"], **runner}  # fmt: skip
    return records_from([serve, child])


def test_verify_runner_returns_the_runner_and_refuses_in_one_exact_line() -> None:
    found = verify_runner(_tree(create_time=0.01), 200, 0.0, serve_pid=100, protected=set(), own_user="me", expected_blob=BLOB)
    assert found.pid == 200 and found.command == RunnerCommand("llama-server", BLOB, 7, None, None)  # 10 ms of slack, exactly
    long_cmd = ["/usr/bin/python3", "-c", "x" * 300]
    refusals = [
        (_tree(cmdline=long_cmd), {}, f"pid 200 is not an Ollama runner: {' '.join(long_cmd)[:120]}"),
        (records_from([{"pid": 200, "ppid": 1, "name": "llama-server", "create_time": 2.0,
                        "cmdline": ["/lib/ollama/llama-server", "--model", BLOB]}]), {},
         "no `ollama serve` on this machine listens on the Ollama port: nothing to act on"),
        (_tree(username="root"), {"own_user": None}, "pid 200 belongs to root, `ollama serve` to me"),
        (_tree(), {"own_user": "you"}, "pid 200 belongs to me, not to you (who runs oasis-ops): actions only signal their own "
                                      "user's processes"),
    ]  # fmt: skip
    for records, extra, said in refusals:
        kwargs = {"serve_pid": 100, "protected": set(), "own_user": "me", **extra}
        with pytest.raises(ProcessRefused) as refused:
            verify_runner(records, 200, 2.0, **kwargs)  # type: ignore[arg-type]
        assert str(refused.value) == said
