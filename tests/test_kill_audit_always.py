"""A SIGKILL is never sent without an audit row: whatever breaks after the signal (garbage from
Ollama, an unexpected exception, Ctrl-C during the respawn check), the row is written with
`signalled_at` and the error, and an interrupt is re-raised after it.

Real processes (a fake `ollama serve` with runner children, helpers_probes) and a loopback
Ollama stand-in; the failures are injected at one seam each (the HTTP answer, or the
confirm / respawn step).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, modelfile_for, ps_entry, utc
from test_kill_real import GEMMA, OTHER, World, pauser  # noqa: F401 - fixture reused

from oasis_ops.actions import hard_kill, is_dead, recover
from oasis_ops.actions import kill as kill_module


class GarbageAfterPrompt(FakeOllama):
    """Answers like Ollama until a real (prompted) /api/generate arrives, i.e. the respawn ping
    after the kill; from then on /api/ps carries `"size": Infinity` (json.dumps writes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.garbage = False

    def _answer(self, method: str, path: str, body: Any, models: list[dict[str, Any]]) -> tuple[int, Any]:
        if method == "POST" and path == "/api/generate" and (body or {}).get("prompt"):
            self.garbage = True
        if self.garbage and method == "GET" and path == "/api/ps":
            return 200, {"models": [{**m, "size": float("inf")} for m in models]}
        return super()._answer(method, path, body, models)


@pytest.fixture
def garbage_world(pauser: Path, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    blobs = {
        GEMMA: str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8)),
        OTHER: str(tmp_path / "models" / "blobs" / ("sha256-" + "9ed150d4" * 8)),
    }
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    server = GarbageAfterPrompt()
    try:
        serve_pid = tree.start([[ollama, "runner", "--model", blobs[GEMMA], "--port", "54107"],
                                [ollama, "runner", "--model", blobs[OTHER], "--port", "44067"]])  # fmt: skip
        server.models = [ps_entry(GEMMA, expires_at=utc(-40)), ps_entry(OTHER, expires_at=utc(300))]
        server.modelfiles = {name: modelfile_for(name, blob) for name, blob in blobs.items()}
        yield World(tree, server, serve_pid, tmp_path, blobs)
    finally:
        server.close()
        tree.close()


def gone(pid: int, create_time: float, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if is_dead(pid, create_time):
            return True
        time.sleep(0.05)
    return False


def only_row(w: World) -> dict[str, Any]:
    [row] = w.audit_rows()
    row = dict(row)
    row["detail"] = json.loads(row["detail"])
    return row


def test_garbage_from_ollama_after_the_kill_still_audits_the_signal(garbage_world: World) -> None:
    w = garbage_world
    gemma = w.tree.pid_of("--port", "54107")
    other = w.tree.pid_of("--port", "44067")
    created = w.create_time(gemma)
    result = hard_kill(w.ctx(), GEMMA, verify_respawn=True)
    assert w.server.garbage, "the respawn ping never reached the stand-in"
    assert gone(gemma, created) and w.alive(other)
    # Whether the client raises on Infinity (OverflowError) or reports it as a bad response, the
    # kill is confirmed and the respawn check did not verify a new runner: the row says both.
    assert result.audited and result.outcome in ("done", "failed"), result.message
    row = only_row(w)
    assert (row["action"], row["outcome"]) == ("hard_kill", result.outcome)
    assert row["detail"]["signalled_at"] and row["detail"]["gone_after_ms"] >= 0
    assert row["detail"]["plan"]["pid"] == gemma
    if "error" in row["detail"]:  # the exception path
        assert result.outcome == "done" and "respawn check failed" in result.message
        assert row["detail"]["error_stage"] == "respawn check"


def test_exception_while_confirming_is_audited_as_failed_with_the_signal(
    garbage_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = garbage_world
    gemma = w.tree.pid_of("--port", "54107")
    created = w.create_time(gemma)

    def broken_wait(*args: Any) -> float | None:
        raise RuntimeError("process table unreadable")

    monkeypatch.setattr(kill_module, "wait_dead", broken_wait)
    result = hard_kill(w.ctx(), GEMMA)
    assert gone(gemma, created), "the signal was sent before the failure"
    assert result.outcome == "failed" and result.audited
    assert f"sent SIGKILL to pid {gemma}" in result.message and "process table unreadable" in result.message
    row = only_row(w)
    assert row["outcome"] == "failed" and row["detail"]["signalled_at"]
    assert row["detail"]["error"] == "RuntimeError: process table unreadable"


def test_ctrl_c_during_the_respawn_check_is_audited_then_reraised(
    garbage_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = garbage_world
    gemma = w.tree.pid_of("--port", "54107")
    created = w.create_time(gemma)

    def interrupted(*args: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(kill_module, "check_respawn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hard_kill(w.ctx(), GEMMA, verify_respawn=True)
    assert gone(gemma, created)
    row = only_row(w)
    assert (row["action"], row["outcome"]) == ("hard_kill", "done")  # the kill itself was confirmed
    assert row["detail"]["signalled_at"] and row["detail"]["error"] == "KeyboardInterrupt"
    assert "respawn check failed: KeyboardInterrupt" in row["detail"]["message"]


def test_recover_audits_its_row_when_interrupted_after_the_kill(
    garbage_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = garbage_world
    gemma = w.tree.pid_of("--port", "54107")
    created = w.create_time(gemma)

    def interrupted(*args: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(kill_module, "check_respawn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recover(w.ctx(), GEMMA, grace_s=0.3, ping=True)  # evict is stuck (still Stopping), so it kills
    assert gone(gemma, created)
    row = only_row(w)
    assert (row["action"], row["outcome"]) == ("recover", "done")
    assert row["detail"]["signalled_at"] and row["detail"]["error"] == "KeyboardInterrupt"
    [evict_step, kill_step] = row["detail"]["steps"]
    assert (evict_step["action"], evict_step["outcome"]) == ("evict", "stuck")
    assert kill_step["action"] == "hard_kill" and kill_step["detail"]["plan"]["pid"] == gemma


def test_recover_audits_an_exception_after_the_signal(garbage_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = garbage_world
    gemma = w.tree.pid_of("--port", "54107")
    created = w.create_time(gemma)

    def broken_wait(*args: Any) -> float | None:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(kill_module, "wait_dead", broken_wait)
    result = recover(w.ctx(), GEMMA, grace_s=0.3, ping=True)
    assert gone(gemma, created)
    assert result.outcome == "failed" and result.audited and "sent SIGKILL" in result.message
    row = only_row(w)
    kill_step = row["detail"]["steps"][-1]
    assert kill_step["detail"]["signalled_at"] and "OverflowError" in kill_step["detail"]["error"]
    assert psutil.pid_exists(w.serve_pid)
