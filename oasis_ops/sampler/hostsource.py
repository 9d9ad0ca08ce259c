"""Where host-memory samples come from: this machine's probe, or the demo's simulated host.

In demo mode the Ollama emulator answers `GET /_demo/host` with a simulated, macOS-shaped host
(free pages falling, swap-outs climbing under its memory_pressure fault) because the real host
must not be stressed. Those samples are labelled `source="simulated"` everywhere they go (the
sidecar's host_samples.source column, `oasis-ops status`, the Live page). The demo-only endpoints are asked
only of a loopback Ollama URL (the emulator always runs locally: a remote server must never be
able to feed us a fake host) whose answers carry the emulator's mark (the `X-Oasis-Ops-Demo`
header, which no real Ollama sends), with a total deadline and a capped body.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from oasis_ops.errors import ProbeError
from oasis_ops.probes import HostSample, sample_host
from oasis_ops.probes.deadline import Deadline, DeadlineTransport
from oasis_ops.probes.host import Clock, utc_now
from oasis_ops.probes.ollama import resolve_ollama_host

SIMULATED_SOURCE = "simulated"
DEMO_HOST_PATH = "/_demo/host"
DEMO_HEADER = "X-Oasis-Ops-Demo"  # on every answer of the demo emulator, never on a real Ollama's
DEMO_MAX_BYTES = 64 * 1024  # a /_demo/host body is ~0.5 KB
# macOS kern.memorystatus_vm_pressure_level as the emulator reports it.
_LEVEL_NAMES = {1: "normal", 2: "warn", 4: "critical"}
# Pressure 0..100 -> level. Linux PSI `some avg10` percent (same thresholds as the probes);
# macOS levels (0/50/100) and the simulated severity (level 2 from 50, 4 from 85).
PSI_WARN, PSI_CRITICAL = 10.0, 40.0
LEVEL_WARN, LEVEL_CRITICAL = 50.0, 85.0


def pressure_level(pressure: float | None, source: str | None) -> str | None:
    """normal / warn / critical for a stored pressure value of a given source."""
    if pressure is None or pressure != pressure:  # None or NaN
        return None
    warn, critical = (PSI_WARN, PSI_CRITICAL) if (source or "").startswith("linux") else (LEVEL_WARN, LEVEL_CRITICAL)
    if pressure >= critical:
        return "critical"
    if pressure >= warn:
        return "warn"
    return "normal"


def is_simulated(source: str | None) -> bool:
    return source == SIMULATED_SOURCE


_MAX_COUNT = 2**63 - 1  # host_samples columns are BIGINT


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is loopback (127.0.0.0/8, ::1 or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(payload: dict[str, Any], key: str) -> float | None:
    """A finite number or None (absent / null); ProbeError on any other type or value."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProbeError(f"the demo's simulated host sent {key} as {type(value).__name__}, expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProbeError(f"the demo's simulated host sent {key} = {value}, expected a finite number")
    return value


def _count(payload: dict[str, Any], key: str) -> int | None:
    value = _number(payload, key)
    if value is None:
        return None
    if not 0 <= value <= _MAX_COUNT:
        raise ProbeError(f"the demo's simulated host sent {key} out of range 0..2^63-1")
    return int(value)


def host_sample_from_demo(payload: Any, ts: datetime | None = None) -> HostSample:
    """The emulator's /_demo/host body -> HostSample(source="simulated"), validated: a field of
    the wrong type or out of range raises ProbeError (one line, naming the field); an absent
    or null field is None. `ts` defaults to now (UTC)."""
    if not isinstance(payload, dict) or payload.get("simulated") is not True:
        raise ProbeError("the demo host endpoint answered something that is not a simulated host")
    pressure_value = _number(payload, "pressure")
    if pressure_value is not None and not 0 <= pressure_value <= 100:
        raise ProbeError(f"the demo's simulated host sent pressure = {pressure_value:.6g}, expected 0..100")
    pressure_value = None if pressure_value is None else float(pressure_value)
    raw_level = payload.get("pressure_level")
    if raw_level is not None and (isinstance(raw_level, bool) or not isinstance(raw_level, int)):
        raise ProbeError(
            f"the demo's simulated host sent pressure_level as {type(raw_level).__name__}, expected 1, 2 or 4"
        )
    level = _LEVEL_NAMES.get(raw_level) if raw_level is not None else None
    ts = ts or utc_now()
    return HostSample(
        ts=ts,
        mem_total_bytes=_count(payload, "mem_total_bytes"),
        mem_free_bytes=_count(payload, "mem_free_bytes"),
        mem_available_bytes=_count(payload, "mem_available_bytes"),
        page_size=_count(payload, "page_size"),
        pages_free=_count(payload, "pages_free"),
        swap_used_bytes=_count(payload, "swap_used_bytes"),
        swapins=_count(payload, "swapins"),
        swapouts=_count(payload, "swapouts"),
        pressure=pressure_value,
        source=SIMULATED_SOURCE,
        pressure_level=level or pressure_level(pressure_value, SIMULATED_SOURCE),
    )


def _capped_body(response: httpx.Response, max_bytes: int) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ValueError(f"answered more than {max_bytes} bytes")
    return bytes(body)


def is_demo_emulator(client: httpx.Client) -> bool:
    """Whether the server is the demo emulator: its /api/version answer carries DEMO_HEADER."""
    with client.stream("GET", "/api/version") as response:
        _capped_body(response, 4096)
        return response.headers.get(DEMO_HEADER) == "emulator"


def demo_json(client: httpx.Client, path: str, max_bytes: int = DEMO_MAX_BYTES) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of a demo-only endpoint, the body capped at max_bytes
    (ValueError beyond it, or for a body that is not JSON)."""
    with client.stream("GET", path) as response:
        body = _capped_body(response, max_bytes)
        return response.status_code, (json.loads(body) if response.status_code == 200 else None)


def serves_simulated(client: httpx.Client, deadline: Deadline, timeout_s: float, path: str, max_bytes: int = DEMO_MAX_BYTES) -> bool:
    """Whether `client`'s server is the demo emulator (its mark on /api/version) and its demo-only
    endpoint `path` answers a simulated body, all within one total deadline; False on any error."""
    deadline.at = time.monotonic() + timeout_s
    try:
        if not is_demo_emulator(client):
            return False
        status, payload = demo_json(client, path, max_bytes)
    except (httpx.HTTPError, ValueError, RecursionError):
        return False
    finally:
        deadline.at = None
    return status == 200 and isinstance(payload, dict) and payload.get("simulated") is True


class HostSource:
    """`sample()` -> HostSample from the demo's simulated host when the Ollama URL serves one,
    else from this machine. `detect()` decides (call it again when Ollama comes back)."""

    def __init__(
        self,
        ollama_url: str | None = None,
        *,
        timeout_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        real_probe: Callable[[], HostSample] | None = None,
    ) -> None:
        self.base_url = resolve_ollama_host(ollama_url)
        self.clock = clock
        self._real_probe = real_probe or (lambda: sample_host(clock=self.clock))
        self._deadline = Deadline()
        self._timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport or DeadlineTransport(self._deadline),
                                  trust_env=False)  # fmt: skip
        self.simulated = False
        self.loopback = is_loopback_url(self.base_url)  # only a local server may simulate the host

    def detect(self) -> bool:
        """True when the (loopback) Ollama URL serves a simulated host (the demo emulator)."""
        self.simulated = self.loopback and serves_simulated(self._http, self._deadline, self._timeout_s, DEMO_HOST_PATH)
        return self.simulated

    def sample(self) -> HostSample:
        if not self.simulated:
            return self._real_probe()
        self._deadline.at = time.monotonic() + self._timeout_s
        try:
            status, payload = demo_json(self._http, DEMO_HOST_PATH)
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            raise ProbeError(f"the demo's simulated host did not answer: {type(exc).__name__}") from None
        finally:
            self._deadline.at = None
        if status != 200:
            raise ProbeError(f"the demo's simulated host answered HTTP {status}")
        return host_sample_from_demo(payload, self.clock())

    def close(self) -> None:
        self._http.close()


DEMO_RUNNERS_PATH = "/_demo/runners"
DEMO_RUNNERS_MAX_BYTES = 256 * 1024


def emulated_models(
    ollama_url: str | None, *, timeout_s: float = 0.5, transport: httpx.BaseTransport | None = None
) -> frozenset[str]:
    """Models the demo emulator serves with its emulated engine (the incident's large models, a
    Python stand-in), so every screen can label them EMULATED; empty for any real Ollama, for a
    non-loopback URL, and on any error. The body is read up to DEMO_RUNNERS_MAX_BYTES only."""
    base = resolve_ollama_host(ollama_url)
    if not is_loopback_url(base):
        return frozenset()
    deadline = Deadline()
    deadline.at = time.monotonic() + timeout_s
    try:
        with httpx.Client(base_url=base, timeout=timeout_s, transport=transport or DeadlineTransport(deadline), trust_env=False) as client:
            if not is_demo_emulator(client):
                return frozenset()
            status, payload = demo_json(client, DEMO_RUNNERS_PATH, DEMO_RUNNERS_MAX_BYTES)
    except (httpx.HTTPError, ValueError, RecursionError):
        return frozenset()
    if status != 200:
        return frozenset()
    runners = payload.get("runners") if isinstance(payload, dict) else None
    if not isinstance(runners, list):
        return frozenset()
    return frozenset(str(r["model"]) for r in runners
                     if isinstance(r, dict) and r.get("engine") == "emulated" and isinstance(r.get("model"), str))
