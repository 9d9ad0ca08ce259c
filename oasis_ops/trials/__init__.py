"""Reading a live trial database (Contract 1) without ever costing the runner a trial.

`TrialSource` reads lock-free snapshots of the trial DB (a validated copy of the file and its
WAL), maps the user's columns from settings, and serves per-bucket rollups from a bounded,
incrementally refreshed cache.
"""

from oasis_ops.trials.mapping import TrialMapping
from oasis_ops.trials.snapshot import Freshness
from oasis_ops.trials.source import TrialSource
from oasis_ops.trials.timeparse import auto_bucket, bucket_seconds, parse_duration, parse_time

__all__ = [
    "Freshness",
    "TrialMapping",
    "TrialSource",
    "auto_bucket",
    "bucket_seconds",
    "parse_duration",
    "parse_time",
]
