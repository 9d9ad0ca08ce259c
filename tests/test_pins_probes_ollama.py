"""Pins for reading /api/ps (oasis_ops.probes.ollama) at its edges: every field of a status, the
exact refusals of odd numbers, the Stopping boundary, forever, and the poll-to-poll transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oasis_ops.errors import OllamaBadResponse
from oasis_ops.probes.ollama import (
    FOREVER_AFTER,
    diff_models,
    model_status_from_ps,
    modelfile_from_paths,
    parse_ps,
)

NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


def entry(**fields: Any) -> dict[str, Any]:
    return {"name": "gemma4:e4b", "model": "gemma4:e4b", "digest": "c6eb", "size": 1000, "size_vram": 1000,
            "context_length": 8192, "expires_at": (NOW + timedelta(minutes=5)).isoformat(), "details": {"family": "gemma4"}, **fields}  # fmt: skip


def test_every_field_of_a_loaded_model() -> None:
    status = model_status_from_ps(entry(size=1000, size_vram=520), NOW)
    assert status.as_dict() == {
        "name": "gemma4:e4b", "model": "gemma4:e4b", "digest": "c6eb", "size_bytes": 1000, "size_vram_bytes": 520,
        "context_length": 8192, "expires_at": "2025-11-20T18:05:00+00:00", "state": "loaded", "stopping_since": None,
        "stopping_for_s": None, "processor": "48%/52% CPU/GPU", "cpu_percent": 48.0, "gpu_percent": 52.0,
        "keep_alive_forever": False, "details": {"family": "gemma4"}, "ollama_state": "loaded", "busy": False, "judged": None,
    }  # fmt: skip


def test_the_stopping_boundary_and_forever() -> None:
    at_now = model_status_from_ps(entry(expires_at=NOW.isoformat()), NOW)
    assert at_now.state == "loaded"  # not yet in the past: `ollama ps` says Stopping only after it
    past = model_status_from_ps(entry(expires_at=(NOW - timedelta(microseconds=1)).isoformat()), NOW)
    assert (past.state, past.stopping_since, past.stopping_for_s) == ("stopping", NOW - timedelta(microseconds=1), 1e-6)
    forever = model_status_from_ps(entry(expires_at=FOREVER_AFTER.isoformat()), NOW)
    assert forever.keep_alive_forever and not model_status_from_ps(entry(expires_at=(FOREVER_AFTER - timedelta(seconds=1)).isoformat()), NOW).keep_alive_forever
    none = model_status_from_ps(entry(expires_at=None, model=None, digest=None, details=["x"], size_vram=None, context_length=None), NOW)
    assert (none.expires_at, none.state, none.model, none.digest, none.details, none.size_vram_bytes, none.context_length) == (
        None, "loaded", "gemma4:e4b", "", {}, 0, None)  # fmt: skip
    assert model_status_from_ps(entry(name=None), NOW).name == "gemma4:e4b"  # the model field names it
    assert model_status_from_ps(entry(expires_at=""), NOW).expires_at is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"size": True}, "/api/ps: size is bool, expected a number"), ({"size": "9"}, "/api/ps: size is str, expected a number"),
     ({"size_vram": -1.5}, "/api/ps: size_vram is negative (-1.5), expected a byte count or length"),
     ({"context_length": float("inf")}, "/api/ps: context_length is inf, expected a finite number"),
     ({"size": 2**63}, "/api/ps: size is larger than 2^63-1, expected a byte count or length"),
     ({"name": "", "model": ""}, "/api/ps: a model entry has no name"),
     ({"expires_at": 5}, "/api/ps: 'gemma4:e4b': expires_at '5' is not a usable time"),
     ({"expires_at": "soon"}, "/api/ps: 'gemma4:e4b': expires_at 'soon' is not a usable time")],
)  # fmt: skip
def test_refusals_say_which_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaBadResponse) as info:
        model_status_from_ps(entry(**fields), NOW)
    assert str(info.value) == message


def test_whole_bodies() -> None:
    assert parse_ps({"models": None}, NOW) == [] and parse_ps({}, NOW) == []
    with pytest.raises(OllamaBadResponse, match="^/api/ps answered list, expected an object$"):
        parse_ps([], NOW)
    with pytest.raises(OllamaBadResponse, match="^/api/ps: models is str, expected a list$"):
        parse_ps({"models": "x"}, NOW)
    with pytest.raises(OllamaBadResponse, match="^/api/ps: a model entry is int, expected an object$"):
        parse_ps({"models": [5]}, NOW)
    two = parse_ps({"models": [entry(name="b"), entry(name="a")]}, NOW)
    assert [m.name for m in two] == ["b", "a"]  # Ollama's order is kept


def test_transitions_between_polls() -> None:
    loaded = model_status_from_ps(entry(), NOW)
    stopping = model_status_from_ps(entry(expires_at=(NOW - timedelta(seconds=5)).isoformat()), NOW)
    other = model_status_from_ps(entry(name="other:7b"), NOW)
    assert [(t.model, t.old_state, t.new_state) for t in diff_models([], [loaded])] == [("gemma4:e4b", None, "loaded")]
    assert diff_models([loaded], [loaded]) == []
    moved = diff_models([loaded, other], [stopping])
    assert [(t.model, t.old_state, t.new_state, t.status is not None) for t in moved] == [
        ("gemma4:e4b", "loaded", "stopping", True), ("other:7b", "loaded", "gone", False)]  # fmt: skip


def test_from_lines_of_a_modelfile() -> None:
    modelfile = ("# Modelfile generated by \"ollama show\"\n# FROM gemma4:e4b\nFROM /m/blobs/sha256-aaa\n"
                 "from   /m/blobs/sha256-bbb  \nTEMPLATE x\nFROMAGE no\n")  # fmt: skip
    assert modelfile_from_paths(modelfile) == ["/m/blobs/sha256-aaa", "/m/blobs/sha256-bbb"]
    assert modelfile_from_paths("") == []


def test_the_generation_ping_asks_for_one_token_and_says_what_came_back() -> None:
    import json as _json

    import httpx

    from oasis_ops.errors import OllamaBadResponse
    from oasis_ops.probes.ollama import OllamaClient

    seen: list[tuple[str, str, dict[str, object], object]] = []
    answers = [httpx.Response(200, json={"model": "m", "response": "H", "done": True}),
               httpx.Response(200, json={"model": "m", "done": False}),
               httpx.Response(200, json={"error": "model 'm' not found"}),
               httpx.Response(200, json=["not", "an", "object"]),
               httpx.Response(500, json={"error": "runner crashed"})]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, _json.loads(request.content), request.extensions["timeout"]["read"]))
        return answers.pop(0)

    client = OllamaClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    try:
        ok = client.ping_generate("m", timeout_s=7.5)
        assert ok.ok and ok.elapsed_s >= 0 and ok.detail == f"answered in {ok.elapsed_s:.2f} s"
        assert seen[0] == ("POST", "/api/generate", {"model": "m", "stream": False, "prompt": "hi", "options": {"num_predict": 1}}, 7.5)
        assert not client.ping_generate("m").ok  # done: false
        assert seen[1][3] == 10.0  # the ping's own default timeout
        missing = client.ping_generate("m")
        assert (missing.ok, missing.detail) == (False, "/api/generate m: model 'm' not found")
        with pytest.raises(OllamaBadResponse) as odd:
            client.generate("m")
        assert str(odd.value) == "/api/generate m: answered list" and "prompt" not in seen[3][2] and "options" not in seen[3][2]
        failed = client.ping_generate("m", timeout_s=1.0)
        assert not failed.ok and failed.detail == "POST http://127.0.0.1:9/api/generate -> HTTP 500: runner crashed"
        assert 0 <= failed.elapsed_s < 5
    finally:
        client.close()


def test_a_model_snapshot_as_a_sidecar_row_and_as_json() -> None:
    from datetime import UTC, datetime

    from oasis_ops.probes import ModelSnapshot
    from oasis_ops.probes.ollama import ModelStatus

    ts = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)
    expired = datetime(2025, 11, 20, 17, 57, tzinfo=UTC)
    status = ModelStatus(name="gemma4:e4b", model="gemma4:e4b", digest="abc", size_bytes=9, size_vram_bytes=8, context_length=4096,
                         expires_at=expired, state="stopping", stopping_since=expired, stopping_for_s=60.0, processor="100% GPU",
                         cpu_percent=0.0, gpu_percent=100.0, keep_alive_forever=False, details={"family": "gemma"})  # fmt: skip
    snap = ModelSnapshot(ts=ts, status=status, blob_path="/b", runner_pid=42, runner_create_time=1.5, runner_rss_bytes=7,
                         runner_cpu_percent=99.5, runner_threads=3, runner_cmdline=("llama-server", "--port", "1"),
                         runner_variant="llama-server", runner_port=1, note="n")  # fmt: skip
    assert snap.as_row() == {"ts": ts, "model": "gemma4:e4b", "state": "stopping", "expires_at": expired, "size_bytes": 9,
                             "size_vram_bytes": 8, "context_length": 4096, "runner_pid": 42, "runner_rss_bytes": 7,
                             "runner_cpu_percent": 99.5}  # fmt: skip
    assert snap.as_dict() == {**status.as_dict(), "ts": ts.isoformat(), "blob_path": "/b", "runner_pid": 42, "runner_create_time": 1.5,
                              "runner_rss_bytes": 7, "runner_cpu_percent": 99.5, "runner_threads": 3,
                              "runner_cmdline": ["llama-server", "--port", "1"], "runner_variant": "llama-server", "runner_port": 1,
                              "note": "n"}  # fmt: skip
    assert status.as_dict()["expires_at"] == expired.isoformat() and status.as_dict()["ollama_state"] == "stopping"
    bare = ModelSnapshot(ts=ts, status=status, blob_path=None, runner_pid=None, runner_create_time=None, runner_rss_bytes=None,
                         runner_cpu_percent=None, runner_threads=None, runner_cmdline=(), runner_variant=None, runner_port=None,
                         note=None)  # fmt: skip
    assert bare.as_dict()["runner_cmdline"] is None and (snap.model, snap.state) == ("gemma4:e4b", "stopping")


def test_a_models_architecture_from_its_blob_else_api_show_cached_but_not_after_a_failure(tmp_path: Path) -> None:
    import time

    import httpx

    from oasis_ops.probes import ModelProbe
    from oasis_ops.probes.ollama import OllamaClient

    shows: list[str] = []
    answers = [httpx.Response(500, json={"error": "busy"}),
               httpx.Response(200, json={"model_info": {"general.architecture": "gemma3"}}),
               httpx.Response(200, json={"model_info": {"general.architecture": ""}}),
               httpx.Response(200, json={"model_info": ["odd"]})]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        shows.append(request.url.path)
        return answers.pop(0)

    not_gguf = tmp_path / "blob"
    not_gguf.write_bytes(b"not a gguf file at all")
    probe = ModelProbe(OllamaClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler)), processes=object(),  # type: ignore[arg-type]
                       models_dir=tmp_path)  # fmt: skip
    probe._show_until = time.monotonic() + 60
    try:
        assert probe.architecture(str(not_gguf), "gemma4:e4b") is None and shows == ["/api/show"]  # /api/show failed
        assert probe.architecture(str(not_gguf), "gemma4:e4b") == "gemma3" and len(shows) == 2  # not cached: asked again
        assert probe.architecture(str(not_gguf), "gemma4:e4b") == "gemma3" and len(shows) == 2  # now cached, per blob
        assert probe.architecture(None, "other:1b") is None and len(shows) == 3  # an empty name is no architecture
        assert probe.architecture(None, "third:1b") is None and len(shows) == 4  # model_info not an object
        assert probe.architecture(None, "other:1b") is None and len(shows) == 4  # cached as unknown, by model name
        probe._show_until = time.monotonic() - 1  # the snapshot's budget spent: no call, nothing cached
        assert probe.architecture(None, "fourth:1b") is None and len(shows) == 4 and ("arch", "fourth:1b") not in probe._blobs
    finally:
        probe.client.close()


def test_the_processor_column_and_its_shares() -> None:
    from oasis_ops.probes.ollama import processor_split

    assert processor_split(100, 0) == ("100% CPU", 100.0, 0.0)
    assert processor_split(100, 100) == ("100% GPU", 0.0, 100.0)
    assert processor_split(100, 101) == ("Unknown", None, None)
    assert processor_split(1, 1) == ("100% GPU", 0.0, 100.0) and processor_split(0, 0) == ("100% CPU", 100.0, 0.0)
    assert processor_split(200, 100) == ("50%/50% CPU/GPU", 50.0, 50.0)
    assert processor_split(1000, 515) == ("49%/51% CPU/GPU", 49.0, 51.0)  # 48.5 rounds half up, as Go
    assert processor_split(1000, 994) == ("1%/99% CPU/GPU", 1.0, 99.0)


def test_small_readers_of_ollamas_answers() -> None:
    import json as _json

    import httpx

    from oasis_ops.probes.ollama import (
        OllamaClient,
        _one_line,
        _snippet,
        _too_deep,
        modelfile_from_paths,
        parse_rfc3339,
    )
    from oasis_ops.settings import load_settings

    assert _snippet("  a \n b  ") == "'a b'" and _snippet("") == "(empty body)" and _snippet(" \n ") == "(empty body)"
    assert _snippet("x" * 80) == repr("x" * 80) and _snippet("x" * 81) == repr("x" * 80 + "...")
    assert _one_line(ValueError("a\n  b")) == "a b" and _one_line(ValueError()) == "ValueError"
    assert _one_line(ValueError("y" * 300)) == "y" * 200
    assert not _too_deep([[1]], 2) and _too_deep([[[1]]], 2) and not _too_deep({"a": {"b": 1}}, 2) and _too_deep({"a": {"b": {}}}, 2)
    assert not _too_deep([1, [2], 3], 2) and _too_deep([1, 2, [[3]]], 2)  # the deep one last: still found
    assert modelfile_from_paths("# FROM gemma4:e4b\nfrom '/b/sha256-1'\nFROM   \"/b/sha256-2\"  \nPARAMETER x 1\n") == [
        "/b/sha256-1", "/b/sha256-2"]  # fmt: skip
    assert parse_rfc3339("2025-11-20T17:58:60.5z") == datetime(2025, 11, 20, 17, 58, 59, 500000, tzinfo=UTC)  # leap second, z
    with pytest.raises(ValueError, match="not an RFC 3339 time: 12"):
        parse_rfc3339(12)  # type: ignore[arg-type]

    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(_json.loads(request.content))
        return httpx.Response(200, json=[1] if len(bodies) > 1 else {"modelfile": 7})

    settings = load_settings(env={"OLLAMA_HOST": "127.0.0.1:9", "OASIS_OPS_OLLAMA_TIMEOUT_S": "3.5"})
    client = OllamaClient.from_settings(settings, transport=httpx.MockTransport(handler))
    try:
        assert (client.base_url, client.timeout_s) == ("http://127.0.0.1:9", 3.5)
        assert client.show("m")["blob_paths"] == [] and bodies[0] == {"model": "m", "name": "m"}  # both keys, all versions
        with pytest.raises(OllamaBadResponse, match=r"^/api/show m: answered list, expected an object$"):
            client.show("m")
    finally:
        client.close()


def test_a_ps_entry_with_fields_missing_or_odd() -> None:
    from oasis_ops.probes.ollama import model_status_from_ps

    now = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)
    bare = model_status_from_ps({"name": "old:7b", "expires_at": ""}, now)  # an old build: no size_vram, model or digest
    assert (bare.model, bare.digest, bare.size_bytes, bare.size_vram_bytes, bare.processor, bare.expires_at) == (
        "old:7b", "", 0, 0, "100% CPU", None)  # fmt: skip
    named = model_status_from_ps({"model": "only-model:1", "size": 10, "size_vram": 10}, now)
    assert (named.name, named.model, named.processor) == ("only-model:1", "only-model:1", "100% GPU")
    long_name = "n" * 100
    with pytest.raises(OllamaBadResponse) as odd:
        model_status_from_ps({"name": long_name, "expires_at": {"t": 1}}, now)
    assert str(odd.value) == f"/api/ps: {repr('n' * 60 + '...')}: expires_at {repr('{' + chr(34) + 't' + chr(34) + ': 1}')} is not a usable time"
    with pytest.raises(OllamaBadResponse, match=r"expires_at 'tomorrow' is not a usable time$"):
        model_status_from_ps({"name": "m", "expires_at": "tomorrow"}, now)


def test_the_client_reads_bodies_up_to_its_cap_and_waits_its_own_timeout() -> None:
    import httpx

    from oasis_ops.probes.ollama import MAX_BODY_BYTES, OllamaClient

    sizes = [MAX_BODY_BYTES, MAX_BODY_BYTES + 1]
    seen: list[tuple[str, float]] = []

    def respond(size: int, declared: bool) -> httpx.Response:
        body = b'{"version": "0.20.4", "pad": "' + b"x" * (size - 32) + b'"}'
        body = body.ljust(size, b" ")
        return httpx.Response(200, content=body if declared else iter([body[: size // 2], body[size // 2 :]]))

    for declared in (True, False):
        for size in sizes:
            def handler(request: httpx.Request, size: int = size, declared: bool = declared) -> httpx.Response:
                seen.append((request.method, request.extensions["timeout"]["read"]))
                return respond(size, declared)

            client = OllamaClient("http://127.0.0.1:9", timeout_s=1.25, transport=httpx.MockTransport(handler))
            try:
                if size == MAX_BODY_BYTES:
                    assert client.version() == "0.20.4"
                else:
                    with pytest.raises(OllamaBadResponse) as refused:
                        client.version()
                    assert str(refused.value) == (
                        f"GET http://127.0.0.1:9/api/version answered {size} bytes, more than the {MAX_BODY_BYTES} we read" if declared
                        else f"GET http://127.0.0.1:9/api/version answered more than {MAX_BODY_BYTES} bytes; refused")  # fmt: skip
            finally:
                client.close()
    assert set(seen) == {("GET", 1.25)}  # the client's own timeout when none is given
