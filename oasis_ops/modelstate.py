"""A model's state from evidence, not from Ollama's word alone.

Ollama's `/api/ps` (and `ollama ps`) says "Stopping" exactly when `expires_at` is in the past.
That has three causes (server/sched.go): an unload was requested (keep_alive 0, `ollama stop`,
an eviction) and the runner still has requests; an unload is running; or a busy model's expiry
went stale, because Ollama renews `expires_at` only when the last request on the runner ends and
overlapping requests never let it go idle. The third is a healthy model at work.

So the console calls a model "stopping" only when Ollama says so AND nothing shows it serving;
one that Ollama calls Stopping while it keeps completing requests is "loaded", `busy`, with
`judged` saying why ("Ollama shows Stopping: its expiry is stale"). Evidence of serving, any of:
- trials of that model that ended ok after its expiry (the trial table; whenever they started);
- its llama-server runner making progress (`/slots`: tokens decoded, tasks finishing);
both within the last BUSY_EVIDENCE_S. Evidence lags (a runner is read every few seconds, a trial
is written when it ends), so a model seen serving up to JUST_EXPIRED_S before its expiry is not
called Stopping until JUST_EXPIRED_S after it either: meanwhile it is "loaded" with `judged`
saying Ollama shows Stopping and the console is checking (without this, every stale expiry put a
one-tick false "stopping" on the timeline). A real unload or a stuck Stopping is called so once
that short wait is over, counted from the expiry. Everything that shows or acts on a state uses `judge()`:
the sampler (the sidecar's `model_samples.state`, with Ollama's word in `ollama_state`), `status`,
preflight, the Live page, the diagnosis and the watchdog (through the sampler's samples).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oasis_ops.errors import OasisOpsError
from oasis_ops.probes.ollama import ModelStatus

if TYPE_CHECKING:
    from oasis_ops.settings import Settings
    from oasis_ops.sidecar import Sidecar

BUSY_EVIDENCE_S = 120.0  # serving seen this recently counts as serving now
JUST_EXPIRED_S = 10.0  # serving seen this close before the expiry: wait this long after it for evidence


@dataclass(frozen=True)
class Serving:
    """The newest evidence that a model is serving: when, and what was seen."""

    at: datetime
    what: str


def judge(status: ModelStatus, serving: Serving | None, now: datetime) -> ModelStatus:
    """`status` with its state judged from `serving` (None: no evidence either way)."""
    if status.ollama_state != "stopping":
        return status
    expired = status.expires_at
    if serving is None or expired is None:
        return status
    recent = (now - serving.at).total_seconds() <= BUSY_EVIDENCE_S
    if not (recent and after_expiry(serving, status)):
        since_expiry = (now - expired).total_seconds()
        if 0 <= since_expiry < JUST_EXPIRED_S and (expired - serving.at).total_seconds() <= JUST_EXPIRED_S:
            return replace(status, state="loaded", busy=False, stopping_since=None, stopping_for_s=None,
                           judged=f"Ollama shows Stopping since {expired:%H:%M:%S} UTC; it was serving just before "
                                  f"({serving.what}): checking that it still is")  # fmt: skip
        return status
    return replace(
        status,
        state="loaded",
        busy=True,
        stopping_since=None,
        stopping_for_s=None,
        judged=f"serving: {serving.what}; Ollama shows Stopping because its expiry is stale (it is renewed only "
        "when the runner goes idle, and overlapping requests never let it)",
    )


def after_expiry(serving: Serving | None, status: ModelStatus) -> bool:
    """Whether `serving` was seen after the model's expiry: the evidence that settles a stale one."""
    return serving is not None and status.expires_at is not None and serving.at > status.expires_at


def newest(found: list[Serving | None]) -> Serving | None:
    """The most recent of the evidence found (None when there is none)."""
    present = [s for s in found if s is not None]
    return max(present, key=lambda s: s.at) if present else None


def trial_evidence(ended_ok_since: Callable[[datetime, str | None], int], status: ModelStatus,
                   now: datetime) -> Serving | None:  # fmt: skip
    """Trials of the model that ended ok after its expiry (and within BUSY_EVIDENCE_S); while the
    expiry is JUST_EXPIRED_S old or less, trials that ended ok in the JUST_EXPIRED_S before it
    count as serving just before (trials are written as they end, read every few seconds).
    `ended_ok_since(ts, model)` is TrialSource.ended_ok_since."""
    if status.expires_at is None:
        return None
    since = max(status.expires_at, now - timedelta(seconds=BUSY_EVIDENCE_S))
    count = ended_ok_since(since, status.name)
    if count > 0:
        return Serving(now, f"{count} trial(s) ended ok since {since:%H:%M:%S} UTC")
    if 0 <= (now - status.expires_at).total_seconds() < JUST_EXPIRED_S:
        before = status.expires_at - timedelta(seconds=JUST_EXPIRED_S)
        count = ended_ok_since(before, status.name)
        if count > 0:
            return Serving(status.expires_at, f"{count} trial(s) ended ok from {before:%H:%M:%S} UTC")
    return None


def sidecar_evidence(sidecar: Sidecar, model: str, now: datetime) -> Serving | None:
    """What the sampler saw of `model` serving within BUSY_EVIDENCE_S (its judged samples and its
    llama-server reads), or None; a sidecar that cannot tell (absent, older schema) tells nothing."""
    try:
        frame = sidecar.query("modelstate_q_serving_evidence", model=model, since=now - timedelta(seconds=BUSY_EVIDENCE_S))
    except OasisOpsError:
        return None
    seen = {str(w): a for w, a in zip(frame["what"], frame["at"], strict=False) if a is not None and a == a}
    runner = Serving(_aware(seen["runner"]), "the sampler saw its llama-server runner decoding tokens") if "runner" in seen else None
    model_seen = Serving(_aware(seen["model"]), "the sampler saw it serving while Ollama showed Stopping") if "model" in seen else None
    return newest([runner, model_seen])


def _aware(value: Any) -> datetime:
    moment = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


class RunnerLooks:
    """A one-shot command's own reads of llama-server runners (`status` looks twice, 1 s apart):
    a runner that decoded tokens between the two looks is serving now, whatever the sampler last
    saw. Keyed by process identity (pid, create time); the rule is the sampler's (RunnerTracker:
    tokens/s above 0 from /metrics or /slots)."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self._runners: dict[tuple[int, float | None], tuple[str, Any, Any, float]] = {}

    def look(self, targets: list[tuple[str, int, float | None, int]]) -> None:
        """Read each (model, runner pid, create time, port) once."""
        from oasis_ops.probes.llama_server import LlamaServerProbe, RunnerTracker

        for model, pid, create_time, port in targets:
            key = (pid, create_time)
            entry = self._runners.get(key)
            if entry is None:
                probe = LlamaServerProbe(f"http://127.0.0.1:{port}", timeout_s=self.timeout_s)
                entry = (model, probe, RunnerTracker(no_progress_s=3600.0), 0.0)
            model, probe, tracker, _ = entry
            signals = tracker.update(probe.read())
            self._runners[key] = (model, probe, tracker, signals.tokens_per_s or 0.0)

    def serving(self, now: datetime) -> dict[str, Serving]:
        out: dict[str, Serving] = {}
        for model, _probe, _tracker, rate in self._runners.values():
            if rate > 0:
                out[model] = Serving(now, f"its llama-server runner decoded {rate:.0f} tokens/s between two looks")
        return out

    def close(self) -> None:
        for _model, probe, _tracker, _rate in self._runners.values():
            probe.close()
        self._runners.clear()


def judge_all(statuses: list[ModelStatus], settings: Settings, now: datetime, *,
              sidecar: Sidecar | None = None, db: str | os.PathLike[str] | None = None,
              seen: dict[str, Serving] | None = None) -> list[ModelStatus]:  # fmt: skip
    """One-shot judgement for `status` and preflight: each model Ollama calls Stopping is checked
    against what the caller saw itself (`seen`: its own runner reads), the sidecar (the sampler's
    reads) and the trial DB (trials completing since its expiry)."""
    if not any(s.ollama_state == "stopping" for s in statuses):
        return statuses
    source: Any = None
    out = []
    try:
        for status in statuses:
            if status.ollama_state != "stopping":
                out.append(status)
                continue
            # The newest evidence of all sources wins: each lags in its own way (the sidecar by
            # the sampler's flush interval, the runner looks by a busy runner's slow answer), so
            # an older serving seen in one must not hide a newer one in another. The trial DB
            # (a snapshot copy: the costly one) is asked unless serving after the expiry is known.
            found = [(seen or {}).get(status.name)]
            if sidecar is not None:
                found.append(sidecar_evidence(sidecar, status.name, now))
            if not after_expiry(newest(found), status) and db and Path(db).expanduser().exists():
                try:
                    if source is None:
                        from oasis_ops.trials import TrialSource

                        source = TrialSource(Path(db).expanduser(), settings)
                    found.append(trial_evidence(source.ended_ok_since, status, now))
                except OasisOpsError:
                    pass  # an unreadable trial DB tells nothing either way
            out.append(judge(status, newest(found), now))
    finally:
        if source is not None:
            source.close()
    return out
