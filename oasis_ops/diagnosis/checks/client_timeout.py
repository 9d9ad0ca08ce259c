"""`client_timeout_only`: the harness timed out while the server's own access log shows every
inference request of the window answered within the request timeout.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import Finding, Telemetry, WindowContext, _median
from oasis_ops.diagnosis.thresholds import DEFAULT_TIMEOUT_MS

NON_INFERENCE_PATHS = {"/", "/api/ps", "/api/version", "/api/show", "/api/tags", "/api/pull", "/api/push", "/api/delete", "/api/copy"}


def check_client_timeout(ctx: WindowContext) -> Finding | None:
    harness = Telemetry.between(ctx.telemetry.harness, ctx.start, ctx.end)
    timeouts = harness[harness["kind"] == "timeout"] if len(harness) else harness
    if len(timeouts) < 3:
        return None
    timeout_ms = _median(timeouts["latency_ms"]) or DEFAULT_TIMEOUT_MS
    requests = Telemetry.between(ctx.telemetry.requests, ctx.start, ctx.end + timedelta(minutes=1))
    if len(requests):
        requests = requests[~requests["path"].isin(NON_INFERENCE_PATHS)]
    if len(requests) < 3:
        return None
    latency = pd.to_numeric(requests["latency_ms"], errors="coerce")
    status = pd.to_numeric(requests["status"], errors="coerce")
    answered = (status >= 200) & (status < 300)
    if latency.max() >= timeout_ms or answered.mean() < 0.9:
        return None
    evidence = [
        f"harness: {len(timeouts)} trials timed out after {t.ms(timeout_ms)} in {t.span(ctx.start, ctx.end)} UTC (runner.log)",
        f"server: all {len(requests)} inference requests of the window answered within {t.ms(float(latency.max()))} "
        f"(Gin p95 {t.ms(float(latency.quantile(0.95)))}, {int(answered.sum())} with status 2xx)",
    ]
    return Finding(
        "client_timeout_only",
        "confirmed",
        0.9 if len(requests) >= len(timeouts) else 0.75,
        evidence,
        "The server is not the bottleneck: look at the client side (the harness's request timeout and retries, a "
        "proxy, an event loop blocked in the harness). Raise request_timeout_s only if calls are legitimately long.",
        {"harness_timeouts": len(timeouts), "timeout_ms": timeout_ms, "server_requests": len(requests),
         "server_latency_ms_max": float(latency.max()), "server_latency_ms_p95": float(latency.quantile(0.95))},  # fmt: skip
    )
