"""Which source a page shows: a live run, a finished run, or a replay (and what may act on it).

The Live page shows one trial database with its sidecar. Whether that is a run in progress decides
what the page may say and offer: the recovery actions act on the Ollama this console reaches *now*,
so they belong next to a live run's state; a finished run's last model state is history, shown as
of its last sample; and "start the sampler" on a finished run would write today's telemetry into
its sidecar. `classify()` decides from evidence only (the sidecar's heartbeat, the trial database's
freshness, the host the telemetry was recorded on), so a stalled run (no trial for minutes while
its sampler still ticks) stays live: that is the incident the actions are for.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime

from oasis_ops.fmt import fmt_duration
from oasis_ops.sidecar import SamplerHeartbeat

LIVE = "live"
FINISHED = "finished"
REPLAY = "replay"
NEW = "new"  # no trial and no telemetry yet: a run about to start


@dataclass(frozen=True)
class RunSource:
    kind: str  # live | finished | replay | new
    label: str  # what the page says it shows, e.g. "Live run" or "Finished run (recorded on eval-mbp.local)"
    detail: str  # why, in one sentence
    as_of: datetime | None  # a finished run / replay: its last telemetry or trial; None while live
    actions_apply: bool  # the recovery actions act on what is shown
    sampler_advice: bool  # "start the sampler" is good advice for it

    @property
    def historical(self) -> bool:
        return self.as_of is not None


def classify(
    *,
    now: datetime,
    heartbeat: SamplerHeartbeat | None,
    db_exists: bool,
    trials_live: bool,
    newest_trial_at: datetime | None,
    replay: bool = False,
    this_host: str | None = None,
) -> RunSource:
    """The source a trial database and its sidecar are, at `now`.

    `trials_live`: the trial database was written lately (oasis_ops.trials: its mtime within a
    minute). `replay`: the database is a replay (the demo's recorded incident). `this_host`: the
    host name the sampler writes (default: this machine's).
    """
    host = this_host if this_host is not None else socket.gethostname()
    recorded_on = heartbeat.host if heartbeat is not None else None
    elsewhere = recorded_on is not None and recorded_on != host
    ends = [t for t in (heartbeat.last_tick_at if heartbeat else None, newest_trial_at) if t is not None]
    last = max(ends) if ends else None
    ago = f", {fmt_duration((now - last).total_seconds())} ago" if last is not None and now >= last else ""
    if replay:
        where = f" on {recorded_on}" if recorded_on else ""
        return RunSource(REPLAY, f"Replay (recorded{where})",
                         f"A recorded run, not this machine's Ollama: its state is as of its last sample{ago}.",
                         last or now, actions_apply=False, sampler_advice=False)  # fmt: skip
    if heartbeat is not None and heartbeat.running:
        if elsewhere:
            return RunSource(LIVE, f"Live run on {recorded_on}",
                             f"Its sampler runs on {recorded_on}; the recovery actions here act on this machine's Ollama.",
                             None, actions_apply=False, sampler_advice=False)  # fmt: skip
        stale = ""
        if newest_trial_at is not None and not trials_live:
            stale = f"; no trial for {fmt_duration((now - newest_trial_at).total_seconds())}"
        return RunSource(LIVE, "Live run", f"Its sampler is running (pid {heartbeat.pid}){stale}.", None,
                         actions_apply=True, sampler_advice=False)  # fmt: skip
    if trials_live:
        return RunSource(LIVE, "Live run", "Trials are being written; no sampler is recording its telemetry.", None,
                         actions_apply=not elsewhere, sampler_advice=not elsewhere)  # fmt: skip
    if not db_exists and heartbeat is None:
        return RunSource(NEW, "Live run (no trial yet)", "No trial and no telemetry yet.", None,
                         actions_apply=True, sampler_advice=True)  # fmt: skip
    where = f" (recorded on {recorded_on})" if elsewhere else ""
    why = "no trial written in the last minute and no sampler running" if last is not None else "nothing recorded"
    return RunSource(FINISHED, f"Finished run{where}", f"Shown as it last was{ago}: {why}.", last or now,
                     actions_apply=False, sampler_advice=False)  # fmt: skip
