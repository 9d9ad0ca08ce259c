"""Junk from a (real, loopback) Ollama server: every case is a one-line OllamaBadResponse from the
client and never a traceback from `oasis-ops status`. Also: the demo's simulated host is validated
and only read from a loopback URL, and the emulator refuses cross-site requests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import running_emulator
from helpers_probes import FakeOllama

from oasis_ops.cli import main as cli_main
from oasis_ops.demo.faults_cli import request_faults
from oasis_ops.demo.ollama.api import loopback_origin
from oasis_ops.errors import OllamaBadResponse, OllamaUnreachable, ProbeError
from oasis_ops.probes.ollama import MAX_BODY_BYTES, OllamaClient, parse_rfc3339
from oasis_ops.sampler.hostsource import (
    DEMO_HEADER,
    HostSource,
    host_sample_from_demo,
    is_loopback_url,
)

DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads alone raises RecursionError on this


class JunkOllama(FakeOllama):
    """FakeOllama that answers chosen paths with raw bytes (`junk[path] = (status, body)`)."""

    def __init__(self) -> None:
        self.junk: dict[str, tuple[int, bytes]] = {}
        self.undeclared_length = False
        super().__init__()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if handler.path in self.junk:
            status, body = self.junk[handler.path]
            handler.rfile.read(int(handler.headers.get("Content-Length") or 0))  # unread input -> RST
            if self.undeclared_length:  # HTTP/1.0: the body runs until the connection closes
                handler.send_response(status)
                handler.end_headers()
                handler.wfile.write(body)
                return None
            return self._send(handler, status, body)
        return super()._handle(handler, method)


def ps_body(**fields: Any) -> bytes:
    entry = {"name": "gemma4:e4b", "model": "gemma4:e4b", "size": 100, "size_vram": 100,
             "expires_at": "2999-01-01T00:00:00Z", **fields}  # fmt: skip
    return json.dumps({"models": [entry]}).encode()


PS_JUNK: dict[str, tuple[bytes, str]] = {
    "size inf": (ps_body(size=1).replace(b'"size": 1,', b'"size": 1e400,'), "size is inf"),
    "size NaN": (ps_body(size=1).replace(b'"size": 1,', b'"size": NaN,'), "size is nan"),
    "size negative": (ps_body(size=-5), "size is negative"),
    "size beyond int64": (ps_body(size=2**70), "size is larger"),
    "int too long": (ps_body(size=1).replace(b'"size": 1,', b'"size": ' + b"9" * 5000 + b","), "non-JSON"),
    "expires before year 1": (ps_body(expires_at="0001-01-01T00:00:00+05:00"), "expires_at '0001-01-01"),
    "expires after year 9999": (ps_body(expires_at="9999-12-31T23:59:59-05:00"), "expires_at '9999-12-31"),
    "expires month 13": (ps_body(expires_at="2025-13-01T00:00:00Z"), "expires_at"),
    "expires a list": (ps_body(expires_at=[1]), "expires_at '\\[1\\]'"),
    "deep arrays": (DEEP, "nested too deeply"),
    "deep details": (ps_body(details=json.loads("[" * 500 + "]" * 500)), "nested more than 64"),
}


@pytest.fixture
def fake_trickle() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    fake.mode, fake.delay_s = "trickle", 0.05
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def junk() -> Iterator[JunkOllama]:
    server = JunkOllama()
    yield server
    server.close()


def test_out_of_range_times_are_value_errors() -> None:
    for text in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        with pytest.raises(ValueError, match="out of range"):
            parse_rfc3339(text)
    assert parse_rfc3339("0001-01-01T00:00:00-05:00") == datetime(1, 1, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize("case", sorted(PS_JUNK))
def test_junk_ps_is_a_one_line_bad_response(junk: JunkOllama, case: str) -> None:
    body, message = PS_JUNK[case]
    junk.junk["/api/ps"] = (200, body)
    with OllamaClient(junk.url, timeout_s=5.0) as client:
        with pytest.raises(OllamaBadResponse, match=message) as info:
            client.ps()
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_junk_version_show_generate_and_error_bodies(junk: JunkOllama) -> None:
    junk.junk["/api/version"] = (200, DEEP)
    junk.junk["/api/show"] = (200, b'{"modelfile": ' + b"[" * 200 + b"]" * 200 + b"}")
    junk.junk["/api/generate"] = (500, b'{"error": ' + DEEP + b"}")
    with OllamaClient(junk.url, timeout_s=5.0) as client:
        with pytest.raises(OllamaBadResponse, match="nested too deeply"):
            client.version()
        with pytest.raises(OllamaBadResponse, match="nested more than"):
            client.show("m")
        with pytest.raises(OllamaBadResponse, match="HTTP 500"):
            client.generate("m", "hi")
        ping = client.ping_generate("m", timeout_s=5.0)
        assert not ping.ok and "HTTP 500" in ping.detail


def test_an_oversized_body_is_refused(junk: JunkOllama) -> None:
    # Valid JSON, just too big: the declared length is refused before the body is read.
    junk.junk["/api/ps"] = (200, b'{"models": [], "pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}')
    with OllamaClient(junk.url, timeout_s=10.0) as client:
        with pytest.raises(OllamaBadResponse, match=f"more than the {MAX_BODY_BYTES}"):
            client.ps()
        junk.undeclared_length = True  # the size is only known while reading
        with pytest.raises(OllamaBadResponse, match=f"more than {MAX_BODY_BYTES} bytes"):
            client.ps()
        junk.junk["/api/ps"] = (200, ps_body())
        assert [m.name for m in client.ps()] == ["gemma4:e4b"]  # the client still works afterwards


@pytest.mark.parametrize("case", ["size inf", "size NaN", "expires before year 1", "expires after year 9999", "deep arrays"])
def test_status_reports_junk_ps_without_a_traceback(
    junk: JunkOllama, case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    junk.junk["/api/ps"] = (200, PS_JUNK[case][0])
    monkeypatch.setenv("OLLAMA_HOST", junk.url)
    code = cli_main(["status", "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 0
    snap = json.loads(captured.out)
    assert snap["ollama"]["reachable"] is True and snap["ollama"]["version"] == "0.20.4"
    assert "/api/ps" in snap["ollama"]["error"] and "\n" not in snap["ollama"]["error"]
    assert snap["models"] == []


def test_status_with_a_junk_version_answer(junk: JunkOllama, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    junk.junk["/api/version"] = (200, DEEP)
    monkeypatch.setenv("OLLAMA_HOST", junk.url)
    code = cli_main(["status"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 0 and "nested too deeply" in captured.out


# --- the demo's simulated host (sampler/hostsource.py) ----------------------------------------
GOOD_HOST = {"simulated": True, "mem_total_bytes": 17179869184, "mem_free_bytes": 16384 * 1000, "page_size": 16384,
             "pages_free": 1000, "swapins": 3, "swapouts": 30, "pressure": 12.5, "pressure_level": 1}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pressure": "high"}, "pressure as str"),
        ({"pressure": float("nan")}, "pressure = nan"),
        ({"pressure": 250}, "pressure = 250"),
        ({"pressure_level": "critical"}, "pressure_level as str"),
        ({"pressure_level": True}, "pressure_level as bool"),
        ({"swapouts": "30"}, "swapouts as str"),
        ({"swapouts": float("inf")}, "swapouts = inf"),
        ({"mem_free_bytes": -1}, "mem_free_bytes out of range"),
        ({"pages_free": 2**64}, "pages_free out of range"),
        ({"simulated": "yes"}, "not a simulated host"),
    ],
)
def test_demo_host_payload_is_validated(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ProbeError, match=message) as info:
        host_sample_from_demo({**GOOD_HOST, **fields})
    assert "\n" not in str(info.value)


def test_a_good_demo_host_payload() -> None:
    sample = host_sample_from_demo({**GOOD_HOST, "swap_used_bytes": None})
    assert sample.source == "simulated" and sample.pressure == 12.5 and sample.pressure_level == "normal"
    assert sample.pages_free == 1000 and sample.swap_used_bytes is None and sample.ts.tzinfo is UTC


def test_host_source_turns_junk_into_probe_errors(junk: JunkOllama) -> None:
    junk.junk["/_demo/host"] = (200, json.dumps(GOOD_HOST).encode())
    source = HostSource(junk.url, timeout_s=5.0, real_probe=lambda: pytest.fail("real probe used"))
    try:
        # without the emulator's mark (a real Ollama on loopback) the demo-only path is never asked
        assert not source.detect() and not [r for r in junk.requests if r[1].startswith("/_demo/")]
        junk.extra_headers[DEMO_HEADER] = "emulator"
        assert source.detect() and source.sample().pressure == 12.5
        for body in (json.dumps({**GOOD_HOST, "pressure": "high"}).encode(), DEEP, b"<html>"):
            junk.junk["/_demo/host"] = (200, body)
            with pytest.raises(ProbeError):
                source.sample()
        junk.junk["/_demo/host"] = (500, b"{}")
        with pytest.raises(ProbeError, match="HTTP 500"):
            source.sample()
        junk.junk["/_demo/host"] = (200, b"[" + b"0," * (1 << 20) + b"0]")  # 2 MB: read up to the cap only
        with pytest.raises(ProbeError, match="ValueError"):
            source.sample()
        assert not source.detect()
    finally:
        source.close()


def test_every_ollama_call_has_a_total_deadline(fake_trickle: FakeOllama) -> None:
    """An Ollama that sends one byte every 50 ms never trips a per-read timeout: the client's
    timeout is for the whole call (the status page was held ~150 s before)."""
    client = OllamaClient(fake_trickle.url, timeout_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(OllamaUnreachable, match="within 1 s"):
            client.ps()
    finally:
        client.close()
    assert time.monotonic() - started < 5.0  # 1 s and the time to close; a per-read timeout never ends
    source = HostSource(fake_trickle.url, timeout_s=0.5, real_probe=lambda: pytest.fail("real probe used"))
    started = time.monotonic()
    try:
        assert not source.detect()
    finally:
        source.close()
    assert time.monotonic() - started < 5.0


def test_host_source_asks_only_a_loopback_ollama() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=GOOD_HOST, headers={DEMO_HEADER: "emulator"})

    real = host_sample_from_demo(GOOD_HOST)  # stands in for this machine's probe
    for url, loopback in [("http://10.1.2.3:11434", False), ("https://ollama.example.com", False),
                          ("http://localhost:11434", True), ("http://127.0.0.2:11434", True), ("[::1]:11434", True)]:  # fmt: skip
        asked.clear()
        source = HostSource(url, transport=httpx.MockTransport(handler), real_probe=lambda: real)
        try:
            assert is_loopback_url(source.base_url) is loopback
            assert source.detect() is loopback and bool(asked) is loopback
            assert source.sample() is not real if loopback else source.sample() is real
        finally:
            source.close()


# --- the emulator's demo endpoints refuse cross-site requests ----------------------------------
def test_emulator_refuses_foreign_origins_and_non_json_posts(tmp_path: Path) -> None:
    fault = {"name": "stall", "on": True, "params": {}}
    with running_emulator(tmp_path) as emu:
        faults = emu.url + "/_demo/faults"

        def stall_on() -> bool:
            return bool(httpx.get(faults, timeout=5).json()["faults"]["stall"]["on"])

        # What a web page can send without a CORS preflight: text/plain, with its Origin.
        text_post = httpx.post(faults, content=json.dumps(fault), headers={"Content-Type": "text/plain"}, timeout=5)
        assert text_post.status_code == 415 and "application/json" in text_post.json()["error"]
        evil = {"Origin": "http://evil.example"}
        assert httpx.post(faults, json=fault, headers=evil, timeout=5).status_code == 403
        assert httpx.post(faults, json=fault, headers={"Origin": "null"}, timeout=5).status_code == 403
        assert httpx.get(emu.url + "/api/ps", headers=evil, timeout=5).status_code == 403
        assert httpx.post(emu.url + "/api/generate", json={"model": "x"}, headers=evil, timeout=5).status_code == 403
        assert not stall_on()
        # Local pages and plain clients still work; so does `oasis-ops demo fault` (it sends JSON).
        local = {"Origin": "http://localhost:8501"}
        assert httpx.post(faults, json={"clear": True}, headers=local, timeout=5).status_code == 200
        assert request_faults(emu.url, fault)["faults"]["stall"]["on"] and stall_on()
        request_faults(emu.url, {"clear": True})
        assert not stall_on()
        assert httpx.get(emu.url + "/api/version", headers={"Origin": "http://127.0.0.1:3000"}, timeout=5).status_code == 200


def test_loopback_origin() -> None:
    assert loopback_origin("http://localhost:8501") and loopback_origin("https://127.0.0.1") and loopback_origin("http://[::1]:80")
    assert not loopback_origin("http://evil.example") and not loopback_origin("null")
    assert not loopback_origin("file://") and not loopback_origin("http://127.0.0.1.evil.example")


# --- expires_at as Go writes it ---------------------------------------------------------------
# Ollama's /api/ps marshals a time.Time: RFC 3339 with Go's RFC3339Nano layout, trailing zeros of
# the fraction dropped (0 to 9 digits), "Z" for a zero offset, else ±hh:mm (half-hour zones too).
# Ollama sets expires_at to now + keep_alive (year ~2318 for keep_alive -1) and replaces the zero
# time by now + session duration, but an older build could still send 0001-01-01T00:00:00Z, which
# `ollama ps` shows as Stopping (it is in the past).
def _go_rfc3339(moment: datetime, offset_minutes: int, digits: int) -> str:
    from datetime import timedelta, timezone

    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    nanos = f"{local.microsecond:06d}789"[:digits].rstrip("0")  # µs plus fake ns, trimmed as Go does
    text += f".{nanos}" if nanos else ""
    if offset_minutes == 0:
        return text + "Z"
    sign, span = ("-", -offset_minutes) if offset_minutes < 0 else ("+", offset_minutes)
    return f"{text}{sign}{span // 60:02d}:{span % 60:02d}"


GO_FORMS = [  # (seconds ahead of now, UTC offset in minutes, fraction digits Go wrote, state)
    (300, 0, 0, "loaded"),  # 2026-12-04T15:04:05Z
    (300, 60, 9, "loaded"),  # ...05.123456789+01:00
    (300, -420, 5, "loaded"),  # ...05.12345-07:00 (Go drops trailing zeros)
    (300, 330, 3, "loaded"),  # +05:30
    (300, -570, 1, "loaded"),  # -09:30
    (-40, 0, 9, "stopping"),
    (-40, 345, 7, "stopping"),  # +05:45
    (9_000_000_000, 60, 9, "loaded"),  # keep_alive -1: year ~2312
]


def test_status_reads_expires_at_in_every_form_go_writes(
    junk: JunkOllama, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    now = datetime.now(UTC).replace(microsecond=123456)
    entries, expected = [], {}
    for i, (ahead_s, offset_minutes, digits, state) in enumerate(GO_FORMS):
        expires = now + timedelta(seconds=ahead_s)
        text = _go_rfc3339(expires, offset_minutes, digits)
        kept = min(digits, 6)  # the same instant in UTC, truncated to the digits Go wrote (ns dropped)
        micro = int(f"{expires.microsecond:06d}"[:kept].ljust(6, "0")) if kept else 0
        expected[f"m{i}:latest"] = (state, expires.replace(microsecond=micro), text)
        entries.append({"name": f"m{i}:latest", "model": f"m{i}:latest", "size": 100, "size_vram": 100, "expires_at": text})
    entries.append({"name": "zero:latest", "model": "zero:latest", "size": 100, "size_vram": 100,
                    "expires_at": "0001-01-01T00:00:00Z"})  # fmt: skip
    expected["zero:latest"] = ("stopping", datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z")
    junk.junk["/api/ps"] = (200, json.dumps({"models": entries}).encode())
    monkeypatch.setenv("OLLAMA_HOST", junk.url)
    code = cli_main(["status", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    seen = {m["name"]: (m["state"], datetime.fromisoformat(m["expires_at"])) for m in json.loads(captured.out)["models"]}
    assert set(seen) == set(expected)
    for name, (state, moment, text) in expected.items():
        assert seen[name] == (state, moment), text
