"""Pins for the probes at their edges, written from the survivors of a 300-mutant sample of
`oasis_ops/probes` (2026-12-05): words of an error that must name its cause, a line that is
skipped without ending the read, the process the caller named rather than ourselves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from oasis_ops.errors import OllamaBadResponse, OllamaUnreachable
from oasis_ops.probes.flash import server_flash_attention
from oasis_ops.probes.linux import parse_meminfo
from oasis_ops.probes.llama_server import (
    LlamaServerProbe,
    RunnerReading,
    RunnerTracker,
    SlotState,
    parse_metrics,
)
from oasis_ops.probes.ollama import OllamaClient, model_status_from_ps
from oasis_ops.probes.processes import (
    ProcessRecord,
    PsutilProcesses,
    _is_ollama_like,
    own_lineage,
    serve_pid_for,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_meminfo_line_with_a_key_and_no_value_is_skipped_not_fatal() -> None:
    text = "MemTotal:       16303428 kB\nHugePages_Surp:\nno colon here\nMemFree:          839436 kB\n"
    assert parse_meminfo(text) == {"MemTotal": 16303428 * 1024, "MemFree": 839436 * 1024}


def test_metrics_read_on_past_a_bad_value_and_labels_holding_a_brace() -> None:
    text = ("llamacpp:odd notanumber\n"
            'llamacpp:requests_processing{note="a{b"} 2\n'
            "llamacpp:tokens_predicted_total 7\n")  # fmt: skip
    assert parse_metrics(text) == {"requests_processing": 2.0, "tokens_predicted_total": 7.0}


def _runner(handler: httpx.MockTransport) -> LlamaServerProbe:
    return LlamaServerProbe("http://127.0.0.1:1", transport=handler, timeout_s=2.0)


def test_the_runner_probe_reads_bad_utf8_and_quotes_a_plain_error_body() -> None:
    metrics = httpx.MockTransport(lambda request: httpx.Response(200, content=b"llamacpp:n_busy_slots_per_decode 1\n\xff\xfe junk\n"))
    assert _runner(metrics).metrics() == {"n_busy_slots_per_decode": 1.0}  # not a UnicodeDecodeError
    failing = httpx.MockTransport(lambda request: httpx.Response(500, content=b"slot manager exploded"))
    with pytest.raises(OllamaBadResponse) as said:
        _runner(failing).slots()
    assert str(said.value) == "GET http://127.0.0.1:1/slots -> HTTP 500: slot manager exploded"


def test_an_idle_slot_listed_first_does_not_hide_a_stalled_one_after_it() -> None:
    tracker = RunnerTracker(no_progress_s=30.0)

    def look(mono: float) -> RunnerReading:
        slots = (SlotState(0, False, id_task=1, n_decoded=5), SlotState(1, True, id_task=9, n_decoded=40))
        return RunnerReading("http://r", NOW, mono, True, slots=slots)

    tracker.update(look(100.0))
    signals = tracker.update(look(140.0))  # slot 1 busy, no token for 40 s
    assert [s.id for s in signals.stalled] == [1] and signals.stalled_for_s == pytest.approx(40.0)


def _ollama(handler: httpx.MockTransport) -> OllamaClient:
    return OllamaClient("http://127.0.0.1:11434", timeout_s=2.0, transport=handler)


def test_ollama_errors_name_their_cause() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(OllamaUnreachable) as down:
        _ollama(httpx.MockTransport(refuse)).version()
    assert str(down.value) == "cannot connect to Ollama at http://127.0.0.1:11434: [Errno 111] Connection refused"
    bad_request = httpx.MockTransport(lambda request: httpx.Response(400, json={"error": "model is required"}))
    with pytest.raises(OllamaBadResponse) as refused:
        _ollama(bad_request).version()
    assert str(refused.value) == "GET http://127.0.0.1:11434/api/version -> HTTP 400: model is required"
    html = httpx.MockTransport(lambda request: httpx.Response(200, content=b"<html><body>proxy login</body></html>"))
    with pytest.raises(OllamaBadResponse) as page:
        _ollama(html).version()
    assert "answered HTML:" in str(page.value)
    listing = httpx.MockTransport(lambda request: httpx.Response(200, json=["0.13.5"]))
    with pytest.raises(OllamaBadResponse) as shape:
        _ollama(listing).version()
    assert str(shape.value) == "/api/version answered without a version: '[\"0.13.5\"]'"


def test_an_unusable_expiry_is_quoted_in_at_most_60_characters() -> None:
    entry = {"name": "m:1", "model": "m:1", "size": 1, "size_vram": 1, "expires_at": "x" * 100}
    with pytest.raises(OllamaBadResponse) as said:
        model_status_from_ps(entry, NOW)
    assert str(said.value) == f"/api/ps: 'm:1': expires_at '{'x' * 60}...' is not a usable time"


def test_the_server_wide_flash_setting_without_an_environment_says_so_exactly() -> None:
    setting = server_flash_attention(None, version="0.13.5")
    assert setting.detail == ("OLLAMA_FLASH_ATTENTION not readable from the server's environment: Ollama 0.13.5 decides per "
                              "model (see each loaded model's answer)")  # fmt: skip


def test_process_names_lineage_and_the_serve_listening_on_the_port() -> None:
    assert _is_ollama_like((), "llama-server") and not _is_ollama_like((), "python3")  # a kernel-thread-like empty argv
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        records = {r.pid: r for r in PsutilProcesses(only_ollama=False)()}
        import psutil

        assert records[child.pid].name == psutil.Process(child.pid).name() != ""
        lineage = own_lineage(child.pid)
        assert child.pid in lineage and os.getpid() in lineage  # the child's, not ours alone
    finally:
        child.kill()
        child.wait()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        serve = ("ollama", "serve")
        gone = ProcessRecord(pid=child.pid, ppid=1, name="ollama", cmdline=serve, create_time=0.0)  # reaped above
        here = ProcessRecord(pid=os.getpid(), ppid=1, name="ollama", cmdline=serve, create_time=0.0)
        assert serve_pid_for(f"http://127.0.0.1:{port}", [gone, here]) == os.getpid()  # a vanished one is skipped
