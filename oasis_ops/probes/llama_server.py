"""llama-server as a signal source: a runner's own `GET /slots` and `GET /metrics` (Ollama >= 0.30).

From Ollama 0.30 each loaded model is served by a `llama-server` child process listening on
127.0.0.1:PORT (`parse_runner_cmdline` gives the port). llama.cpp's server answers:

- `/slots`: one object per slot: `id`, `n_ctx`, `is_processing` (older builds: `state` 0/1),
  `id_task`, `n_prompt_tokens`, `n_prompt_tokens_processed`, and `next_token[0]` with
  `n_decoded` (tokens generated so far by the slot's task) and `n_remain`;
- `/metrics`: Prometheus text, `llamacpp:requests_processing`, `llamacpp:requests_deferred`,
  `llamacpp:tokens_predicted_total`, `llamacpp:prompt_tokens_total`, `llamacpp:n_decode_total`,
  `llamacpp:predicted_tokens_seconds`, ... only when the server was started with `--metrics`.
  Ollama does not pass it, so a real Ollama runner answers 501: "not enabled", not an error.

Both are answered by llama.cpp's main loop between two decode steps, so a runner stuck inside a
decode (or SIGSTOPped: the kernel still accepts the connection) does not answer at all. That is
a signal in itself, so every read has one strict *total* deadline (`timeout_s`, 1 s by default,
for /slots and /metrics together, however slowly the bytes trickle in) and a bounded body
(`max_body_bytes`, 1 MiB; a real /slots is ~1.3 KB per slot).

    probe = LlamaServerProbe("http://127.0.0.1:PORT")      # transport=, clock=, monotonic= for tests
    reading = probe.read()                                  # RunnerReading; never raises for the runner
    signals = RunnerTracker(no_progress_s=30).update(reading)   # tokens/s, stalled slots, ...

`slots()` / `metrics()` raise the project's errors (OllamaUnreachable: no answer in time, refused;
OllamaBadResponse: HTTP error, junk, too big; EndpointNotEnabled: 501); `read()` turns them into
fields of the reading. `RunnerTracker` keeps what two readings need: counter deltas for tokens/s
and, per slot, since when it made no progress (same task, same n_decoded and prompt progress
while `is_processing`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from oasis_ops.errors import ConfigError, OllamaBadResponse, OllamaUnreachable
from oasis_ops.probes.deadline import Deadline, DeadlineTransport
from oasis_ops.probes.host import Clock, utc_now

DEFAULT_TIMEOUT_S = 1.0  # total per read() (/slots + /metrics), not per socket operation
MAX_BODY_BYTES = 1 << 20  # 1 MiB: ~800 slots of a real /slots answer
MAX_SLOTS = 1024
MAX_METRICS = 256
METRIC_PREFIX = "llamacpp:"
_MAX_INT = 2**62


class EndpointNotEnabled(OllamaBadResponse):
    """The runner answered HTTP 501: this endpoint is off (`/metrics` without `--metrics`)."""


# --- what one read returns ----------------------------------------------------------------------
@dataclass(frozen=True)
class SlotState:
    """One slot of `/slots` (None: the field is absent in this llama.cpp build)."""

    id: int
    is_processing: bool
    n_ctx: int | None = None
    id_task: int | None = None
    n_prompt_tokens: int | None = None
    n_prompt_tokens_processed: int | None = None
    n_decoded: int | None = None
    n_remain: int | None = None

    @property
    def progress(self) -> tuple[int | None, int | None, int | None]:
        """Changes whenever the slot moves on: a new task, a token decoded, a prompt batch done."""
        return self.id_task, self.n_decoded, self.n_prompt_tokens_processed

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "busy": self.is_processing, "id_task": self.id_task, "n_ctx": self.n_ctx,
                "n_prompt_tokens": self.n_prompt_tokens, "n_decoded": self.n_decoded, "n_remain": self.n_remain}  # fmt: skip


@dataclass(frozen=True)
class RunnerReading:
    """One look at a runner. `reachable`: it answered /slots in time (any HTTP answer);
    `slots` is None when that answer was not usable (`error` says why)."""

    url: str
    ts: datetime
    mono: float  # monotonic time of the reading (rates are computed on it)
    reachable: bool
    error: str | None = None
    slots: tuple[SlotState, ...] | None = None
    slots_enabled: bool | None = None  # False: /slots answered 501 (`--no-slots`)
    metrics: Mapping[str, float] | None = None  # llamacpp:* values, prefix stripped; None: not read
    metrics_enabled: bool | None = None  # False: 501 (Ollama does not pass --metrics); None: not known
    metrics_error: str | None = None
    elapsed_s: float = 0.0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def slots_total(self) -> int | None:
        return len(self.slots) if self.slots is not None else None

    @property
    def slots_busy(self) -> int | None:
        return sum(1 for s in self.slots if s.is_processing) if self.slots is not None else None

    @property
    def tokens_in_flight(self) -> int | None:
        """Tokens generated so far by the tasks of the busy slots."""
        if self.slots is None:
            return None
        return sum(s.n_decoded or 0 for s in self.slots if s.is_processing)

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name) if self.metrics is not None else None


# --- parsing ---------------------------------------------------------------------------------------
def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    number = int(value)
    return number if -_MAX_INT <= number <= _MAX_INT else None


def parse_slots(payload: Any, where: str = "/slots") -> tuple[SlotState, ...]:
    """`/slots` JSON -> slots. Accepts the builds' variants (`is_processing` or `state`,
    `next_token` a list or an object, `n_decoded` at the top level); OllamaBadResponse otherwise."""
    if not isinstance(payload, list):
        raise OllamaBadResponse(f"{where} answered {type(payload).__name__}, expected a list of slots")
    if len(payload) > MAX_SLOTS:
        raise OllamaBadResponse(f"{where} answered {len(payload)} slots (more than {MAX_SLOTS})")
    slots = []
    for n, item in enumerate(payload):
        if not isinstance(item, Mapping):
            raise OllamaBadResponse(f"{where}: slot {n} is {type(item).__name__}, expected an object")
        slot_id = _int(item.get("id"))
        busy = item.get("is_processing")
        if not isinstance(busy, bool):
            state = _int(item.get("state"))
            if state is None:
                raise OllamaBadResponse(f"{where}: slot {n} says neither is_processing nor state")
            busy = state != 0
        nxt = item.get("next_token")
        token = nxt[0] if isinstance(nxt, list) and nxt and isinstance(nxt[0], Mapping) else nxt if isinstance(nxt, Mapping) else {}
        decoded = _int(token.get("n_decoded")) if "n_decoded" in token else _int(item.get("n_decoded"))
        slots.append(
            SlotState(
                id=slot_id if slot_id is not None else n,
                is_processing=busy,
                n_ctx=_int(item.get("n_ctx")),
                id_task=_int(item.get("id_task")),
                n_prompt_tokens=_int(item.get("n_prompt_tokens")),
                n_prompt_tokens_processed=_int(item.get("n_prompt_tokens_processed")),
                n_decoded=decoded,
                n_remain=_int(token.get("n_remain")) if "n_remain" in token else _int(item.get("n_remain")),
            )
        )
    return tuple(slots)


def parse_metrics(text: str, where: str = "/metrics") -> dict[str, float]:
    """Prometheus text -> {name without `llamacpp:`: value} for the llamacpp:* samples (labels
    ignored, the first sample of a name kept; NaN and infinities dropped)."""
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith(METRIC_PREFIX):
            continue
        name_part, _, rest = line.partition(" ")
        name = name_part.split("{", 1)[0][len(METRIC_PREFIX):]
        fields = rest.split()
        if not name or not fields or name in out:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            out[name] = value
        if len(out) > MAX_METRICS:
            raise OllamaBadResponse(f"{where} answered more than {MAX_METRICS} llamacpp metrics")
    if not out and text.strip() and not text.lstrip().startswith("#"):
        raise OllamaBadResponse(f"{where} answered something that is not Prometheus text: {_snippet(text)}")
    return out


def _snippet(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return _snippet(body)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return _snippet(error["message"])
    return _snippet(error) if isinstance(error, str) else _snippet(body)


# --- the probe -----------------------------------------------------------------------------------
class LlamaServerProbe:
    """Reads one runner's /slots and /metrics. One per runner process (it remembers that
    /metrics is off, so a real Ollama runner is asked once). Not thread-safe: one caller at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"the runner read timeout must be positive, got {timeout_s:g} s")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.monotonic = monotonic
        self.max_body_bytes = int(max_body_bytes)
        self.metrics_enabled: bool | None = None
        self.slots_enabled: bool | None = None
        self._deadline = Deadline(monotonic)
        try:
            self._http = httpx.Client(base_url=self.base_url, transport=transport or DeadlineTransport(self._deadline),
                                      trust_env=False, timeout=self.timeout_s)  # fmt: skip
        except httpx.InvalidURL as exc:
            raise ConfigError(f"runner address {base_url!r} is not a usable URL: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LlamaServerProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # one place that turns every httpx failure into the project's one-line errors
    def _get(self, path: str, deadline: float) -> tuple[int, str]:
        where = f"GET {self.base_url}{path}"
        left = deadline - self.monotonic()
        if left <= 0:
            raise OllamaUnreachable(f"runner did not answer {where} within {self.timeout_s:g} s")
        self._deadline.at = deadline
        try:
            with self._http.stream("GET", path, timeout=left) as response:
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                    raise OllamaBadResponse(f"{where} answered {int(declared):,} bytes (more than {self.max_body_bytes:,} bytes); refused")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise OllamaBadResponse(f"{where} answered more than {self.max_body_bytes:,} bytes; refused")
                    if self.monotonic() > deadline:
                        raise OllamaUnreachable(f"runner did not finish answering {where} within {self.timeout_s:g} s")
                    chunks.append(chunk)
                status = response.status_code
                encoding = response.encoding or "utf-8"
        except httpx.TimeoutException:
            raise OllamaUnreachable(f"runner did not answer {where} within {self.timeout_s:g} s") from None
        except httpx.ConnectError as exc:
            raise OllamaUnreachable(f"cannot connect to the runner at {self.base_url}: {_snippet(str(exc)) or 'refused'}") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise OllamaUnreachable(f"runner connection failed on {where}: {_snippet(str(exc)) or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise OllamaUnreachable(f"{where} failed: {_snippet(str(exc)) or type(exc).__name__}") from None
        finally:
            self._deadline.at = None
        body = b"".join(chunks).decode(encoding, errors="replace")
        if status == 501:
            raise EndpointNotEnabled(f"{where} is not enabled on this runner: {_error_message(body)}")
        if status >= 400:
            error = OllamaBadResponse(f"{where} -> HTTP {status}: {_error_message(body)}")
            error.status_code = status  # type: ignore[attr-defined]
            raise error
        return status, body

    def slots(self, deadline: float | None = None) -> tuple[SlotState, ...]:
        where = f"GET {self.base_url}/slots"
        _, body = self._get("/slots", deadline if deadline is not None else self.monotonic() + self.timeout_s)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            kind = "HTML" if body.lstrip().lower().startswith(("<!doctype", "<html")) else "non-JSON"
            raise OllamaBadResponse(f"{where} answered {kind}: {_snippet(body)}") from None
        return parse_slots(payload, where)

    def metrics(self, deadline: float | None = None) -> dict[str, float]:
        _, body = self._get("/metrics", deadline if deadline is not None else self.monotonic() + self.timeout_s)
        return parse_metrics(body, f"GET {self.base_url}/metrics")

    def read(self) -> RunnerReading:
        """/slots, then /metrics (unless known to be off) within one total deadline of timeout_s.
        Never raises for what the runner does: a timeout, a refusal or junk is in the reading."""
        start = self.monotonic()
        deadline = start + self.timeout_s
        ts = self.clock()
        reachable, error, slots = True, None, None
        try:
            slots = self.slots(deadline)
            self.slots_enabled = True
        except EndpointNotEnabled as exc:
            self.slots_enabled, error = False, str(exc)
        except OllamaUnreachable as exc:
            reachable, error = False, str(exc)
        except OllamaBadResponse as exc:
            error = str(exc)
        metrics: dict[str, float] | None = None
        metrics_error: str | None = None
        if reachable and self.metrics_enabled is not False:
            try:
                metrics = self.metrics(deadline)
                self.metrics_enabled = True
            except EndpointNotEnabled:
                self.metrics_enabled = False  # Ollama's runners: no --metrics. Never asked again.
            except (OllamaUnreachable, OllamaBadResponse) as exc:
                metrics_error = str(exc)
        return RunnerReading(
            url=self.base_url, ts=ts, mono=start, reachable=reachable, error=error, slots=slots,
            slots_enabled=self.slots_enabled, metrics=metrics, metrics_enabled=self.metrics_enabled,
            metrics_error=metrics_error, elapsed_s=self.monotonic() - start, timeout_s=self.timeout_s,
        )  # fmt: skip


# --- two readings make signals --------------------------------------------------------------------
@dataclass(frozen=True)
class StalledSlot:
    id: int
    id_task: int | None
    n_decoded: int | None
    no_progress_s: float


@dataclass(frozen=True)
class RunnerSignals:
    """What a reading means, given the ones before it (see RunnerTracker)."""

    reading: RunnerReading
    tokens_per_s: float | None = None  # generated tokens per second since the previous reading
    rate_source: str | None = None  # "metrics" (tokens_predicted_total) | "slots" (n_decoded deltas)
    stalled_for_s: float | None = None  # longest time a busy slot went without progress; None: none busy
    stalled: tuple[StalledSlot, ...] = ()  # busy slots without progress for >= the threshold
    not_answering_for_s: float | None = None  # since the first unanswered read in a row; None: answers
    slot_ages: Mapping[int, float] = field(default_factory=dict)  # busy slot id -> seconds without progress
    # a busy slot's task moved on since the previous reading (a token, a prompt batch). A task newly
    # taken is not counted: a wedged runner takes a request and then does nothing with it.
    moved: bool = False

    @property
    def no_progress(self) -> bool:
        return bool(self.stalled)


@dataclass
class _SlotMemory:
    progress: tuple[int | None, int | None, int | None]
    n_decoded: int | None
    id_task: int | None
    since: float  # monotonic time the slot last made progress (or was first seen busy)


class RunnerTracker:
    """Per runner process: tokens/s from counter deltas (/metrics) or n_decoded deltas (/slots),
    and per busy slot since when it made no progress. A slot seen busy for the first time counts
    from that look; a runner that stops answering keeps its slots' clocks running, so a runner
    paused and resumed with nothing decoded in between shows the whole pause as no progress."""

    def __init__(self, no_progress_s: float) -> None:
        self.no_progress_s = float(no_progress_s)
        self._slots: dict[int, _SlotMemory] = {}
        self._last_slots_mono: float | None = None
        self._last_counter: tuple[float, float] | None = None  # (mono, tokens_predicted_total)
        self._unanswered_since: float | None = None

    def update(self, reading: RunnerReading) -> RunnerSignals:
        now = reading.mono
        if not reading.reachable:
            self._unanswered_since = self._unanswered_since if self._unanswered_since is not None else now
            return RunnerSignals(reading, not_answering_for_s=now - self._unanswered_since)
        self._unanswered_since = None
        rate, source = self._counter_rate(reading, now)
        if reading.slots is None:
            return RunnerSignals(reading, tokens_per_s=rate, rate_source=source)
        decoded_delta = 0
        moved = False
        ages: dict[int, float] = {}
        stalled: list[StalledSlot] = []
        seen: dict[int, _SlotMemory] = {}
        for slot in reading.slots:
            before = self._slots.get(slot.id)
            if before is not None and slot.n_decoded is not None:
                if slot.id_task == before.id_task and before.n_decoded is not None and slot.n_decoded >= before.n_decoded:
                    decoded_delta += slot.n_decoded - before.n_decoded
                elif slot.id_task != before.id_task and slot.is_processing:
                    decoded_delta += slot.n_decoded  # a new task since the last look
            if not slot.is_processing:
                seen[slot.id] = _SlotMemory(slot.progress, slot.n_decoded, slot.id_task, now)
                continue
            if before is not None and before.progress == slot.progress:
                since = before.since
            else:
                since = now
                moved = moved or (before is not None and before.id_task == slot.id_task)
            seen[slot.id] = _SlotMemory(slot.progress, slot.n_decoded, slot.id_task, since)
            ages[slot.id] = now - since
            if now - since >= self.no_progress_s:
                stalled.append(StalledSlot(slot.id, slot.id_task, slot.n_decoded, now - since))
        self._slots = seen  # slots no longer listed are forgotten (bounded)
        if self._last_slots_mono is not None and now > self._last_slots_mono:
            slots_rate = decoded_delta / (now - self._last_slots_mono)
            # /metrics' counter grows only when a request ends (llama.cpp adds a request's tokens
            # at its release), so two close reads can see 0 from it while the slots decode.
            if rate is None or slots_rate > rate:
                rate, source = slots_rate, "slots"
        self._last_slots_mono = now
        return RunnerSignals(
            reading, tokens_per_s=rate, rate_source=source, stalled_for_s=max(ages.values()) if ages else None,
            stalled=tuple(stalled), slot_ages=ages, moved=moved,
        )  # fmt: skip

    def _counter_rate(self, reading: RunnerReading, now: float) -> tuple[float | None, str | None]:
        total = reading.metric("tokens_predicted_total")
        if total is None:
            return None, None
        before, self._last_counter = self._last_counter, (now, total)
        if before is None or now <= before[0] or total < before[1]:  # first look, or a counter reset
            return None, None
        return (total - before[1]) / (now - before[0]), "metrics"


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "EndpointNotEnabled",
    "LlamaServerProbe",
    "RunnerReading",
    "RunnerSignals",
    "RunnerTracker",
    "SlotState",
    "StalledSlot",
    "parse_metrics",
    "parse_slots",
]
