"""The llama-server probe (oasis_ops.probes.llama_server) against real HTTP servers on loopback
serving recorded llama-server answers, and against servers that misbehave: 501, silence, a
trickle, oversized bodies, junk. Then RunnerTracker: tokens/s and slots without progress."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from helpers_probes import closed_port
from helpers_runner_signals import (
    METRICS_501,
    FakeLlamaServer,
    HugeServer,
    SilentServer,
    TrickleServer,
    fixture,
    metrics_with,
    slots_with,
)

from oasis_ops.errors import ConfigError, OllamaBadResponse, OllamaUnreachable
from oasis_ops.probes.llama_server import (
    EndpointNotEnabled,
    LlamaServerProbe,
    RunnerReading,
    RunnerTracker,
    SlotState,
    parse_metrics,
    parse_slots,
)

METRICS_OK = (200, fixture("metrics.txt"), "text/plain; version=0.0.4")


def test_recorded_slots_and_metrics_are_read() -> None:
    with FakeLlamaServer({"/slots": (200, fixture("slots_busy.json"), "application/json"), "/metrics": METRICS_OK}) as server, \
            LlamaServerProbe(server.url) as probe:  # fmt: skip
        reading = probe.read()
    assert reading.reachable and reading.error is None and reading.metrics_error is None
    assert (reading.slots_total, reading.slots_busy, reading.tokens_in_flight) == (2, 1, 104)
    slot = reading.slots[0] if reading.slots else None
    assert slot == SlotState(id=0, is_processing=True, n_ctx=2048, id_task=3, n_prompt_tokens=slot.n_prompt_tokens if slot else None,
                             n_prompt_tokens_processed=slot.n_prompt_tokens_processed if slot else None, n_decoded=104, n_remain=196)  # fmt: skip
    assert reading.metrics_enabled is True
    assert reading.metric("requests_processing") == 1 and reading.metric("requests_deferred") == 0
    assert reading.metric("tokens_predicted_total") == 30 and reading.metric("n_decode_total") == 107
    assert reading.metric("predicted_tokens_seconds") == pytest.approx(70.1198)
    assert reading.elapsed_s < 1.0


def test_metrics_501_is_not_enabled_not_an_error_and_is_asked_once() -> None:
    with FakeLlamaServer({"/slots": (200, fixture("slots_idle.json"), "application/json"), "/metrics": METRICS_501}) as server, \
            LlamaServerProbe(server.url) as probe:  # fmt: skip
        first = probe.read()
        second = probe.read()
        with pytest.raises(EndpointNotEnabled, match="not enabled.*--metrics"):
            probe.metrics()
        assert server.hits == {"/slots": 2, "/metrics": 2}  # read() asked once; metrics() above once more
    for reading in (first, second):
        assert reading.reachable and reading.error is None and reading.metrics_error is None
        assert reading.metrics is None and reading.metrics_enabled is False
        assert (reading.slots_total, reading.slots_busy, reading.tokens_in_flight) == (2, 0, 0)


@pytest.mark.parametrize("accept", [True, False], ids=["accepts", "backlog-only"])
def test_a_runner_that_never_answers_is_bounded_by_the_total_timeout(accept: bool) -> None:
    with SilentServer(accept=accept) as server, LlamaServerProbe(server.url, timeout_s=0.5) as probe:
        started = time.monotonic()
        reading = probe.read()
        took = time.monotonic() - started
        with pytest.raises(OllamaUnreachable, match="did not answer"):
            probe.slots()
    assert not reading.reachable and reading.slots is None and reading.metrics is None
    assert "did not answer GET" in (reading.error or "") and "/slots within 0.5 s" in (reading.error or "")
    assert 0.45 <= took < 0.9, took


def test_the_timeout_is_total_not_per_read() -> None:
    """Every read gets a byte within 0.05 s, so a per-read timeout would never fire."""
    with TrickleServer(gap_s=0.05, length=1000) as server, LlamaServerProbe(server.url, timeout_s=0.5) as probe:
        started = time.monotonic()
        reading = probe.read()
        took = time.monotonic() - started
    assert not reading.reachable and "0.5 s" in (reading.error or "")
    assert took < 0.8, took


def test_a_mock_transport_can_stand_in_for_the_runner() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slots":
            return httpx.Response(200, content=slots_with(7))
        return httpx.Response(200, content=metrics_with(1234), headers={"content-type": "text/plain"})

    with LlamaServerProbe("http://127.0.0.1:1", transport=httpx.MockTransport(handler)) as probe:
        reading = probe.read()
    assert reading.tokens_in_flight == 7 and reading.metric("tokens_predicted_total") == 1234


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_oversized_bodies_are_refused(declare: bool) -> None:
    with HugeServer(size=3 << 20, declare=declare) as server, LlamaServerProbe(server.url, timeout_s=2.0) as probe:
        reading = probe.read()
        with pytest.raises(OllamaBadResponse, match="more than 1,048,576 bytes"):
            probe.slots()
    assert reading.reachable and reading.slots is None
    assert "refused" in (reading.error or "") and "1,048,576" in (reading.error or "")


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"<!DOCTYPE html><html>login</html>", 200, "answered HTML"),
        (b'{"slots": []}', 200, "expected a list of slots"),
        (b'[{"id": 0}]', 200, "neither is_processing nor state"),
        (b'{"error":{"code":500,"message":"boom"}}', 500, "HTTP 500: boom"),
        (b"[" * 100_000, 200, "non-JSON"),
    ],
    ids=["html", "object", "no-state", "http-500", "deep"],
)
def test_junk_answers_are_reachable_but_unusable(body: bytes, status: int, expected: str) -> None:
    with FakeLlamaServer({"/slots": (status, body, "application/json"), "/metrics": METRICS_501}) as server, \
            LlamaServerProbe(server.url) as probe:  # fmt: skip
        reading = probe.read()
    assert reading.reachable and reading.slots is None and expected in (reading.error or "")


def test_slots_not_enabled_and_a_closed_port() -> None:
    off = (501, b'{"error":{"code":501,"message":"This server does not support slots endpoint.","type":"not_supported_error"}}',
           "application/json")  # fmt: skip
    with FakeLlamaServer({"/slots": off, "/metrics": METRICS_OK}) as server, LlamaServerProbe(server.url) as probe:
        reading = probe.read()
    assert reading.reachable and reading.slots_enabled is False and "not enabled" in (reading.error or "")
    assert reading.metric("requests_processing") == 1  # /metrics still read
    with LlamaServerProbe(f"http://127.0.0.1:{closed_port()}") as probe:
        gone = probe.read()
    assert not gone.reachable and "cannot connect" in (gone.error or "")
    with pytest.raises(ConfigError):
        LlamaServerProbe("http://127.0.0.1:1", timeout_s=0)


def test_parsers_accept_older_shapes_and_refuse_junk() -> None:
    old = [{"id": 0, "state": 1, "id_task": 5, "n_ctx": 512, "next_token": {"n_decoded": 9, "n_remain": 3}},
           {"id": 1, "state": 0, "n_decoded": 0}]  # fmt: skip
    slots = parse_slots(old)
    assert [(s.id, s.is_processing, s.n_decoded, s.n_remain) for s in slots] == [(0, True, 9, 3), (1, False, 0, None)]
    assert parse_slots(json.loads(fixture("slots_busy.json")))[1].n_decoded == 0
    with pytest.raises(OllamaBadResponse, match="more than 1024"):
        parse_slots([{"id": i, "is_processing": False} for i in range(1025)])
    assert parse_metrics('llamacpp:requests_processing{slot="0"} 2\nllamacpp:x NaN\nother_metric 5\n') == {"requests_processing": 2.0}
    with pytest.raises(OllamaBadResponse, match="not Prometheus"):
        parse_metrics("<html>hello</html>")


# --- RunnerTracker ---------------------------------------------------------------------------------
def reading(mono: float, slots: bytes | None = None, total: float | None = None, reachable: bool = True) -> RunnerReading:
    parsed = parse_slots(json.loads(slots)) if slots is not None else None
    return RunnerReading(url="http://127.0.0.1:1", ts=datetime(2025, 11, 20, tzinfo=UTC), mono=mono, reachable=reachable,
                         error=None if reachable else "runner did not answer GET /slots within 1 s", slots=parsed,
                         metrics={"tokens_predicted_total": total} if total is not None else None)  # fmt: skip


def test_tokens_per_second_from_counters_else_from_n_decoded() -> None:
    tracker = RunnerTracker(no_progress_s=30)
    first = tracker.update(reading(100.0, slots_with(100), total=1000))
    assert first.tokens_per_s is None  # nothing to compare with yet
    second = tracker.update(reading(102.0, slots_with(140), total=1090))
    assert (second.tokens_per_s, second.rate_source) == (45.0, "metrics")

    # llama.cpp adds a request's tokens to the counter when the request ends: between two close
    # reads within one long request the counter stands still while the slot decodes.
    mid_request = tracker.update(reading(104.0, slots_with(180), total=1090))
    assert (mid_request.tokens_per_s, mid_request.rate_source) == (20.0, "slots")
    ended = tracker.update(reading(106.0, slots_with(0, busy=False), total=1400))
    assert (ended.tokens_per_s, ended.rate_source) == (155.0, "metrics")  # the whole request counted at its end

    slots_only = RunnerTracker(no_progress_s=30)
    slots_only.update(reading(100.0, slots_with(100)))
    rate = slots_only.update(reading(102.0, slots_with(160)))
    assert (rate.tokens_per_s, rate.rate_source) == (30.0, "slots")
    new_task = slots_only.update(reading(104.0, slots_with(10, task=4)))
    assert new_task.tokens_per_s == 5.0  # the new task's 10 tokens over 2 s (the old one's tail is not seen)
    idle = slots_only.update(reading(106.0, slots_with(0, busy=False, task=4)))
    assert idle.tokens_per_s == 0.0 and idle.stalled_for_s is None


def test_a_busy_slot_without_progress_is_stalled_after_the_threshold() -> None:
    tracker = RunnerTracker(no_progress_s=30)
    frozen = slots_with(104)
    first = tracker.update(reading(0.0, frozen))
    assert first.stalled_for_s == 0.0 and not first.moved  # nothing to compare with
    at_20 = tracker.update(reading(20.0, frozen))
    assert at_20.stalled_for_s == 20.0 and not at_20.no_progress and at_20.tokens_per_s == 0.0 and not at_20.moved
    # Not answering in between: the slot's clock keeps running.
    silent = tracker.update(reading(26.0, reachable=False))
    assert silent.not_answering_for_s == 0.0 and silent.stalled_for_s is None
    assert tracker.update(reading(28.0, reachable=False)).not_answering_for_s == 2.0
    at_45 = tracker.update(reading(45.0, frozen))
    assert at_45.no_progress and at_45.not_answering_for_s is None
    assert [(s.id, s.id_task, s.n_decoded, s.no_progress_s) for s in at_45.stalled] == [(0, 3, 104, 45.0)]
    moved = tracker.update(reading(47.0, slots_with(105)))
    assert not moved.no_progress and moved.stalled_for_s == 0.0 and moved.tokens_per_s == pytest.approx(1 / 2)
    assert moved.moved
    later = RunnerTracker(no_progress_s=30)  # first met 10 s into its clock: stalled counts from then
    later.update(reading(10.0, frozen))
    assert [s.no_progress_s for s in later.update(reading(50.0, frozen)).stalled] == [40.0]


def test_a_prompt_batch_is_the_slot_moving_on_with_no_token_decoded() -> None:
    tracker = RunnerTracker(no_progress_s=30)
    tracker.update(reading(0.0, slots_with(0)))
    prompt = json.loads(slots_with(0))
    prompt[0]["n_prompt_tokens_processed"] = 64  # a prompt batch done, no token yet (a starved runner)
    batch = tracker.update(reading(0.5, json.dumps(prompt).encode()))
    assert batch.tokens_per_s == 0.0 and batch.moved and batch.stalled_for_s == 0.0
    assert not tracker.update(reading(1.0, json.dumps(prompt).encode())).moved
    taken = tracker.update(reading(1.5, slots_with(0, task=4)))  # a new request taken, nothing done with it yet
    assert not taken.moved and taken.tokens_per_s == 0.0
