"""Pins for reading runner command lines and for verifying a kill target (written from the probes
mutation run's survivors): each variant's words, short flags, and every refusal's exact line."""

from __future__ import annotations

import os

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


def test_the_serve_listening_on_the_port_is_found_among_real_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two real processes whose command lines read `ollama serve` (a symlink named ollama to this
    interpreter, running a script named serve): only the one listening on the URL's port is taken."""
    import os
    import socket
    import subprocess
    import sys

    from oasis_ops.probes.processes import PsutilProcesses, _is_local, serve_pid_for

    (tmp_path / "ollama").symlink_to(sys.executable)
    (tmp_path / "serve").write_text("import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\n"
                                    "s.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)\n")  # fmt: skip
    procs = [subprocess.Popen([str(tmp_path / "ollama"), "serve"], cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ports = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
        free.close()
        records = PsutilProcesses()()
        for proc, port in zip(procs, ports, strict=True):
            for host in ("127.0.0.1", "localhost", "[::1]"):
                assert serve_pid_for(f"http://{host}:{port}", records) == proc.pid, host
        assert serve_pid_for(f"http://127.0.0.1:{unused}", records) is None  # nobody listens there
        assert serve_pid_for(f"http://10.1.2.3:{ports[0]}", records) is None  # another machine's Ollama
        assert serve_pid_for("http://127.0.0.1", records) is None  # no port: nothing to match
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
    assert _is_local(None) and _is_local("") and _is_local("localhost") and _is_local("::1") and _is_local("[::1]")
    assert not _is_local("example.com") and not _is_local("10.0.0.1") and os.path.islink(tmp_path / "ollama")


def test_manifest_paths_for_each_name_form() -> None:
    from pathlib import Path

    from oasis_ops.probes.processes import manifest_path

    m = Path("/m")
    assert manifest_path(m, "gemma4:e4b") == m / "manifests/registry.ollama.ai/library/gemma4/e4b"
    assert manifest_path(m, "gemma4") == m / "manifests/registry.ollama.ai/library/gemma4/latest"
    assert manifest_path(m, "user/model:q4") == m / "manifests/registry.ollama.ai/user/model/q4"
    assert manifest_path(m, "host:5000/ns/model") == m / "manifests/host:5000/ns/model/latest"  # the colon of a port is no tag
    assert manifest_path(m, "host:5000/ns/model:v1:x") == m / "manifests/host:5000/ns/model:v1/x"  # the last colon


def test_blob_matching_manifests_and_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from oasis_ops.probes.processes import (
        RunnerMatch,
        blob_from_manifest,
        blob_key,
        find_ollama_tree,
        manifest_path,
        match_runner,
        own_lineage,
    )

    assert blob_key("/a/b/sha256-" + "ab" * 32) == "sha256-" + "ab" * 32 == blob_key("sha256:" + "ab" * 32)
    assert blob_key("gemma4:e4b") == "gemma4:e4b"
    path = manifest_path(tmp_path, "gemma4:e4b")
    path.parent.mkdir(parents=True)
    layers = [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:00"},
              {"mediaType": "application/vnd.ollama.image.model", "digest": "md5:11"},
              {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:ab:cd"}]  # fmt: skip
    path.write_text(json.dumps({"layers": layers}), encoding="utf-8")
    assert blob_from_manifest(tmp_path, "gemma4:e4b") == str(tmp_path / "blobs" / "sha256-ab:cd")  # the first model layer that is sha256
    path.write_text(json.dumps({"layers": "none"}))
    assert blob_from_manifest(tmp_path, "gemma4:e4b") is None and blob_from_manifest(tmp_path, "absent:1") is None

    serve = {"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 1.0}
    runners = [{"pid": p, "ppid": 100, "name": "ollama", "create_time": float(p), "cmdline": ["/usr/bin/ollama", "runner", "--model", m, "--port", "1"]}
               for p, m in ((201, BLOB), (202, BLOB), (203, "qwen3:8b"))]  # fmt: skip
    tree = find_ollama_tree(records_from([serve, *runners]), serve_pid=100)
    several = match_runner(tree, [BLOB])
    newest = several.runner
    assert newest is not None and newest.pid == 202 and [r.pid for r in several.candidates] == [202, 201]
    assert several.note == "2 runners serve this blob (pids 202, 201); using the newest, pid 202"
    assert match_runner(tree, [], ["qwen3:8b"]).runner.pid == 203  # type: ignore[union-attr]  # MLX: by name
    assert match_runner(tree, [], ["qwen3:8b:latest"]).runner.pid == 203  # type: ignore[union-attr]  # :latest is the same name
    assert match_runner(tree, [], ["qwen3:14b"]).runner is None
    assert match_runner(tree, [], []) == RunnerMatch(None, (), "no blob path known for this model")
    assert match_runner(tree, ["/other/sha256-" + "cd" * 32]) == RunnerMatch(None, (), None)
    assert {os.getpid(), os.getppid()} <= own_lineage()


def test_an_ollama_like_process_is_measured_for_real_and_forgotten_when_it_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from oasis_ops.probes.processes import PsutilProcesses

    (tmp_path / "ollama").symlink_to(sys.executable)
    (tmp_path / "serve").write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([str(tmp_path / "ollama"), "serve"], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "OLLAMA_FLASH_ATTENTION": "0"})  # fmt: skip
    listing = PsutilProcesses()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        first = next(r for r in listing() if r.pid == proc.pid)
        assert first.cpu_percent is None and (first.rss_bytes or 0) > 0 and (first.num_threads or 0) >= 1  # first look: no CPU yet
        assert (first.environ or {}).get("OLLAMA_FLASH_ATTENTION") == "0"
        second = next(r for r in listing() if r.pid == proc.pid)
        assert second.cpu_percent is not None and second.cpu_percent >= 0.0
        assert any(key[0] == proc.pid for key in listing._cache)
        quiet = next(r for r in PsutilProcesses(with_environ=False)() if r.pid == proc.pid)
        assert quiet.environ is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert all(r.pid != proc.pid for r in listing()) and not any(key[0] == proc.pid for key in listing._cache)


def test_records_from_takes_records_and_dicts_in_any_order() -> None:
    [first] = records_from([{"pid": 1, "ppid": 0, "name": "a", "cmdline": ["a"], "create_time": 1.0}])
    both = records_from([first, {"pid": 2, "ppid": 1, "name": "b", "cmdline": None, "create_time": 2.0}])
    assert [(r.pid, r.cmdline) for r in both] == [(1, ("a",)), (2, ())] and both[0] is first
