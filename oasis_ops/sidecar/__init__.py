"""The telemetry sidecar (DESIGN.md Contract 2): `<trials stem>.ops.duckdb`, ours, public schema.

`Sidecar` writes and reads it in short opens (many of our processes share it), `BatchWriter`
batches the sampler's rows, `SamplerLock` keeps to one sampler per sidecar, and `schema`
applies the numbered migrations under `sql/migrations/`.
"""

from oasis_ops.sidecar.batch import BatchWriter
from oasis_ops.sidecar.lock import SamplerLock, sampler_lock_path
from oasis_ops.sidecar.schema import latest_version
from oasis_ops.sidecar.store import (
    INSERT_STATEMENTS,
    SamplerHeartbeat,
    Sidecar,
    heartbeat_row,
    make_sampler_id,
    prepare_rows,
    records,
    sidecar_path_for,
)

__all__ = [
    "INSERT_STATEMENTS",
    "BatchWriter",
    "SamplerHeartbeat",
    "SamplerLock",
    "Sidecar",
    "heartbeat_row",
    "latest_version",
    "make_sampler_id",
    "prepare_rows",
    "records",
    "sampler_lock_path",
    "sidecar_path_for",
]
