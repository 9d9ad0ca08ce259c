"""Ollama client: OLLAMA_HOST, response shapes of every era, states, and failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_probes import FakeOllama, closed_port, modelfile_for, ps_entry, utc

from oasis_ops.errors import OllamaBadResponse, OllamaUnreachable
from oasis_ops.probes.ollama import (
    OllamaClient,
    diff_models,
    modelfile_from_paths,
    parse_ps,
    parse_rfc3339,
    processor_split,
    resolve_ollama_host,
)
from oasis_ops.settings import load_settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("  \"127.0.0.1:11500\" ", "http://127.0.0.1:11500"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("1.2.3.4:56789", "http://1.2.3.4:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("https://1.2.3.4:56789", "https://1.2.3.4:56789"),
        ("example.com", "http://example.com:11434"),
        ("example.com:56789", "http://example.com:56789"),
        ("example.com/", "http://example.com:11434"),
        ("example.com:56789/path/", "http://example.com:56789/path"),
        ("https://example.com:56789/path", "https://example.com:56789/path"),
        ("[::1]", "http://[::1]:11434"),
        ("[0001:002:003:0004::1]:56789", "http://[1:2:3:4::1]:56789"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),  # bind-all -> loopback (ConnectableHost)
        ("0.0.0.0:11435", "http://127.0.0.1:11435"),
        ("http://0.0.0.0", "http://127.0.0.1:80"),
        ("[::]:11434", "http://[::1]:11434"),
        ("localhost:99999", "http://localhost:11434"),  # invalid port -> default
        ("ollama.com", "https://ollama.com:443"),
    ],
)
def test_resolve_ollama_host(value: str | None, expected: str) -> None:
    assert resolve_ollama_host(value) == expected


def test_settings_ollama_host_from_env_goes_through_resolution() -> None:
    s = load_settings(env={"OLLAMA_HOST": "0.0.0.0:11435"})
    client = OllamaClient(s.ollama_host, timeout_s=s.ollama_timeout_s)
    assert client.base_url == "http://127.0.0.1:11435" and client.timeout_s == 2.0
    client.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-04T14:38:31.83753-07:00", datetime(2024, 6, 4, 21, 38, 31, 837530, tzinfo=UTC)),
        ("2025-10-17T16:47:07.933550123+02:00", datetime(2025, 10, 17, 14, 47, 7, 933550, tzinfo=UTC)),
        ("2025-11-20T17:58:40Z", datetime(2025, 11, 20, 17, 58, 40, tzinfo=UTC)),
        ("2318-03-14T09:12:55.123456789+01:00", datetime(2318, 3, 14, 8, 12, 55, 123456, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    ("size", "vram", "expected"),
    [
        (100, 0, "100% CPU"),
        (0, 0, "100% CPU"),
        (100, 100, "100% GPU"),
        (100, 150, "Unknown"),
        (0, 5, "Unknown"),
        (6_591_830_464, 5_333_539_264, "19%/81% CPU/GPU"),
        (200, 130, "35%/65% CPU/GPU"),
        (200, 101, "50%/50% CPU/GPU"),  # 49.5 rounds half away from zero, like Go
        (1000, 995, "1%/99% CPU/GPU"),  # 0.5 -> 1 (Python's round() would say 0)
    ],
)
def test_processor_split_matches_ollama_ps(size: int, vram: int, expected: str) -> None:
    assert processor_split(size, vram)[0] == expected


def test_fixture_shapes_with_a_pinned_clock(fixtures_dir: Path) -> None:
    partial = json.loads((fixtures_dir / "ollama" / "api_ps_gemma4_partial_offload.json").read_text())
    before = datetime(2025, 10, 17, 23, 40, tzinfo=UTC)  # expiry is 23:47:07.93 UTC
    [m] = parse_ps(partial, before)
    assert (m.name, m.state, m.context_length) == ("gemma4", "loaded", 4096)
    assert m.processor == "19%/81% CPU/GPU" and (m.cpu_percent, m.gpu_percent) == (19.0, 81.0)
    assert m.stopping_since is None and m.details["family"] == "gemma4"
    after = datetime(2025, 10, 17, 23, 50, 7, 933550, tzinfo=UTC)
    [m] = parse_ps(partial, after)
    assert m.state == "stopping" and m.stopping_since == m.expires_at
    assert m.stopping_for_s == pytest.approx(180.0)

    docs = json.loads((fixtures_dir / "ollama" / "api_ps_docs_v0.1.json").read_text())
    [m] = parse_ps(docs, before)
    assert m.context_length is None and m.processor == "100% GPU" and m.state == "stopping"
    assert parse_ps(json.loads((fixtures_dir / "ollama" / "api_ps_empty.json").read_text()), before) == []


def test_old_shapes_missing_fields_and_forever() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    entry = ps_entry("llama3:8b", expires_at="2318-01-01T00:00:00.000000001+01:00", size_vram=None, context_length=None)
    del entry["details"]
    [m] = parse_ps({"models": [entry]}, now)
    assert m.size_vram_bytes == 0 and m.processor == "100% CPU"
    assert m.keep_alive_forever and m.state == "loaded" and m.details == {}
    assert parse_ps({}, now) == [] and parse_ps({"models": None}, now) == []


@pytest.mark.parametrize(
    "payload",
    [[], "text", {"models": "x"}, {"models": [5]}, {"models": [{"size": 1}]},
     {"models": [{"name": "a", "size": "big"}]}, {"models": [{"name": "a", "expires_at": "soon"}]}],
)
def test_wrong_shapes_are_bad_responses(payload: Any) -> None:
    with pytest.raises(OllamaBadResponse):
        parse_ps(payload, datetime.now(UTC))


def test_diff_models_loaded_stopping_gone() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    loaded = parse_ps({"models": [ps_entry("a", expires_at=now + timedelta(minutes=5))]}, now)
    stopping = parse_ps({"models": [ps_entry("a", expires_at=now - timedelta(seconds=3))]}, now)
    assert [(t.model, t.old_state, t.new_state) for t in diff_models([], loaded)] == [("a", None, "loaded")]
    assert diff_models(loaded, loaded) == []
    assert [(t.old_state, t.new_state) for t in diff_models(loaded, stopping)] == [("loaded", "stopping")]
    [gone] = diff_models(stopping, [])
    assert (gone.old_state, gone.new_state, gone.status) == ("stopping", "gone", None)


def test_modelfile_from_skips_comment_lines() -> None:
    text = modelfile_for("gemma4:e4b", "/m/blobs/sha256-aa") + "FROM /m/blobs/sha256-proj\n"
    assert modelfile_from_paths(text) == ["/m/blobs/sha256-aa", "/m/blobs/sha256-proj"]


def test_mock_transport_show_generate_unload(fixtures_dir: Path) -> None:
    seen: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.url.path, body))
        if request.url.path == "/api/version":
            return httpx.Response(200, text=(fixtures_dir / "ollama" / "api_version.json").read_text())
        if request.url.path == "/api/show":
            return httpx.Response(200, json={"modelfile": modelfile_for("g", "/x/blobs/sha256-ab")})
        return httpx.Response(200, text=(fixtures_dir / "ollama" / "api_generate_unload.json").read_text())

    with OllamaClient("127.0.0.1:1", transport=httpx.MockTransport(handler)) as client:
        assert client.version() == "0.20.4"
        assert client.show("g")["blob_paths"] == ["/x/blobs/sha256-ab"]
        assert client.unload("gemma4:e4b")["done_reason"] == "unload"
    assert seen[-1] == ("/api/generate", {"model": "gemma4:e4b", "stream": False, "keep_alive": 0})


# --- a real server on loopback --------------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama()
    yield server
    server.close()


def test_real_server_ok_and_ping(fake: FakeOllama) -> None:
    fake.models = [ps_entry("gemma4:e4b", expires_at=utc(300))]
    with OllamaClient(fake.url, timeout_s=2.0) as client:
        assert client.version() == "0.20.4"
        [m] = client.ps()
        assert m.state == "loaded" and m.expires_at and m.expires_at.tzinfo is UTC
        ping = client.ping_generate("gemma4:e4b", timeout_s=2.0)
        assert ping.ok and ping.elapsed_s >= 0
        with pytest.raises(OllamaBadResponse, match="HTTP 404: model 'nope' not found"):
            client.show("nope")


def test_ollama_down_is_unreachable() -> None:
    with OllamaClient(f"127.0.0.1:{closed_port()}", timeout_s=1.0) as client:
        with pytest.raises(OllamaUnreachable, match="cannot connect to Ollama") as info:
            client.version()
        assert "\n" not in str(info.value)
        ping = client.ping_generate("m", timeout_s=1.0)
        assert not ping.ok and "cannot connect" in ping.detail


@pytest.mark.parametrize(
    ("mode", "call", "message"),
    [
        ("html", "version", "answered HTML"),
        ("truncated", "ps", "answered non-JSON"),
        ("wrong_types", "ps", "expected a number"),
        ("wrong_types", "version", "without a version"),
        ("500", "ps", "HTTP 500: llama runner process has terminated"),
    ],
)
def test_garbage_is_a_bad_response(fake: FakeOllama, mode: str, call: str, message: str) -> None:
    fake.mode = mode
    with OllamaClient(fake.url, timeout_s=2.0) as client:
        with pytest.raises(OllamaBadResponse, match=message) as info:
            getattr(client, call)()
        assert "\n" not in str(info.value)


def test_a_slow_server_times_out(fake: FakeOllama) -> None:
    fake.mode, fake.delay_s = "slow", 1.5
    with OllamaClient(fake.url, timeout_s=0.2) as client:
        with pytest.raises(OllamaUnreachable, match="did not answer GET .*/api/ps within 0.2 s"):
            client.ps()
