"""Pins for the llama-server /slots and /metrics parsers at their edges (written from the probes
mutation run's survivors): limits, shapes of older builds, refusals and their words."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oasis_ops.errors import OllamaBadResponse
from oasis_ops.probes.llama_server import (
    MAX_METRICS,
    MAX_SLOTS,
    RunnerReading,
    SlotState,
    parse_metrics,
    parse_slots,
)


def test_slots_shapes_defaults_and_limits() -> None:
    slots = parse_slots([
        {"id": 7, "is_processing": True, "id_task": 3, "n_ctx": 4096, "n_prompt_tokens": 108, "n_prompt_tokens_processed": 64,
         "next_token": [{"n_decoded": 12, "n_remain": 88}]},
        {"state": 0, "n_decoded": 5, "n_remain": 2, "next_token": {"has_next_token": False}},  # older build, no id
        {"state": 1, "next_token": {"n_decoded": 9, "n_remain": -1}},
    ])  # fmt: skip
    assert slots[0] == SlotState(id=7, is_processing=True, n_ctx=4096, id_task=3, n_prompt_tokens=108,
                                 n_prompt_tokens_processed=64, n_decoded=12, n_remain=88)  # fmt: skip
    assert (slots[1].id, slots[1].is_processing, slots[1].n_decoded, slots[1].n_remain) == (1, False, 5, 2)  # its index
    assert (slots[2].id, slots[2].is_processing, slots[2].n_decoded, slots[2].n_remain) == (2, True, 9, -1)
    assert slots[0].as_dict() == {"id": 7, "busy": True, "id_task": 3, "n_ctx": 4096, "n_prompt_tokens": 108,
                                  "n_decoded": 12, "n_remain": 88}  # fmt: skip
    assert len(parse_slots([{"id": i, "is_processing": False} for i in range(MAX_SLOTS)])) == MAX_SLOTS  # at the limit
    refusals = [
        ({"slots": []}, "/slots answered dict, expected a list of slots"),
        ([{"is_processing": False}] * (MAX_SLOTS + 1), f"/slots answered {MAX_SLOTS + 1} slots (more than {MAX_SLOTS})"),
        ([{"is_processing": False}, "busy"], "/slots: slot 1 is str, expected an object"),
        ([{"id": 0}], "/slots: slot 0 says neither is_processing nor state"),
    ]
    for payload, said in refusals:
        with pytest.raises(OllamaBadResponse) as refused:
            parse_slots(payload)
        assert str(refused.value) == said


def test_metrics_first_sample_labels_and_refusals() -> None:
    text = ("# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n"
            "llamacpp:tokens_predicted_total 1090\n"
            'llamacpp:requests_processing{slot="0"} 1 1700000000\n'
            "llamacpp:tokens_predicted_total 5\n"  # a second sample of a name: the first is kept
            "llamacpp:kv_cache_usage_ratio NaN\n"
            "llamacpp:n_busy_slots_per_decode +Inf\n"
            "llamacpp:broken\n"
            "llamacpp:odd notanumber\n"
            "other_metric 3\n")  # fmt: skip
    assert parse_metrics(text) == {"tokens_predicted_total": 1090.0, "requests_processing": 1.0}
    assert parse_metrics("") == {} and parse_metrics("# only comments\n") == {}
    with pytest.raises(OllamaBadResponse) as junk:
        parse_metrics("<html>not metrics</html>")
    assert str(junk.value) == "/metrics answered something that is not Prometheus text: <html>not metrics</html>"
    at_limit = "".join(f"llamacpp:m{i} 1\n" for i in range(MAX_METRICS))
    assert len(parse_metrics(at_limit)) == MAX_METRICS
    with pytest.raises(OllamaBadResponse) as many:
        parse_metrics(at_limit + "llamacpp:one_more 1\n")
    assert str(many.value) == f"/metrics answered more than {MAX_METRICS} llamacpp metrics"


def _look(mono: float, *slots: SlotState, total: float | None = None, reachable: bool = True) -> RunnerReading:
    return RunnerReading(url="http://127.0.0.1:1", ts=datetime(2025, 11, 20, tzinfo=UTC), mono=mono, reachable=reachable,
                         slots=slots if reachable and slots else None,
                         metrics={"tokens_predicted_total": total} if total is not None else None)  # fmt: skip


def _slot(slot_id: int, busy: bool, task: int, decoded: int, prompt_done: int = 0) -> SlotState:
    return SlotState(id=slot_id, is_processing=busy, n_ctx=2048, id_task=task, n_prompt_tokens=10,
                     n_prompt_tokens_processed=prompt_done, n_decoded=decoded, n_remain=None)  # fmt: skip


def test_the_tracker_at_its_edges() -> None:
    from oasis_ops.probes.llama_server import RunnerTracker, StalledSlot

    tracker = RunnerTracker(no_progress_s=10)
    silent = _look(1.0, reachable=False)
    assert tracker.update(silent).reading is silent
    metrics_only = _look(2.0, total=100.0)
    first = tracker.update(metrics_only)
    assert first.reading is metrics_only and first.tokens_per_s is None and first.rate_source is None
    same_total = tracker.update(_look(4.0, total=100.0))
    assert (same_total.tokens_per_s, same_total.rate_source) == (0.0, "metrics")  # no tokens: a rate of 0, not a reset
    assert tracker.update(_look(4.0, total=110.0)).tokens_per_s is None  # no time passed: no rate
    assert tracker.update(_look(6.0, total=50.0)).tokens_per_s is None  # a counter reset (a new runner process)

    slots = RunnerTracker(no_progress_s=10)
    slots.update(_look(0.0, _slot(0, True, 3, 5), _slot(1, False, 1, 0)))
    later = slots.update(_look(10.0, _slot(0, True, 3, 5), _slot(1, True, 2, 4)))  # slot 1 took a new task, 4 tokens
    assert later.tokens_per_s == 0.4 and later.rate_source == "slots"
    assert later.stalled == (StalledSlot(0, 3, 5, 10.0),)  # exactly no_progress_s without progress: stalled
    assert dict(later.slot_ages) == {0: 10.0, 1: 0.0} and later.stalled_for_s == 10.0 and not later.moved
    assert slots.update(_look(10.0, _slot(0, True, 3, 6))).tokens_per_s is None  # the same moment: no rate
    idle_new = RunnerTracker(no_progress_s=10)
    idle_new.update(_look(0.0, _slot(0, False, 1, 0)))
    assert idle_new.update(_look(1.0, _slot(0, False, 2, 7))).tokens_per_s == 0.0  # an idle slot's new task id: no tokens
    assert not idle_new.update(_look(2.0, _slot(0, False, 2, 7))).slot_ages  # idle slots have no age


def _probe(handler: object, **kwargs: object) -> object:
    import httpx

    from oasis_ops.probes.llama_server import LlamaServerProbe

    return LlamaServerProbe("http://127.0.0.1:1/", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def test_the_runner_probe_says_what_went_wrong_in_one_line() -> None:
    import httpx

    from oasis_ops.errors import ConfigError
    from oasis_ops.probes.llama_server import LlamaServerProbe

    timeouts: list[float] = []

    def body_of(size: int, declared: bool) -> object:
        def handler(request: httpx.Request) -> httpx.Response:
            timeouts.append(request.extensions["timeout"]["read"])
            if request.url.path == "/metrics":
                return httpx.Response(501, json={"error": {"message": "off"}})
            body = b"[" + b" " * (size - 2) + b"]"
            headers = {"content-length": str(size)} if declared else {}
            return httpx.Response(200, content=body if declared else iter([body]), headers=headers)
        return handler

    with _probe(body_of(64, True), max_body_bytes=64, timeout_s=1.5) as probe:  # type: ignore[attr-defined]
        reading = probe.read()
        assert probe.base_url == "http://127.0.0.1:1" and reading.url == "http://127.0.0.1:1"  # the slash dropped
        assert reading.slots == () and reading.error is None and reading.metrics_enabled is False  # exactly the limit: read
        assert 0 < timeouts[0] <= 1.5  # the time left, not a fresh timeout per request
    for declared in (True, False):
        with _probe(body_of(65, declared), max_body_bytes=64) as probe:  # type: ignore[attr-defined]
            said = probe.read().error
        assert said == ("GET http://127.0.0.1:1/slots answered 65 bytes (more than 64 bytes); refused" if declared
                        else "GET http://127.0.0.1:1/slots answered more than 64 bytes; refused")  # fmt: skip

    def failing(exc: Exception) -> object:
        def handler(request: httpx.Request) -> httpx.Response:
            raise exc
        return handler

    cases = [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect to the runner at http://127.0.0.1:1: [Errno 111] Connection refused"),
        (httpx.ConnectError(""), "cannot connect to the runner at http://127.0.0.1:1: refused"),
        (httpx.ReadError(""), "runner connection failed on GET http://127.0.0.1:1/slots: ReadError"),
        (httpx.ReadError("reset by peer"), "runner connection failed on GET http://127.0.0.1:1/slots: reset by peer"),
        (httpx.UnsupportedProtocol(""), "GET http://127.0.0.1:1/slots failed: UnsupportedProtocol"),
        (httpx.ReadTimeout("slow"), "runner did not answer GET http://127.0.0.1:1/slots within 1 s"),
    ]  # fmt: skip
    for exc, said in cases:
        with _probe(failing(exc), timeout_s=1.0) as probe:  # type: ignore[attr-defined]
            reading = probe.read()
        assert (reading.reachable, reading.error) == (False, said), said

    def latin1(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content="{\"error\": {\"message\": \"caf\u00e9\"}}".encode("latin-1"),
                              headers={"content-type": "application/json; charset=latin-1"})  # fmt: skip

    with _probe(latin1) as probe:  # type: ignore[attr-defined]
        assert probe.read().error == "GET http://127.0.0.1:1/slots -> HTTP 500: caf\u00e9"
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="the runner read timeout must be positive"):
            LlamaServerProbe("http://127.0.0.1:1", timeout_s=bad)


def test_a_reading_carries_its_time_errors_and_the_runners_own_words() -> None:
    import httpx

    ticks = iter([100.0, 100.25, 100.5, 100.75, 101.0, 101.25])
    when = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)

    def answers(slots: httpx.Response, metrics: httpx.Response) -> object:
        def handler(request: httpx.Request) -> httpx.Response:
            return slots if request.url.path == "/slots" else metrics
        return handler

    html = httpx.Response(200, text="  <HTML><body>proxy error</body></html>")
    broken_metrics = httpx.Response(500, text="{\"error\": \"metrics broke\"}")
    with _probe(answers(html, broken_metrics), timeout_s=2.0, clock=lambda: when, monotonic=lambda: next(ticks)) as probe:  # type: ignore[attr-defined]
        reading = probe.read()
    assert (reading.ts, reading.mono, reading.timeout_s, reading.reachable, reading.slots) == (when, 100.0, 2.0, True, None)
    assert reading.error == "GET http://127.0.0.1:1/slots answered HTML: <HTML><body>proxy error</body></html>"
    assert reading.metrics_error == "GET http://127.0.0.1:1/metrics -> HTTP 500: metrics broke" and reading.metrics is None
    assert reading.elapsed_s > 0 and reading.slots_enabled is None and reading.metrics_enabled is None
    off = httpx.Response(501, json={"error": {"code": 501, "message": "This server does not support slots endpoint."}})
    with _probe(answers(off, httpx.Response(200, text="llamacpp:x 1\n"))) as probe:  # type: ignore[attr-defined]
        first = probe.read()
        assert (first.slots_enabled, first.metrics_enabled, first.metrics) == (False, True, {"x": 1.0})
        assert first.error == "GET http://127.0.0.1:1/slots is not enabled on this runner: This server does not support slots endpoint."
    with _probe(answers(httpx.Response(200, text="not json"), httpx.Response(200, text=""))) as probe:  # type: ignore[attr-defined]
        assert probe.read().error == "GET http://127.0.0.1:1/slots answered non-JSON: not json"
    with _probe(answers(httpx.Response(200, json={"a": 1}), httpx.Response(200, text=""))) as probe:  # type: ignore[attr-defined]
        assert probe.read().error == "GET http://127.0.0.1:1/slots answered dict, expected a list of slots"
    from oasis_ops.probes.llama_server import _error_message

    assert _error_message('{"error": {"message": 5}}') == '{"error": {"message": 5}}'
    assert _error_message('["x"]') == '["x"]' and _error_message('{"error": "plain"}') == "plain"
