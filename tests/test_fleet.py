"""oasis_ops.fleet at its one seam (an httpx transport): a Prometheus that is down, refuses a
query, answers HTML or an endless body gives one FleetError line; its answers become rows."""

from __future__ import annotations

import json

import httpx
import pytest

from oasis_ops.fleet import (
    MAX_BODY_BYTES,
    FleetError,
    PrometheusClient,
    host_overview,
    host_series,
    small_multiples_spec,
)


def client(handler: object) -> PrometheusClient:
    return PrometheusClient("http://127.0.0.1:9090", timeout_s=2.0, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def vector(*pairs: tuple[str, str]) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"host": host}, "value": [1764936000.0, value]} for host, value in pairs]}}  # fmt: skip


def test_overview_rows_per_host_with_nan_as_unknown() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        if "histogram_quantile" in query:
            return httpx.Response(200, json=vector(("box-a", "4.2"), ("box-b", "NaN")))
        return httpx.Response(200, json=vector(("box-a", "1"), ("box-b", "0")))

    rows = host_overview(client(answer))
    assert [r.host for r in rows] == ["box-a", "box-b"]
    assert rows[0].figures["p95_s"] == 4.2 and rows[1].figures["p95_s"] is None and rows[1].figures["sampler_up"] == 0.0


def test_series_rows_and_their_grid() -> None:
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"host": "box-a"}, "values": [[1764936000, "1.5"], [1764936060, "+Inf"], [1764936120, "2"]]}]}}  # fmt: skip
    from datetime import UTC, datetime, timedelta

    end = datetime(2025, 12, 5, 12, tzinfo=UTC)
    rows = host_series(client(lambda r: httpx.Response(200, json=matrix)), end - timedelta(hours=1), end)
    assert {r["figure"] for r in rows} == {"p95 latency (s)", "failure rate", "available memory (GB)", "swap-outs per minute"}
    assert [r["value"] for r in rows if r["figure"] == "failure rate"] == [1.5, 2.0]  # +Inf left out
    spec = small_multiples_spec(rows)
    assert spec["facet"]["column"]["field"] == "host" and spec["data"]["values"] == rows


@pytest.mark.parametrize(("handler", "said"), [
    (lambda r: (_ for _ in ()).throw(httpx.ConnectError("[Errno 111] Connection refused", request=r)), "cannot reach Prometheus"),
    (lambda r: httpx.Response(400, json={"status": "error", "error": "parse error at char 3"}), "refused the query (400): parse error"),
    (lambda r: httpx.Response(200, content=b"<html>login</html>"), "not Prometheus' JSON"),
    (lambda r: httpx.Response(200, content=b"[" * (MAX_BODY_BYTES + 10)), "more than 8 MB; refused"),
    (lambda r: httpx.Response(200, json={"status": "success", "data": {}}), "without data.result"),
])  # fmt: skip
def test_every_failure_is_one_line(handler: object, said: str) -> None:
    with pytest.raises(FleetError) as failed:
        client(handler).query("up")
    assert said in str(failed.value) and "\n" not in str(failed.value)
    with pytest.raises(FleetError, match="not an http"):
        PrometheusClient("ftp://x")
    assert json.dumps(vector())  # the helper itself is well-formed
