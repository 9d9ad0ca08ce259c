"""How long has a model really been Stopping?

/api/ps says Stopping from `expires_at`, and every new `keep_alive: 0` (a harness that evicts
after each run of timeouts) sets it to "now" again, so its own "Stopping for" keeps restarting
while the runner stays wedged. The episode is the run of consecutive Stopping observations of
the same runner (pid, create time); it starts at the earliest `stopping_since` seen in that run.
`StoppingEpisodes` tracks that from successive polls (the watchdog); `episode_start_from_sidecar`
rebuilds it from the sampler's model_samples (a CLI command or a page that just started).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from oasis_ops.errors import OasisOpsError
from oasis_ops.moments import as_utc_datetime
from oasis_ops.probes import ModelSnapshot
from oasis_ops.sidecar import Sidecar

LOOKBACK_S = 1800.0  # model_samples read back at most this far
FRESH_S = 30.0  # the newest sample must be this recent to say anything about "now"
MAX_EPISODES = 256


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def episode_start_from_sidecar(
    sidecar: Sidecar | None, model: str, now: datetime | None = None, runner_pid: int | None = None
) -> datetime | None:
    """Start of the current Stopping episode of `model` from the sampler's samples, or None
    (no sidecar, no recent samples, or the newest sample is not Stopping)."""
    if sidecar is None:
        return None
    now = now or datetime.now(UTC)
    try:
        frame = sidecar.model_samples_since(now - timedelta(seconds=LOOKBACK_S), max_rows=20_000)
    except OasisOpsError:
        return None
    if frame.empty:
        return None
    rows = frame[frame["model"] == model]
    if rows.empty:
        return None
    newest = rows.iloc[-1]
    newest_ts = as_utc_datetime(newest["ts"])
    if newest["state"] != "stopping" or newest_ts is None or (now - newest_ts).total_seconds() > FRESH_S:
        return None
    pid = _num(newest.get("runner_pid"))
    if runner_pid is not None and pid is not None and int(pid) != runner_pid:
        return None
    start = newest_ts
    for _, row in rows.iloc[::-1].iterrows():
        row_pid = _num(row.get("runner_pid"))
        if row["state"] != "stopping" or (pid is not None and row_pid is not None and row_pid != pid):
            break
        for candidate in (as_utc_datetime(row.get("stopping_since")), as_utc_datetime(row.get("expires_at")), as_utc_datetime(row["ts"])):
            if candidate is not None and candidate < start:
                start = candidate
    return start


class StoppingEpisodes:
    """Episode starts per (model, runner pid, runner create time), fed one poll at a time."""

    def __init__(self) -> None:
        self.starts: dict[tuple[str, int | None, float | None], datetime] = {}

    @staticmethod
    def key(snapshot: ModelSnapshot) -> tuple[str, int | None, float | None]:
        create = round(snapshot.runner_create_time, 2) if snapshot.runner_create_time is not None else None
        return (snapshot.model, snapshot.runner_pid, create)

    def update(self, snapshots: Iterable[ModelSnapshot], sidecar: Sidecar | None = None) -> None:
        current = {}
        for snap in snapshots:
            since = snap.status.stopping_since
            if snap.state != "stopping" or since is None:
                continue
            key = self.key(snap)
            start = self.starts.get(key)
            if start is None:  # first sight (or a restart): the sampler may know better
                start = episode_start_from_sidecar(sidecar, snap.model, snap.ts, snap.runner_pid) or since
            current[key] = min(start, since)
        self.starts = dict(list(current.items())[:MAX_EPISODES])  # models no longer Stopping end

    def start(self, snapshot: ModelSnapshot) -> datetime | None:
        return self.starts.get(self.key(snapshot))
