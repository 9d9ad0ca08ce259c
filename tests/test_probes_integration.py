"""Real HTTP server on 127.0.0.1 + real child processes with real runner command lines.

A fake `ollama serve` (a compiled pauser named `ollama`) forks runners whose /proc cmdline is
the real argv; decoys sit beside them. The model must map to the right PID, and its state must
go loaded -> stopping (expires_at passes) -> gone (the server drops it).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, build_pauser, modelfile_for, ps_entry, utc

from oasis_ops.errors import ProcessRefused
from oasis_ops.probes import ModelProbe, PsutilProcesses, diff_models, probe_models
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.probes.processes import verify_runner

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("gcc") is None, reason="needs Linux /proc and gcc"
)


@pytest.fixture(scope="module")
def pauser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pauser(tmp_path_factory.mktemp("pauser"))


@pytest.fixture
def world(pauser: Path, tmp_path: Path) -> Iterator[dict[str, object]]:
    models = tmp_path / "models"
    blob_gemma = str(models / "blobs" / ("sha256-" + "4e30e266" * 8))
    blob_other = str(models / "blobs" / ("sha256-" + "9ed150d4" * 8))
    blob_mistral = str(models / "blobs" / ("sha256-" + "1b2c3d4e" * 8))
    # mistral resolves through its manifest, the others through /api/show
    manifest = models / "manifests/registry.ollama.ai/library/mistral/latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "1b2c3d4e" * 8}]}))

    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    llama_server = tree.exe("lib/ollama/llama-server")
    old_runner = tree.exe("runners/cpu_avx2/ollama_llama_server")
    grep = tree.exe("usr/bin/grep")
    children = [
        [ollama, "runner", "--ollama-engine", "--port", "40001"],  # discovery: no --model
        [ollama, "runner", "--ollama-engine", "--model", blob_gemma, "--port", "53312"],  # gemma4, older
        [llama_server, "--model", blob_other, "--port", "44067", "--host", "127.0.0.1", "--flash-attn", "auto"],
        [sys.executable, "-c", "import time; time.sleep(600)", "ollama runner --model " + blob_gemma + " --port 1"],
        [grep, "ollama", "runner", "--model", blob_gemma],
        [old_runner, "--model", blob_mistral, "--ctx-size", "2048", "--port", "55001"],
        [ollama, "runner", "--ollama-engine", "--model", blob_gemma, "--port", "54107"],  # gemma4, newest
    ]
    server = FakeOllama()
    try:
        serve_pid = tree.start(children, env={"OLLAMA_FLASH_ATTENTION": "0"})
        stray = tree.spawn([ollama, "runner", "--model", blob_gemma, "--port", "9"])  # not serve's child
        server.modelfiles = {"gemma4:e4b": modelfile_for("gemma4:e4b", blob_gemma),
                             "other:7b": modelfile_for("other:7b", blob_other)}
        yield {"tree": tree, "server": server, "serve_pid": serve_pid, "models": models, "stray": stray,
               "blob_gemma": blob_gemma}
    finally:
        server.close()
        tree.close()


def test_state_and_runner_mapping_among_decoys(world: dict[str, object]) -> None:
    tree: FakeOllamaTree = world["tree"]  # type: ignore[assignment]
    server: FakeOllama = world["server"]  # type: ignore[assignment]
    gemma_pid = tree.pid_of("--port", "54107")
    older_gemma_pid = tree.pid_of("--port", "53312")
    other_pid = tree.pid_of("--port", "44067")
    mistral_pid = tree.pid_of("--port", "55001")
    server.models = [
        ps_entry("gemma4:e4b", expires_at=utc(300)),
        ps_entry("other:7b", expires_at=utc(300), size_vram=0),
        ps_entry("mistral:latest", expires_at=utc(300), size_vram=6_591_830_464),
    ]
    client = OllamaClient(server.url, timeout_s=2.0)
    processes = PsutilProcesses(only_ollama=False)  # decoys go through the matcher too
    probe = ModelProbe(client, processes, models_dir=world["models"],  # type: ignore[arg-type]
                       serve_pid=world["serve_pid"])  # type: ignore[arg-type]
    try:
        first = {s.model: s for s in probe.snapshot()}
        gemma = first["gemma4:e4b"]
        assert gemma.state == "loaded" and gemma.status.processor == "19%/81% CPU/GPU"
        assert gemma.runner_pid == gemma_pid != older_gemma_pid
        assert gemma.note and f"using the newest, pid {gemma_pid}" in gemma.note
        assert gemma.runner_cmdline and gemma.runner_cmdline[1:3] == ("runner", "--ollama-engine")
        assert gemma.runner_rss_bytes and gemma.runner_rss_bytes > 0 and gemma.runner_threads == 1
        assert gemma.runner_cpu_percent is None  # first look: psutil needs two
        assert gemma.blob_path == world["blob_gemma"]
        assert first["other:7b"].runner_pid == other_pid and first["other:7b"].runner_variant == "llama-server"
        assert first["other:7b"].status.processor == "100% CPU"
        assert first["mistral:latest"].runner_pid == mistral_pid  # via the manifest, no /api/show
        assert first["mistral:latest"].runner_variant == "ollama_llama_server"
        assert not any(r[2] and r[2].get("model") == "mistral:latest" for r in server.requests if r[1] == "/api/show")
        tree_seen = probe.last_tree
        assert tree_seen is not None
        # Other tests' emulators may run on this machine at the same time: only ours matter here.
        stray_pids = [r.pid for r in tree_seen.stray_runners]
        assert world["stray"].pid in stray_pids  # type: ignore[attr-defined]
        assert not {gemma_pid, older_gemma_pid, other_pid, mistral_pid} & set(stray_pids)
        assert len(tree_seen.discovery_runners) == 1

        # kill verification (issue 5) on the real tree: the runner passes, the decoys are refused
        records = processes()
        serve_pid = world["serve_pid"]
        runner = next(r for r in records if r.pid == gemma_pid)
        assert verify_runner(records, gemma_pid, runner.create_time, serve_pid=serve_pid).pid == gemma_pid  # type: ignore[arg-type]
        for decoy in (tree.pid_of("-c", "import time; time.sleep(600)"), tree.pid_of("ollama", "runner", "--model")):
            created = next(r.create_time for r in records if r.pid == decoy)
            with pytest.raises(ProcessRefused, match="not an Ollama runner"):
                verify_runner(records, decoy, created, serve_pid=serve_pid)  # type: ignore[arg-type]
        with pytest.raises(ProcessRefused, match="reused"):
            verify_runner(records, gemma_pid, runner.create_time + 5, serve_pid=serve_pid)  # type: ignore[arg-type]

        # flash attention: the serve's environment is readable here (same user, Linux)
        server_flash, per_model = probe.flash_attention(list(first.values()), "0.32.15")
        assert (server_flash.value, server_flash.source) == ("off", "environment")
        assert {(f.value, f.source) for f in per_model.values()} == {("off", "environment")}

        # expires_at a moment ahead -> once it passes, "stopping", with since and for how long
        server.set_expires("gemma4:e4b", utc(0.4))
        deadline = time.monotonic() + 10
        while True:
            second = {s.model: s for s in probe.snapshot()}
            if second["gemma4:e4b"].state == "stopping" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        gemma = second["gemma4:e4b"]
        assert gemma.state == "stopping"
        assert gemma.status.stopping_since is not None and gemma.status.stopping_since <= datetime.now(UTC)
        assert gemma.status.stopping_for_s is not None and gemma.status.stopping_for_s >= 0
        assert gemma.runner_pid == gemma_pid and gemma.runner_cpu_percent is not None  # second look
        transitions = diff_models([s.status for s in first.values()], [s.status for s in second.values()])
        assert [(t.model, t.old_state, t.new_state) for t in transitions] == [("gemma4:e4b", "loaded", "stopping")]

        # the server drops it -> gone
        server.drop("gemma4:e4b")
        third = probe.snapshot()
        assert "gemma4:e4b" not in {s.model for s in third}
        gone = diff_models([s.status for s in second.values()], [s.status for s in third])
        assert [(t.model, t.new_state) for t in gone] == [("gemma4:e4b", "gone")]
        assert third[0].as_row()["runner_pid"] in (other_pid, mistral_pid)
    finally:
        client.close()


def test_killed_runner_leaves_a_ghost_entry_without_pid(world: dict[str, object]) -> None:
    """After SIGKILL /api/ps keeps a ghost entry: the snapshot shows it with no runner."""
    import os
    import signal

    tree: FakeOllamaTree = world["tree"]  # type: ignore[assignment]
    server: FakeOllama = world["server"]  # type: ignore[assignment]
    server.models = [ps_entry("other:7b", expires_at=utc(300))]
    other_pid = tree.pid_of("--port", "44067")
    os.kill(other_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(p.pid == other_pid for p in tree.children()) and time.monotonic() < deadline:
        time.sleep(0.02)
    with OllamaClient(server.url, timeout_s=2.0) as client:
        [snap] = probe_models(client, PsutilProcesses(), world["models"],  # type: ignore[arg-type]
                              serve_pid=world["serve_pid"])  # type: ignore[arg-type]
    assert snap.state == "loaded" and snap.runner_pid is None and snap.blob_path


def test_pinned_clock_drives_stopping(world: dict[str, object]) -> None:
    server: FakeOllama = world["server"]  # type: ignore[assignment]
    expires = datetime(2025, 11, 20, 17, 58, 40, tzinfo=UTC)
    server.models = [ps_entry("gemma4:e4b", expires_at=expires)]
    now = [expires - timedelta(seconds=1)]
    with OllamaClient(server.url, timeout_s=2.0, clock=lambda: now[0]) as client:
        assert client.ps()[0].state == "loaded"
        now[0] = expires + timedelta(minutes=3, seconds=12)
        [m] = client.ps()
        assert m.state == "stopping" and m.stopping_for_s == pytest.approx(192.0)
