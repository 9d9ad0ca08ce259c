"""Retention: the sidecar stays bounded however long the console runs.

The sampler writes a host sample a second, a model sample per loaded model a second and a runner
reading every few seconds: ~100k rows a day per table. Samples older than `retain_full_h` hours
are thinned to one per minute (per model; for host memory, the minute's least free memory), and
samples older than `retain_days` days are deleted. Events (state changes), actions (the audit
log) and ingested logs are never thinned. Run by the sampler once an hour (and when it starts);
DuckDB reuses the freed blocks, so the file stops growing once the oldest samples go.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from oasis_ops.sqlfiles import sql

if TYPE_CHECKING:
    from oasis_ops.sidecar.store import Sidecar

TABLES = ("host_samples", "model_samples", "runner_samples", "gpu_samples")
EVERY_S = 3600.0  # how often the sampler applies it


def apply_retention(sidecar: Sidecar, now: datetime, *, full_h: float, keep_days: float) -> dict[str, int]:
    """Thin and delete old samples; rows removed per table."""
    params = {"thin_before": now - timedelta(hours=full_h), "drop_before": now - timedelta(days=keep_days)}
    removed: dict[str, int] = {}
    with sidecar._connection(read_only=False) as con:  # the package's own writer connection
        for table in TABLES:
            (count,) = con.execute(sql(f"sidecar_retain_{table}"), params).fetchall()[0]  # DELETE answers its row count
            removed[table] = int(count)
    return removed
