"""The trial table's histogram and counters for the exporter, cached between scrapes.

One whole-table aggregate (sql/trials_exporter_histogram.sql) per `min_interval_s`: a Prometheus
scraping every 15 s reads the table at most that often, whatever its size (see `make bench` for
the cost at 10M trials). Counters are totals of the table as it is, so a trial table that is
replaced (a new run's file) shows as a counter reset, which PromQL's rate() handles.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oasis_ops.errors import OasisOpsError
from oasis_ops.settings import Settings

# Upper bounds of oasis_trial_latency_seconds, seconds: sub-second answers to the minute-scale
# timeouts evaluation harnesses use (60 s, 120 s, 300 s). The same bounds as the SQL's CASE.
LATENCY_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class TrialCounts:
    """Per (model, outcome): trials, latency bucket counts (not cumulative), latency sum (s)."""

    trials: dict[tuple[str, str], int] = field(default_factory=dict)
    buckets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    latency_sum_s: dict[tuple[str, str], float] = field(default_factory=dict)
    tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, "prompt" | "completion")
    error: str | None = None  # why the table could not be read (then everything is empty)


def counts_from_rows(rows: list[tuple[Any, ...]]) -> TrialCounts:
    out = TrialCounts()
    for model, outcome, bucket, trials, latency_ms_sum in rows:
        key = (str(model) if model is not None else "", str(outcome))
        out.trials[key] = out.trials.get(key, 0) + int(trials)
        if bucket is None:
            continue
        counts = out.buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS_S) + 1))
        counts[int(bucket)] += int(trials)
        if latency_ms_sum is not None and math.isfinite(float(latency_ms_sum)):
            out.latency_sum_s[key] = out.latency_sum_s.get(key, 0.0) + float(latency_ms_sum) / 1000.0
    return out


class TrialStats:
    """`counts()` -> TrialCounts of the trial DB, at most one read per `min_interval_s`."""

    def __init__(self, db: str | Path | None, settings: Settings, *, min_interval_s: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.db = Path(db).expanduser() if db else None
        self.settings = settings
        self.min_interval_s = min_interval_s
        self.monotonic = monotonic
        self._source: Any = None
        self._counts = TrialCounts(error="not read yet")
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def counts(self) -> TrialCounts:
        with self._lock:
            now = self.monotonic()
            if now - self._read_at >= self.min_interval_s:
                self._read_at = now
                self._counts = self._read()
            return self._counts

    def _read(self) -> TrialCounts:
        if self.db is None:
            return TrialCounts(error="no trial database configured")
        try:
            if self._source is None:
                from oasis_ops.trials import (
                    TrialSource,  # lazily: the exporter may run without a table yet
                )

                self._source = TrialSource(self.db, self.settings)
            self._source.refresh()
            counts = counts_from_rows(self._source.exporter_histogram())
            for model, prompt, completion in self._source.token_totals():
                for kind, value in (("prompt", prompt), ("completion", completion)):
                    if value is not None:
                        counts.tokens[(str(model) if model is not None else "", kind)] = int(value)
            return counts
        except OasisOpsError as exc:  # a missing, locked or foreign table: said on /metrics, never a crash
            self.close()
            return TrialCounts(error=str(exc).splitlines()[0][:200])

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
