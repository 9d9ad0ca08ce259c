"""Runner discovery from process records: every command-line variant, decoys, duplicates,
manifests, verification for a kill, and flash attention."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oasis_ops.errors import ProcessRefused, ProcessVanished
from oasis_ops.probes.processes import (
    ProcessRecord,
    blob_from_manifest,
    find_ollama_tree,
    is_serve_cmdline,
    manifest_path,
    match_runner,
    parse_runner_cmdline,
    verify_runner,
)

BLOB_A = "/Users/eval/.ollama/models/blobs/sha256-" + "a" * 64
BLOB_B = "/Users/eval/.ollama/models/blobs/sha256-" + "b" * 64


def rec(pid: int, ppid: int, *cmdline: str, t: float = 100.0, user: str = "eval", **kw: object) -> ProcessRecord:
    return ProcessRecord(pid=pid, ppid=ppid, name=os.path.basename(cmdline[0])[:15] if cmdline else "",
                         cmdline=tuple(cmdline), create_time=t, username=user, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "variant", "model", "port", "flash"),
    [
        (["/tmp/ollama1234/runners/metal/ollama_llama_server", "--model", BLOB_A, "--ctx-size", "2048",
          "--batch-size", "512", "--embedding", "--flash-attn", "--port", "55001"],
         "ollama_llama_server", BLOB_A, 55001, "on"),
        (["/usr/local/bin/ollama", "runner", "--model", BLOB_A, "--ctx-size", "8192", "--port", "53312"],
         "ollama runner", BLOB_A, 53312, None),
        (["/Applications/Ollama.app/Contents/Resources/ollama", "runner", "--ollama-engine", "--model", BLOB_A,
          "--port", "53312"], "ollama runner", BLOB_A, 53312, None),
        (["/usr/lib/ollama/llama-server", "--model", BLOB_A, "--port", "44067", "--host", "127.0.0.1", "-c",
          "8192", "--flash-attn", "auto"], "llama-server", BLOB_A, 44067, "auto"),
        (["/usr/lib/ollama/llama-server", f"--model={BLOB_A}", "--port=1", "--flash-attn", "off"],
         "llama-server", BLOB_A, 1, "off"),
        (["ollama", "runner", "--mlx-engine", "--model", "gemma4:e4b", "--port", "5"], "mlx", "gemma4:e4b", 5, None),
    ],
)
def test_every_runner_variant(argv: list[str], variant: str, model: str, port: int, flash: str | None) -> None:
    cmd = parse_runner_cmdline(argv)
    assert cmd is not None
    assert (cmd.variant, cmd.model, cmd.port, cmd.flash_attn) == (variant, model, port, flash)


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/python3", "-c", "import time", "ollama runner --model " + BLOB_A + " --port 1"],
        ["/usr/bin/python3", "-c", "pass", "ollama", "runner", "--model", BLOB_A],
        ["grep", "ollama runner"],
        ["grep", "ollama", "runner", "--model", BLOB_A],
        ["/bin/sh", "-c", "ollama runner --model " + BLOB_A],
        ["/usr/local/bin/ollama", "serve"],
        ["/usr/local/bin/ollama", "run", "runner", "--model", BLOB_A],  # `runner` must follow directly
        ["/usr/local/bin/ollama-helper", "runner", "--model", BLOB_A],
        [],
    ],
)
def test_non_runners(argv: list[str]) -> None:
    assert parse_runner_cmdline(argv) is None


def test_discovery_runner_has_no_model() -> None:
    cmd = parse_runner_cmdline(["/usr/local/bin/ollama", "runner", "--ollama-engine", "--port", "40111"])
    assert cmd is not None and cmd.is_discovery
    assert is_serve_cmdline(["/usr/local/bin/ollama", "serve"])
    assert not is_serve_cmdline(["/usr/bin/python3", "ollama", "serve"])


def tree_records() -> list[ProcessRecord]:
    return [
        rec(1, 0, "/sbin/init", t=1),
        rec(10, 1, "/usr/local/bin/ollama", "serve", t=50),
        rec(20, 10, "/usr/local/bin/ollama", "runner", "--ollama-engine", "--model", BLOB_A, "--port", "1", t=60),
        rec(21, 10, "/usr/local/bin/ollama", "runner", "--model", BLOB_B, "--port", "2", t=61),
        rec(22, 10, "/usr/local/bin/ollama", "runner", "--ollama-engine", "--port", "3", t=62),  # discovery
        rec(23, 10, "/usr/bin/python3", "-c", "x", "ollama runner --model " + BLOB_A, t=63),
        rec(30, 1, "/usr/local/bin/ollama", "runner", "--model", BLOB_A, "--port", "9", t=70),  # stray
    ]


def test_tree_and_blob_match_among_decoys() -> None:
    tree = find_ollama_tree(tree_records(), serve_pid=10)
    assert tree.serve is not None and tree.serve.pid == 10
    assert [r.pid for r in tree.runners] == [21, 20]
    assert [r.pid for r in tree.discovery_runners] == [22]
    assert [r.pid for r in tree.stray_runners] == [30]
    match = match_runner(tree, [BLOB_A])
    assert match.runner is not None and match.runner.pid == 20 and match.note is None
    # a relocated models dir still matches on the sha256 file name
    assert match_runner(tree, ["/Volumes/ext/models/blobs/sha256-" + "b" * 64]).runner.pid == 21  # type: ignore[union-attr]
    assert match_runner(tree, []).note == "no blob path known for this model"


def test_duplicates_prefer_newest_and_say_so() -> None:
    records = [*tree_records(), rec(24, 10, "/usr/local/bin/ollama", "runner", "--model", BLOB_A, "--port", "4", t=80)]
    match = match_runner(find_ollama_tree(records, serve_pid=10), [BLOB_A])
    assert match.runner is not None and match.runner.pid == 24
    assert [c.pid for c in match.candidates] == [24, 20]
    assert match.note and "2 runners" in match.note and "newest, pid 24" in match.note


def test_the_serve_is_the_one_named_never_a_guess() -> None:
    # one `ollama serve` on the machine, but nothing says it is the one on our port: no serve
    tree = find_ollama_tree(tree_records())
    assert tree.serve is None and tree.runners == [] and {r.pid for r in tree.stray_runners} == {20, 21, 22, 30}
    records = [*tree_records(), rec(11, 1, "/opt/ollama/bin/ollama", "serve", t=90)]
    assert find_ollama_tree(records, serve_pid=11).runners == []
    assert [r.pid for r in find_ollama_tree(records, serve_pid=10).runners] == [21, 20]
    assert find_ollama_tree(records, serve_pid=20).serve is None  # a runner is not a serve


def test_mlx_runner_maps_by_model_name() -> None:
    records = [rec(10, 1, "ollama", "serve"), rec(40, 10, "ollama", "runner", "--mlx-engine", "--model", "qwen3:8b", "--port", "7")]
    tree = find_ollama_tree(records, serve_pid=10)
    assert match_runner(tree, [], ["qwen3:8b"]).runner.pid == 40  # type: ignore[union-attr]


def test_manifest_lookup(tmp_path: Path) -> None:
    hex_ = "c" * 64
    path = manifest_path(tmp_path, "gemma4:e4b")
    assert path == tmp_path / "manifests/registry.ollama.ai/library/gemma4/e4b"
    assert manifest_path(tmp_path, "user/m") == tmp_path / "manifests/registry.ollama.ai/user/m/latest"
    assert manifest_path(tmp_path, "hf.co/org/m:q4") == tmp_path / "manifests/hf.co/org/m/q4"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "d" * 64},
        {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + hex_, "size": 1},
    ]}))
    assert blob_from_manifest(tmp_path, "gemma4:e4b") == str(tmp_path / "blobs" / f"sha256-{hex_}")
    assert blob_from_manifest(tmp_path, "missing") is None
    path.write_text("{not json")
    assert blob_from_manifest(tmp_path, "gemma4:e4b") is None


def test_verify_runner_for_a_kill() -> None:
    records = tree_records()
    ok = verify_runner(records, 20, 60, serve_pid=10, expected_blob=BLOB_A, protected={999}, own_user="eval")
    assert ok.pid == 20
    cases = [
        ((20, 61.0), ProcessRefused, "reused"),
        ((99, 1.0), ProcessVanished, "no longer exists"),
        ((10, 50.0), ProcessRefused, "not an Ollama runner"),
        ((23, 63.0), ProcessRefused, "not an Ollama runner"),
        ((22, 62.0), ProcessRefused, "discovery"),
        ((30, 70.0), ProcessRefused, "not a child of the current"),
        ((21, 61.0), ProcessRefused, "serves"),
    ]
    for (pid, created), error, message in cases:
        with pytest.raises(error, match=message):
            verify_runner(records, pid, created, serve_pid=10, expected_blob=BLOB_A, protected={999}, own_user="eval")
    with pytest.raises(ProcessRefused, match="this process or one of its parents"):
        verify_runner(records, 20, 60, serve_pid=10, protected={20}, own_user="eval")
    other_user = [*records[:2], rec(20, 10, "/usr/local/bin/ollama", "runner", "--model", BLOB_A, t=60, user="root")]
    with pytest.raises(ProcessRefused, match="belongs to root"):
        verify_runner(other_user, 20, 60, serve_pid=10, protected=set(), own_user="eval")
    # serve and runner both another user's (a system service): never ours to signal
    with pytest.raises(ProcessRefused, match="belongs to eval, not to alice"):
        verify_runner(records, 20, 60, serve_pid=10, protected=set(), own_user="alice")


# --- the facade with fed records and httpx.MockTransport -------------------------------------
def test_model_probe_caches_blobs_and_survives_show_failures(tmp_path: Path) -> None:
    import httpx
    from helpers_probes import modelfile_for, ps_entry, utc

    from oasis_ops.probes import ModelProbe
    from oasis_ops.probes.ollama import OllamaClient

    shows: list[str] = []
    digest = ["d1"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/ps":
            return httpx.Response(200, json={"models": [
                ps_entry("a:1", expires_at=utc(60), digest=digest[0]), ps_entry("broken:1", expires_at=utc(60))]})
        name = json.loads(request.content)["model"]
        shows.append(name)
        if name == "broken:1":
            return httpx.Response(500, json={"error": "boom"})
        return httpx.Response(200, json={"modelfile": modelfile_for(name, BLOB_A)})

    client = OllamaClient("127.0.0.1:1", transport=httpx.MockTransport(handler))
    probe = ModelProbe(client, tree_records, models_dir=tmp_path, serve_pid=10)
    first = probe.snapshot()
    assert [(s.model, s.runner_pid) for s in first] == [("a:1", 20), ("broken:1", None)]
    assert first[0].as_row()["runner_pid"] == 20 and first[0].as_dict()["runner_variant"] == "ollama runner"
    assert (first[0].runner_create_time, first[0].runner_port, first[0].note) == (60, 1, None)
    probe.snapshot()
    assert shows.count("a:1") == 1 and shows.count("broken:1") == 2  # failures are retried, hits cached
    digest[0] = "d2"  # re-pulled: new manifest digest, look again
    probe.snapshot()
    assert shows.count("a:1") == 2
    # no serve among the processes: every model says so, and nothing is matched
    lonely = ModelProbe(client, lambda: [r for r in tree_records() if r.pid != 10], models_dir=tmp_path, serve_pid=None).snapshot()
    assert lonely[0].runner_pid is None and (lonely[0].note or "").endswith("no `ollama serve` on this machine listens on the Ollama port")
    # given statuses are judged as given: /api/ps is not asked again
    assert [s.model for s in probe.snapshot([first[1].status])] == ["broken:1"]
    from oasis_ops.probes import probe_models

    again = probe_models(client, tree_records, models_dir=tmp_path, serve_pid=10)
    assert [(s.model, s.runner_pid, s.runner_port) for s in again] == [("a:1", 20, 1), ("broken:1", None, None)]
    client.close()
