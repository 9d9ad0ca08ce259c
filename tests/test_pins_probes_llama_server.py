"""Pins for the llama-server /slots and /metrics parsers at their edges (written from the probes
mutation run's survivors): limits, shapes of older builds, refusals and their words."""

from __future__ import annotations

import pytest

from oasis_ops.errors import OllamaBadResponse
from oasis_ops.probes.llama_server import (
    MAX_METRICS,
    MAX_SLOTS,
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
