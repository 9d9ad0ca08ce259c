"""Machine output of a rollup (`oasis-ops timeline --format json|csv`, the Timeline page's CSV).

One record per bucket, keys OUTPUT_COLUMNS: the bucket's start as ISO 8601 UTC ('...Z'), counts,
the failure rate (None for an empty bucket), latencies to 0.01 ms (None where there is none).
Plain Python: the timeline command answers a narrow range without importing pandas
(TrialSource.rollup_records); rollup.machine_records formats a rollup frame with the same
functions, so both give the same bytes.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from typing import Any

from oasis_ops.trials.timeparse import from_epoch_us

OUTPUT_COLUMNS = ("minute", "trials", "ok", "timeouts", "errors", "failure_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")
LATENCY_COLUMNS = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
# Machine output (JSON, CSV) gives latencies to 0.01 ms: 47417.06, never 47417.064999999995.
LATENCY_DECIMALS = 2
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(value: datetime) -> str:
    """ISO 8601 UTC with a four-digit year also before 1000 (strftime's %Y is not padded there)."""
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}Z"


def latency_ms(value: Any) -> float | None:
    """A latency for machine output: rounded to 0.01 ms; None for NULL/NaN."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, LATENCY_DECIMALS)


def rate(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def failure_rate(trials: int, timeouts: int, errors: int) -> float | None:
    return (timeouts + errors) / trials if trials > 0 else None


def bucket_record(bucket_us: int, trials: int, ok: int, timeouts: int, errors: int, latencies: tuple[Any, ...]) -> dict[str, Any]:
    """One bucket's record from its aggregates (latencies: p50, p95, p99, max)."""
    return {
        "minute": stamp(from_epoch_us(bucket_us)),
        "trials": trials,
        "ok": ok,
        "timeouts": timeouts,
        "errors": errors,
        "failure_rate": failure_rate(trials, timeouts, errors),
        **{column: latency_ms(value) for column, value in zip(LATENCY_COLUMNS, latencies, strict=True)},
    }


def grid_records(aggregates: dict[int, tuple[Any, ...]], start_us: int, end_us: int, width_us: int) -> list[dict[str, Any]]:
    """Every bucket in [start_us, end_us), from {bucket_us: (trials, ok, timeouts, errors, p50,
    p95, p99, max)}; a bucket without trials has zero counts and None rates and latencies."""
    empty = (0, 0, 0, 0, None, None, None, None)
    out = []
    for bucket_us in range(start_us, end_us, width_us):
        trials, ok, timeouts, errors, *latencies = aggregates.get(bucket_us, empty)
        out.append(bucket_record(bucket_us, int(trials), int(ok), int(timeouts), int(errors), tuple(latencies)))
    return out


def records_csv(records: list[dict[str, Any]]) -> str:
    """Records as CSV (same columns; None as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=OUTPUT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return out.getvalue()
