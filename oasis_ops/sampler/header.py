"""The Live page's header, without Streamlit: what the sampler wrote, read back.

`live_header()` is the header: model states with their llama-server runner's slots, host
memory, swap-out rate, freshness of every source, the sampler heartbeat. `read_header_rows()`
reads its rows in one read-only open of the sidecar (cacheable); `live_header_at()` turns them
into ages and states at a given now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.sampler.core import HEARTBEAT_STALE_S
from oasis_ops.sampler.hostsource import is_simulated, pressure_level
from oasis_ops.sampler.reads import _age, _json, _num, _optional_rows, _reader, _rows, _ts
from oasis_ops.sampler.runner_panel import RunnerState, runner_state
from oasis_ops.sidecar import SamplerHeartbeat, Sidecar
from oasis_ops.status import swapouts_per_min

SWAP_RATE_WINDOW_S = 60.0  # the header's swap-out rate: over the newest minute of samples
RUNNER_MATCH_S = 10.0  # a runner read older than this before its model's newest sample is not shown
OLLAMA_STATE_KINDS = ("ollama_unreachable", "ollama_back", "sampler_started")
PS_STATE_KINDS = ("ollama_ps_blocked", "ollama_ps_answering", "ollama_unreachable", "sampler_started")


@dataclass(frozen=True)
class ModelState:
    """The newest sample of one model, as the header shows it."""

    model: str
    state: str  # loaded | stopping | gone
    sampled_at: datetime
    stopping_since: datetime | None
    stopping_for_s: float | None  # now - stopping_since (not the value at sampling time)
    processor: str | None
    runner_pid: int | None
    runner_rss_bytes: int | None
    runner_cpu_percent: float | None
    age_s: float
    runner: RunnerState | None = None  # its llama-server runner's newest read (Ollama >= 0.30)
    ollama_state: str | None = None  # Ollama's word when it differs from `state` (a stale expiry)
    runner_vram_bytes: int | None = None  # VRAM its runner holds on every GPU (None: no GPU read)


@dataclass
class LiveHeader:
    now: datetime
    sidecar_path: str
    sidecar_exists: bool
    models: list[ModelState] = field(default_factory=list)  # newest sample per model seen in the window
    host: dict[str, Any] | None = None  # newest host_samples row
    host_age_s: float | None = None
    ps_age_s: float | None = None  # newest model sample; None when no model was seen
    swapouts_per_min: float | None = None
    pressure_level: str | None = None
    simulated: bool = False
    heartbeat: SamplerHeartbeat | None = None
    ollama_reachable: bool | None = None  # None: unknown (no sampler ever ran)
    ollama_detail: str | None = None
    ps_blocked_since: datetime | None = None  # /api/ps not answering while /api/version does
    ps_blocked_detail: str | None = None

    @property
    def sampler_running(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.running

    @property
    def active_models(self) -> list[ModelState]:
        return [m for m in self.models if m.state != "gone"]


def _heartbeat(rows: list[dict[str, Any]], now: datetime) -> SamplerHeartbeat | None:
    """Like Sidecar.sampler_heartbeat(): running while the last tick is recent; "recent" allows
    for the sampler's batched writes (the row is written every FLUSH_INTERVAL_S)."""
    if not rows:
        return None
    row = rows[0]
    last_tick = _ts(row.get("last_tick_at"))
    age = _age(last_tick, now)
    interval = row.get("interval_s")
    limit = max(HEARTBEAT_STALE_S, 5 * (interval or 1.0))
    running = row.get("stopped_at") is None and age is not None and age <= limit
    return SamplerHeartbeat(
        sampler_id=row["sampler_id"],
        pid=row.get("pid"),
        host=row.get("host"),
        started_at=_ts(row.get("started_at")),
        last_tick_at=last_tick,
        ticks=row.get("ticks"),
        errors=row.get("errors"),
        last_error=row.get("last_error"),
        interval_s=interval,
        stopped_at=_ts(row.get("stopped_at")),
        age_s=age,
        running=running,
    )


@dataclass(frozen=True)
class HeaderRows:
    """The header's raw rows (cacheable); `live_header_at()` turns them into ages at a given now."""

    sidecar_path: str
    sidecar_exists: bool
    host_rows: list[dict[str, Any]]
    model_rows: list[dict[str, Any]]
    beat_rows: list[dict[str, Any]]
    ollama_rows: list[dict[str, Any]]
    rate_row: dict[str, Any] | None
    # model -> start of its current Stopping episode (see oasis_ops.actions.episodes): a harness
    # that re-sends keep_alive 0 resets Ollama's expires_at, not how long the runner is stuck.
    episode_starts: dict[str, datetime] = field(default_factory=dict)
    runner_rows: list[dict[str, Any]] = field(default_factory=list)  # newest runner_samples row per model
    ps_rows: list[dict[str, Any]] = field(default_factory=list)  # newest ollama_ps_blocked / _answering event


def read_header_rows(sidecar: Sidecar, models_since: datetime) -> HeaderRows:
    """Everything the header shows, from one read-only open of the sidecar."""
    with _reader(sidecar) as con:
        # The newest host sample: looked for in the last hour first (zone maps skip the rest of a
        # big table), in the whole table only when the sampler has been down longer.
        host_rows = _rows(sidecar, con, "sampler_q_latest_host_since", since=models_since)
        if not host_rows:
            host_rows = _rows(sidecar, con, "sidecar_q_latest_host_sample")
        model_rows = _rows(sidecar, con, "sidecar_q_latest_model_states", since=models_since)
        runner_rows = _optional_rows(sidecar, con, "sampler_q_latest_runner_samples", since=models_since)
        beat_rows = _rows(sidecar, con, "sidecar_q_sampler_heartbeat")
        ollama_rows = _rows(sidecar, con, "sampler_q_last_event_of", kinds=list(OLLAMA_STATE_KINDS))
        ps_rows = _rows(sidecar, con, "sampler_q_last_event_of", kinds=list(PS_STATE_KINDS))
        rate_row: dict[str, Any] | None = None
        if host_rows:
            newest = _ts(host_rows[0]["ts"])
            assert newest is not None
            rate_rows = _rows(sidecar, con, "sampler_q_swap_counter_span", since=newest - timedelta(seconds=SWAP_RATE_WINDOW_S),
                              source=host_rows[0].get("source"))  # fmt: skip
            rate_row = rate_rows[0] if rate_rows else None
    episode_starts: dict[str, datetime] = {}
    for row in model_rows:  # after the read above: episodes open the sidecar themselves
        sampled = _ts(row.get("ts"))
        if row.get("state") != "stopping" or sampled is None:
            continue
        pid = row.get("runner_pid")
        runner_pid = int(pid) if isinstance(pid, int | float) and pid == pid else None
        start = episode_start_from_sidecar(sidecar, str(row["model"]), sampled, runner_pid)
        if start is not None:
            episode_starts[str(row["model"])] = start
    return HeaderRows(str(sidecar.path), sidecar.path.exists(), host_rows, model_rows, beat_rows, ollama_rows, rate_row,
                      episode_starts, runner_rows, ps_rows)  # fmt: skip


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value == value else None


def live_header(sidecar: Sidecar, now: datetime | None = None, *, models_since: datetime | None = None) -> LiveHeader:
    """The header at `now` (default: the current time)."""
    now = now or datetime.now(UTC)
    return live_header_at(read_header_rows(sidecar, models_since or now - timedelta(hours=1)), now)


def live_header_at(rows: HeaderRows, now: datetime) -> LiveHeader:
    """Ages and states of `rows` as of `now`."""
    header = LiveHeader(now=now, sidecar_path=rows.sidecar_path, sidecar_exists=rows.sidecar_exists)
    host_rows, model_rows, beat_rows, ollama_rows, rate_row = (
        rows.host_rows, rows.model_rows, rows.beat_rows, rows.ollama_rows, rows.rate_row
    )
    if host_rows:
        host = host_rows[0]
        header.host = host
        header.host_age_s = _age(_ts(host["ts"]), now)
        header.simulated = is_simulated(host.get("source"))
        header.pressure_level = pressure_level(host.get("pressure"), host.get("source"))
    if rate_row and rate_row.get("samples", 0) >= 2:
        first_ts, last_ts = _ts(rate_row["first_ts"]), _ts(rate_row["last_ts"])
        if first_ts is not None and last_ts is not None:
            header.swapouts_per_min = swapouts_per_min(first_ts, rate_row["first_swapouts"], last_ts, rate_row["last_swapouts"])
    runners = {str(r["model"]): r for r in rows.runner_rows}
    for row in model_rows:
        sampled = _ts(row["ts"])
        assert sampled is not None
        runner = None
        runner_row = runners.get(str(row["model"]))
        if runner_row is not None and row.get("runner_pid") is not None and _num(runner_row.get("runner_pid")) == row.get("runner_pid"):
            read_at = _ts(runner_row["ts"])
            if read_at is not None and read_at >= sampled - timedelta(seconds=RUNNER_MATCH_S):  # this runner, read lately
                runner = runner_state(runner_row, now)
        since = _ts(row.get("stopping_since"))
        episode = rows.episode_starts.get(row["model"])
        if row["state"] == "stopping" and episode is not None and (since is None or episode < since):
            since = episode
        header.models.append(
            ModelState(
                model=row["model"],
                state=row["state"],
                sampled_at=sampled,
                stopping_since=since,
                stopping_for_s=_age(since, now) if row["state"] == "stopping" else None,
                processor=row.get("processor"),
                runner_pid=row.get("runner_pid"),
                runner_rss_bytes=row.get("runner_rss_bytes"),
                runner_cpu_percent=row.get("runner_cpu_percent"),
                age_s=_age(sampled, now) or 0.0,
                runner=runner,
                ollama_state=row.get("ollama_state") if isinstance(row.get("ollama_state"), str) else None,
                runner_vram_bytes=_int_or_none(row.get("runner_vram_bytes")),
            )
        )
    if header.models:
        header.ps_age_s = min(m.age_s for m in header.models)
    header.heartbeat = _heartbeat(beat_rows, now)
    if ollama_rows:
        kind = ollama_rows[0]["kind"]
        header.ollama_reachable = kind != "ollama_unreachable"
        detail = _json(ollama_rows[0].get("detail"))
        header.ollama_detail = detail.get("error") if kind == "ollama_unreachable" else detail.get("version")
    if rows.ps_rows and rows.ps_rows[0]["kind"] == "ollama_ps_blocked" and header.ollama_reachable is not False:
        header.ps_blocked_since = _ts(rows.ps_rows[0]["ts"])
        header.ps_blocked_detail = _json(rows.ps_rows[0].get("detail")).get("error")
    # A running sampler polls /api/ps every tick: with Ollama up and no model, its last tick is the
    # last /api/ps sample.
    if header.ps_age_s is None and header.sampler_running and header.ollama_reachable and header.heartbeat:
        header.ps_age_s = header.heartbeat.age_s
    return header
