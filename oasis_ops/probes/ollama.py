"""Ollama over its HTTP API: /api/version, /api/ps, /api/show, /api/generate.

Always short timeouts (since v0.32.4 /api/ps can hang behind a model load). httpx errors are
translated here: OllamaUnreachable (refused, DNS, timeout) and OllamaBadResponse (non-JSON,
HTML, wrong shape, HTTP errors), each with a one-line message.

Model state follows `ollama ps` exactly: "stopping" when expires_at is in the past, else
"loaded". "gone" is never reported by /api/ps; `diff_models()` derives it (and the other
transitions) from two consecutive polls, for the sampler's events table.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from oasis_ops.errors import ConfigError, OllamaBadResponse, OllamaUnreachable
from oasis_ops.probes.deadline import Deadline, DeadlineTransport
from oasis_ops.probes.host import Clock, utc_now

DEFAULT_PORT = 11434
# Real answers are a few KB and a few levels deep; anything far beyond is junk, refused early.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_INT64 = 2**63 - 1  # sizes land in BIGINT columns
# keep_alive -1 gives an expiry ~292 years ahead (time.Duration max): treat >= this as "forever".
FOREVER_AFTER = datetime(2200, 1, 1, tzinfo=UTC)


# --- OLLAMA_HOST ------------------------------------------------------------------------------
def resolve_ollama_host(value: str | None) -> str:
    """Base URL from an OLLAMA_HOST-style value, the way Ollama's clients read it.

    Same rules as envconfig.Host() (Go) and ollama-python's _parse_host: quotes and spaces
    trimmed; no scheme -> http with port 11434; "http://h" -> port 80, "https://h" -> 443;
    ":P" -> 127.0.0.1:P; empty -> http://127.0.0.1:11434; a path is kept, trailing slashes
    dropped; bare IPv6 gets brackets; an invalid port falls back to the default. Like
    envconfig.ConnectableHost(), a bind-all address (0.0.0.0, ::) becomes loopback
    (127.0.0.1, ::1): it is where a server listens, not somewhere to connect to.
    """
    text = (value or "").strip().strip("\"'").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":  # Go client special case
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, _, path = hostport.partition("/")
    path = path.strip("/")

    host: str
    port: int | str
    if hostport.startswith("["):  # [v6] or [v6]:port
        end = hostport.find("]")
        host = hostport[1:end] if end > 0 else hostport.strip("[]")
        rest = hostport[end + 1 :] if end > 0 else ""
        port = rest[1:] if rest.startswith(":") else default_port
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:  # a bare name or address, or a bare IPv6 address (no brackets: no port can follow)
        host, port = hostport, default_port
    try:
        port_number = int(port)
        if not 0 <= port_number <= 65535:
            raise ValueError
    except ValueError:
        port_number = default_port
    host = host or "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified:
            ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
        host = f"[{ip.compressed}]" if ip.version == 6 else str(ip)
    url = f"{scheme}://{host}:{port_number}"
    return f"{url}/{path}" if path else url


# --- time -------------------------------------------------------------------------------------
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_rfc3339(text: str) -> datetime:
    """Go's time.RFC3339Nano output -> aware UTC datetime (nanoseconds truncated to µs;
    local offsets honoured; a missing offset means UTC)."""
    match = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or "0")[:6].ljust(6, "0")
    offset = match.group(8)
    tz: timezone = UTC
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    # Go may print second 60 for a leap second; clamp rather than fail.
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), int(fraction), tzinfo=tz)
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before datetime.min in UTC
        raise ValueError(f"RFC 3339 time out of range: {text!r}") from None


# --- model status -----------------------------------------------------------------------------
def processor_split(size: int, size_vram: int) -> tuple[str, float | None, float | None]:
    """The PROCESSOR column of `ollama ps`, plus (cpu_percent, gpu_percent).

    size_vram == 0 -> "100% CPU"; == size -> "100% GPU"; > size or size == 0 -> "Unknown";
    else "C%/G% CPU/GPU" with C = round-half-away-from-zero(cpu share * 100) (Go math.Round).
    """
    if size_vram == 0:
        return "100% CPU", 100.0, 0.0
    if size_vram == size:
        return "100% GPU", 0.0, 100.0
    if size_vram > size or size == 0:
        return "Unknown", None, None
    share = (size - size_vram) / size * 100
    cpu = math.floor(share + 0.5)  # share > 0: same as Go's math.Round
    return f"{cpu}%/{100 - cpu}% CPU/GPU", float(cpu), float(100 - cpu)


@dataclass(frozen=True)
class ModelStatus:
    """One entry of /api/ps, with the state `ollama ps` would print."""

    name: str
    model: str
    digest: str
    size_bytes: int
    size_vram_bytes: int
    context_length: int | None  # absent before Ollama v0.10
    expires_at: datetime | None
    state: str  # "loaded" | "stopping"
    stopping_since: datetime | None  # = expires_at when it is in the past
    stopping_for_s: float | None
    processor: str  # exactly the PROCESSOR column of `ollama ps`
    cpu_percent: float | None  # memory split at load time, not where compute runs
    gpu_percent: float | None
    keep_alive_forever: bool
    details: dict[str, Any] = field(default_factory=dict)
    # Ollama's own word ("loaded" | "stopping"); `state` is the console's judgement, which differs
    # only when the evidence says a model past its expiry is serving (oasis_ops.modelstate).
    ollama_state: str | None = None
    busy: bool = False  # serving requests now (judged from evidence), None-free for simple reads
    judged: str | None = None  # why the console's state differs from Ollama's word

    def __post_init__(self) -> None:
        if self.ollama_state is None:
            object.__setattr__(self, "ollama_state", self.state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "size_vram_bytes": self.size_vram_bytes,
            "context_length": self.context_length,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "state": self.state,
            "stopping_since": self.stopping_since.isoformat() if self.stopping_since else None,
            "stopping_for_s": self.stopping_for_s,
            "processor": self.processor,
            "cpu_percent": self.cpu_percent,
            "gpu_percent": self.gpu_percent,
            "keep_alive_forever": self.keep_alive_forever,
            "details": self.details,
            "ollama_state": self.ollama_state,
            "busy": self.busy,
            "judged": self.judged,
        }


def _int_field(entry: Mapping[str, Any], key: str, *, default: int | None) -> int | None:
    value = entry.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OllamaBadResponse(f"/api/ps: {key} is {type(value).__name__}, expected a number")
    if isinstance(value, float) and not math.isfinite(value):  # 1e400 parses as inf
        raise OllamaBadResponse(f"/api/ps: {key} is {value}, expected a finite number")
    if value < 0:
        raise OllamaBadResponse(f"/api/ps: {key} is negative ({value:.6g}), expected a byte count or length")
    if value > MAX_INT64:
        raise OllamaBadResponse(f"/api/ps: {key} is larger than 2^63-1, expected a byte count or length")
    return int(value)


def model_status_from_ps(entry: Any, now: datetime) -> ModelStatus:
    """One /api/ps entry (any known version's shape) -> ModelStatus, judged at `now`."""
    if not isinstance(entry, Mapping):
        raise OllamaBadResponse(f"/api/ps: a model entry is {type(entry).__name__}, expected an object")
    name = entry.get("name") or entry.get("model")
    if not isinstance(name, str) or not name:
        raise OllamaBadResponse("/api/ps: a model entry has no name")
    size = _int_field(entry, "size", default=0) or 0
    size_vram = _int_field(entry, "size_vram", default=0) or 0  # absent when 0 before v0.1.42
    context_length = _int_field(entry, "context_length", default=None)
    expires_raw = entry.get("expires_at")
    expires_at: datetime | None = None
    if expires_raw not in (None, ""):
        try:
            expires_at = parse_rfc3339(expires_raw) if isinstance(expires_raw, str) else None
        except ValueError:
            expires_at = None
        if expires_at is None:
            shown = _snippet(expires_raw if isinstance(expires_raw, str) else json.dumps(expires_raw), 60)
            raise OllamaBadResponse(f"/api/ps: {_snippet(name, 60)}: expires_at {shown} is not a usable time")
    stopping = expires_at is not None and expires_at < now
    processor, cpu, gpu = processor_split(size, size_vram)
    details = entry.get("details")
    return ModelStatus(
        name=name,
        model=str(entry.get("model") or name),
        digest=str(entry.get("digest") or ""),
        size_bytes=size,
        size_vram_bytes=size_vram,
        context_length=context_length,
        expires_at=expires_at,
        state="stopping" if stopping else "loaded",
        stopping_since=expires_at if stopping else None,
        stopping_for_s=(now - expires_at).total_seconds() if stopping and expires_at else None,
        processor=processor,
        cpu_percent=cpu,
        gpu_percent=gpu,
        keep_alive_forever=expires_at is not None and expires_at >= FOREVER_AFTER,
        details=dict(details) if isinstance(details, Mapping) else {},
    )


def parse_ps(payload: Any, now: datetime) -> list[ModelStatus]:
    """The whole /api/ps body -> ModelStatus list (order kept: latest expiry first)."""
    if not isinstance(payload, Mapping):
        raise OllamaBadResponse(f"/api/ps answered {type(payload).__name__}, expected an object")
    models = payload.get("models")
    if models is None:
        models = []
    if not isinstance(models, list):
        raise OllamaBadResponse(f"/api/ps: models is {type(models).__name__}, expected a list")
    return [model_status_from_ps(entry, now) for entry in models]


@dataclass(frozen=True)
class ModelTransition:
    """A state change between two polls; `new_state` "gone" means it left /api/ps."""

    model: str
    old_state: str | None  # None: newly seen
    new_state: str  # "loaded" | "stopping" | "gone"
    status: ModelStatus | None  # the current entry (None when gone)


def diff_models(
    previous: Iterable[ModelStatus], current: Iterable[ModelStatus]
) -> list[ModelTransition]:
    """Transitions from one /api/ps poll to the next, keyed by model name: newly seen
    (None -> loaded/stopping), loaded <-> stopping, and gone (in previous, not in current)."""
    before = {m.name: m for m in previous}
    after = {m.name: m for m in current}
    transitions: list[ModelTransition] = []
    for name, status in after.items():
        old = before.get(name)
        if old is None or old.state != status.state:
            transitions.append(ModelTransition(name, old.state if old else None, status.state, status))
    for name, old in before.items():
        if name not in after:
            transitions.append(ModelTransition(name, old.state, "gone", None))
    return transitions


# --- /api/show --------------------------------------------------------------------------------
def modelfile_from_paths(modelfile: str) -> list[str]:
    """Paths of the non-comment FROM lines of a modelfile (the first is the weights blob;
    vision models add a projector). `# FROM name:tag` comment lines are ignored."""
    paths = []
    for line in modelfile.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        match = re.match(r"^FROM\s+(.+?)\s*$", stripped, re.IGNORECASE)
        if match:
            paths.append(match.group(1).strip("\"'"))
    return paths


# --- client -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PingResult:
    ok: bool
    elapsed_s: float
    detail: str


class OllamaClient:
    """Thin, strict client. `transport` lets tests use httpx.MockTransport; `clock` pins "now"
    for the Stopping decision."""

    def __init__(
        self,
        base_url: str | None = None,
        timeout_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = resolve_ollama_host(base_url)
        self.timeout_s = timeout_s
        self.clock: Clock = clock or utc_now
        # every call has one total deadline (its timeout), not one per socket read: an Ollama that
        # trickles its answer byte by byte cannot hold `status` for minutes
        self._deadline = Deadline()
        try:
            self._http = httpx.Client(
                base_url=self.base_url, timeout=timeout_s, transport=transport or DeadlineTransport(self._deadline), trust_env=False
            )
        except httpx.InvalidURL as exc:
            raise ConfigError(f"Ollama address {base_url!r} (OLLAMA_HOST / ollama_host) is not a usable URL: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Any, transport: httpx.BaseTransport | None = None) -> OllamaClient:
        return cls(settings.ollama_host, timeout_s=settings.ollama_timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # one place that turns every httpx failure into our one-line errors
    def _request(self, method: str, path: str, *, json_body: Any = None, timeout_s: float | None = None) -> Any:
        where = f"{method} {self.base_url}{path}"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self._deadline.at = time.monotonic() + timeout
        try:
            with self._http.stream(method, path, json=json_body, timeout=timeout) as response:
                raw = _read_capped(response, where)
        except httpx.TimeoutException:
            raise OllamaUnreachable(f"Ollama did not answer {where} within {timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise OllamaUnreachable(f"cannot connect to Ollama at {self.base_url}: {_one_line(exc)}") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise OllamaUnreachable(f"Ollama connection failed on {where}: {_one_line(exc)}") from None
        except httpx.HTTPError as exc:
            raise OllamaUnreachable(f"{where} failed: {_one_line(exc)}") from None
        except httpx.InvalidURL as exc:
            raise ConfigError(f"Ollama address {self.base_url!r} (OLLAMA_HOST / ollama_host) is not a usable URL: {exc}") from None
        finally:
            self._deadline.at = None
        body = raw.decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            message = _ollama_error(body) or _snippet(body)
            error = OllamaBadResponse(f"{where} -> HTTP {response.status_code}: {message}")
            error.status_code = response.status_code  # type: ignore[attr-defined]
            raise error
        try:
            payload = json.loads(body)
        except RecursionError:
            raise OllamaBadResponse(f"{where} answered JSON nested too deeply to read") from None
        except ValueError:  # includes ints longer than Python's digit limit
            kind = "HTML" if body.lstrip().lower().startswith(("<!doctype", "<html")) else "non-JSON"
            raise OllamaBadResponse(f"{where} answered {kind}: {_snippet(body)}") from None
        if _too_deep(payload, MAX_JSON_DEPTH):
            raise OllamaBadResponse(f"{where} answered JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return payload

    def version(self) -> str:
        payload = self._request("GET", "/api/version")
        version = payload.get("version") if isinstance(payload, Mapping) else None
        if not isinstance(version, str) or not version:
            raise OllamaBadResponse(f"/api/version answered without a version: {_snippet(json.dumps(payload))}")
        return version

    def ps_raw(self) -> Any:
        return self._request("GET", "/api/ps")

    def ps(self) -> list[ModelStatus]:
        payload = self.ps_raw()
        try:
            return parse_ps(payload, self.clock())
        except (OverflowError, ValueError, TypeError, RecursionError) as exc:
            # the checks above should catch every junk value; this keeps any we missed one line
            raise OllamaBadResponse(f"/api/ps answered a value we cannot use: {_one_line(exc)}") from None

    def show(self, model: str) -> dict[str, Any]:
        """/api/show body plus `blob_paths` (non-comment FROM paths of its modelfile)."""
        payload = self._request("POST", "/api/show", json_body={"model": model, "name": model})
        if not isinstance(payload, Mapping):
            raise OllamaBadResponse(f"/api/show {model}: answered {type(payload).__name__}, expected an object")
        result = dict(payload)
        modelfile = result.get("modelfile")
        result["blob_paths"] = modelfile_from_paths(modelfile) if isinstance(modelfile, str) else []
        return result

    def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        keep_alive: int | str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Non-streaming /api/generate; returns the final JSON object."""
        body: dict[str, Any] = {"model": model, "stream": False}
        if prompt is not None:
            body["prompt"] = prompt
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if options:
            body["options"] = dict(options)
        payload = self._request("POST", "/api/generate", json_body=body, timeout_s=timeout_s)
        if not isinstance(payload, Mapping):
            raise OllamaBadResponse(f"/api/generate {model}: answered {type(payload).__name__}")
        if payload.get("error"):
            raise OllamaBadResponse(f"/api/generate {model}: {payload['error']}")
        return dict(payload)

    def unload(self, model: str) -> dict[str, Any]:
        """Soft unload (`ollama stop`): keep_alive 0, empty prompt. Answers at once; the unload
        itself waits for in-flight requests on that runner."""
        return self.generate(model, keep_alive=0)

    def ping_generate(self, model: str, timeout_s: float = 10.0) -> PingResult:
        """A one-token generation with a client timeout: the only end-to-end health check.
        Never raises for Ollama failures: they come back as ok=False with a one-line detail."""
        started = time.monotonic()
        try:
            payload = self.generate(model, "hi", options={"num_predict": 1}, timeout_s=timeout_s)
        except (OllamaUnreachable, OllamaBadResponse) as exc:
            return PingResult(False, time.monotonic() - started, exc.message)
        elapsed = time.monotonic() - started
        return PingResult(bool(payload.get("done", True)), elapsed, f"answered in {elapsed:.2f} s")


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


def _snippet(body: str, limit: int = 80) -> str:
    text = " ".join(body.split())
    if not text:
        return "(empty body)"
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _ollama_error(body: str) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
        return " ".join(str(payload["error"]).split())[:200]
    return None


def _read_capped(response: httpx.Response, where: str) -> bytes:
    """The body, refusing more than MAX_BODY_BYTES (declared or actually sent)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OllamaBadResponse(f"{where} answered {int(declared)} bytes, more than the {MAX_BODY_BYTES} we read")
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise OllamaBadResponse(f"{where} answered more than {MAX_BODY_BYTES} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_deep(payload: Any, limit: int) -> bool:
    """True when lists/objects nest deeper than `limit` (iterative: no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


