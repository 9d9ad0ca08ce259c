"""Hard-kill on real processes: a fake `ollama serve` (a compiled pauser named `ollama`) with real
runner command lines, decoys beside them, and a loopback Ollama API (helpers_probes).

It must kill exactly the runner of the named model and nothing else, refuse every decoy (even
when given its PID), refuse a reused PID, and audit every attempt (refused ones included).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, build_pauser, modelfile_for, ps_entry, utc

from oasis_ops.actions import ActionContext, hard_kill, is_dead, plan_kill
from oasis_ops.cli import main as cli_main
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("gcc") is None, reason="needs Linux /proc and gcc"
)
GEMMA = "gemma4:e4b"
OTHER = "other:7b"


@pytest.fixture(scope="module")
def pauser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pauser(tmp_path_factory.mktemp("pauser"))


class World:
    def __init__(self, tree: FakeOllamaTree, server: FakeOllama, serve_pid: int, tmp: Path, blobs: dict[str, str]) -> None:
        self.tree, self.server, self.serve_pid, self.tmp, self.blobs = tree, server, serve_pid, tmp, blobs
        self.sidecar = Sidecar(tmp / "trials.ops.duckdb")
        self.settings = load_settings(env={}, flags={"ollama_host": server.url, "evict_grace_s": 1.0})

    def ctx(self, requested_by: str = "cli") -> ActionContext:
        return ActionContext(
            settings=self.settings,
            client=OllamaClient(self.server.url, timeout_s=2.0),
            sidecar=self.sidecar,
            requested_by=requested_by,
            models_dir=self.tmp / "models",
            serve_pid=self.serve_pid,  # other engineers' `ollama serve` emulators may run on this machine
        )

    def create_time(self, pid: int) -> float:
        return float(psutil.Process(pid).create_time())

    def alive(self, pid: int) -> bool:
        return not is_dead(pid, self.create_time(pid)) if psutil.pid_exists(pid) else False

    def audit_rows(self) -> list[dict[str, Any]]:
        frame = self.sidecar.actions_since(utc(-3600))
        return list(frame.to_dict("records"))


@pytest.fixture
def world(pauser: Path, tmp_path: Path) -> Iterator[World]:
    blobs = {
        GEMMA: str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8)),
        OTHER: str(tmp_path / "models" / "blobs" / ("sha256-" + "9ed150d4" * 8)),
    }
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    llama_server = tree.exe("lib/ollama/llama-server")
    grep = tree.exe("usr/bin/grep")
    children = [
        [ollama, "runner", "--ollama-engine", "--model", blobs[GEMMA], "--port", "54107"],
        [llama_server, "--model", blobs[OTHER], "--port", "44067", "--host", "127.0.0.1"],
        [sys.executable, "-c", "import time; time.sleep(600)", "ollama runner --model " + blobs[GEMMA] + " --port 1"],
        [grep, "ollama", "runner", "--model", blobs[GEMMA]],
    ]
    server = FakeOllama()
    try:
        serve_pid = tree.start(children)
        server.models = [ps_entry(GEMMA, expires_at=utc(-40)), ps_entry(OTHER, expires_at=utc(300))]
        server.modelfiles = {name: modelfile_for(name, blob) for name, blob in blobs.items()}
        yield World(tree, server, serve_pid, tmp_path, blobs)
    finally:
        server.close()
        tree.close()


def test_kills_exactly_the_runner_of_the_model_among_decoys(world: World) -> None:
    tree = world.tree
    gemma = tree.pid_of("--port", "54107")
    others = {
        "other model's runner": tree.pid_of("--port", "44067"),
        "python decoy": tree.pid_of("-c", "import time; time.sleep(600)"),
        "grep decoy": tree.pid_of("ollama", "runner", "--model"),
        "ollama serve": world.serve_pid,
        "ourselves": os.getpid(),
    }
    plan = plan_kill(world.ctx(), GEMMA)
    assert plan.ok and plan.pid == gemma and plan.state == "stopping"
    assert plan.stopping_for_s is not None and plan.stopping_for_s >= 39
    assert plan.cmdline[1:3] == ("runner", "--ollama-engine") and plan.rss_bytes
    text = "\n".join(plan.describe())
    assert f"SIGKILL pid {gemma}" in text and "Stopping for 4" in text and "--port 54107" in text

    result = hard_kill(world.ctx(), GEMMA)
    assert (result.outcome, result.exit_code) == ("done", 0), result.message
    assert result.audited and f"pid {gemma}" in result.message
    assert not psutil.pid_exists(gemma) or is_dead(gemma, plan.create_time or 0)
    for what, pid in others.items():
        assert world.alive(pid), f"{what} (pid {pid}) was hit"
    [row] = world.audit_rows()
    assert (row["action"], row["target"], row["outcome"], row["requested_by"]) == ("hard_kill", GEMMA, "done", "cli")

    # Nothing serves the model any more: refused, nothing else touched, and audited too.
    again = hard_kill(world.ctx(), GEMMA)
    assert again.outcome == "refused" and "no runner process serves" in again.message
    assert all(world.alive(pid) for pid in others.values())
    assert [r["outcome"] for r in world.audit_rows()] == ["done", "refused"]


def test_every_decoy_is_refused_even_by_pid_and_audited(world: World) -> None:
    tree = world.tree
    decoys = {
        tree.pid_of("--port", "44067"): "serves",  # another model's runner: wrong blob
        tree.pid_of("-c", "import time; time.sleep(600)"): "not an Ollama runner",
        tree.pid_of("ollama", "runner", "--model"): "not an Ollama runner",
        world.serve_pid: "child of this process|not an Ollama runner",  # the fake serve is our child here
        os.getpid(): "is this process",
        os.getppid(): "a parent of this process",
    }
    for pid, reason in decoys.items():
        result = hard_kill(world.ctx(), GEMMA, pid=pid)
        assert result.outcome == "refused" and result.exit_code == 1, (pid, result.message)
        assert re.search(reason, result.message), (pid, result.message)
        assert world.alive(pid)
    rows = world.audit_rows()
    assert len(rows) == len(decoys) and {r["outcome"] for r in rows} == {"refused"}
    assert world.alive(tree.pid_of("--port", "54107"))


def test_reused_pid_is_refused(world: World) -> None:
    gemma = world.tree.pid_of("--port", "54107")
    stale = world.create_time(gemma) - 42.0  # the identity seen at discovery belonged to another process
    result = hard_kill(world.ctx("ui"), GEMMA, pid=gemma, create_time=stale)
    assert result.outcome == "refused" and "reused" in result.message
    assert world.alive(gemma)
    [row] = world.audit_rows()
    assert (row["outcome"], row["requested_by"]) == ("refused", "ui")
    # the verified identity passes
    ok = hard_kill(world.ctx("ui"), GEMMA, pid=gemma, create_time=world.create_time(gemma))
    assert ok.outcome == "done"


def test_several_candidates_need_a_pid(pauser: Path, tmp_path: Path) -> None:
    blob = str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8))
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    server = FakeOllama()
    try:
        serve_pid = tree.start([[ollama, "runner", "--model", blob, "--port", "1001"],
                                [ollama, "runner", "--model", blob, "--port", "1002"]])  # fmt: skip
        server.models = [ps_entry(GEMMA, expires_at=utc(300))]
        server.modelfiles = {GEMMA: modelfile_for(GEMMA, blob)}
        w = World(tree, server, serve_pid, tmp_path, {GEMMA: blob})
        first, second = tree.pid_of("--port", "1001"), tree.pid_of("--port", "1002")
        refused = hard_kill(w.ctx(), GEMMA)
        assert refused.outcome == "refused" and "2 runners serve" in refused.message and "--pid" in refused.message
        assert w.alive(first) and w.alive(second)
        dry = hard_kill(w.ctx(), GEMMA, pid=first, dry_run=True)
        assert dry.outcome == "dry_run" and dry.exit_code == 0 and w.alive(first)
        done = hard_kill(w.ctx(), GEMMA, pid=first)
        assert done.outcome == "done" and w.alive(second)
        assert [r["outcome"] for r in w.audit_rows()] == ["refused", "dry_run", "done"]
    finally:
        server.close()
        tree.close()


def test_kill_runner_cli(world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    gemma = world.tree.pid_of("--port", "54107")
    db = world.tmp / "trials.duckdb"  # its sidecar is world.sidecar
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", world.server.url)
    monkeypatch.setenv("OLLAMA_MODELS", str(world.tmp / "models"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    # The CLI finds the serve itself (FakeOllama is in this process, so discovery picks the serve
    # with runner children). Pin it in case other `ollama serve` processes run on this machine.
    monkeypatch.setattr("oasis_ops.actions.context.serve_pid_listening", lambda url: world.serve_pid)

    # no --yes and no TTY: shows the plan, refuses, exit 1, audited
    assert cli_main(["kill-runner", GEMMA, "--db", str(db)]) == 1
    out = capsys.readouterr()
    assert f"SIGKILL pid {gemma}" in out.out and "--yes" in out.err
    assert world.alive(gemma)
    # dry run: exit 0, nothing killed
    assert cli_main(["kill-runner", GEMMA, "--db", str(db), "--dry-run", "--json"]) == 0
    assert '"outcome": "dry_run"' in capsys.readouterr().out and world.alive(gemma)
    # a decoy pid: refused, exit 1
    decoy = world.tree.pid_of("-c", "import time; time.sleep(600)")
    assert cli_main(["kill-runner", GEMMA, "--db", str(db), "--pid", str(decoy), "--yes"]) == 1
    assert "not an Ollama runner" in capsys.readouterr().err and world.alive(decoy)
    # --yes: killed, exit 0
    assert cli_main(["kill-runner", GEMMA, "--db", str(db), "--yes"]) == 0
    assert f"killed runner pid {gemma}" in capsys.readouterr().out
    assert [r["outcome"] for r in world.audit_rows()] == ["refused", "dry_run", "refused", "done"]
    # bad usage: exit 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["kill-runner", GEMMA, "--pid", "abc"])
    assert exc.value.code == 2


def test_pid_of_another_model_is_refused_when_the_blob_is_unknown(world: World) -> None:
    """No manifest and /api/show failing (Ollama down): a given PID cannot be tied to the model,
    so another model's runner is refused instead of trusted."""
    other = world.tree.pid_of("--port", "44067")  # serves OTHER's blob
    gemma = world.tree.pid_of("--port", "54107")
    world.server.mode = "500"
    result = hard_kill(world.ctx(), GEMMA, pid=other)
    assert result.outcome == "refused" and result.audited, result.message
    assert f"cannot tell which model pid {other} serves: the blob of {GEMMA} is unknown" in result.message
    assert "no manifest under" in result.message and "/api/show failed" in result.message
    assert world.alive(other) and world.alive(gemma)
    # the watchdog's path: the same pid with its identity pinned is refused the same way
    watchdog = hard_kill(world.ctx("watchdog"), GEMMA, pid=other, create_time=world.create_time(other))
    assert watchdog.outcome == "refused" and "cannot tell which model" in watchdog.message
    assert world.alive(other)
    assert [(r["outcome"], r["requested_by"]) for r in world.audit_rows()] == [("refused", "cli"), ("refused", "watchdog")]
    # Ollama back: the blob is known again, and the same pid is refused as the wrong model's runner
    world.server.mode = "ok"
    wrong = hard_kill(world.ctx(), GEMMA, pid=other)
    assert wrong.outcome == "refused" and "serves" in wrong.message and world.alive(other)
