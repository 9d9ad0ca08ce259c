"""Where host-memory samples come from: this machine's probe, or the demo's simulated host.

In demo mode the Ollama emulator answers `GET /_demo/host` with a simulated, macOS-shaped host
(free pages falling, swap-outs climbing under its memory_pressure fault) because the real host
must not be stressed. Those samples are labelled `source="simulated"` everywhere they go (the
sidecar's host_samples.source column, `oasis-ops status`, the Live page). A real Ollama answers
404 there, so against a real server the real probe is used.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from oasis_ops.errors import ProbeError
from oasis_ops.probes import HostSample, sample_host
from oasis_ops.probes.host import Clock, utc_now
from oasis_ops.probes.ollama import resolve_ollama_host

SIMULATED_SOURCE = "simulated"
DEMO_HOST_PATH = "/_demo/host"
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


def _int(payload: dict[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def host_sample_from_demo(payload: Any, ts: datetime) -> HostSample:
    """The emulator's /_demo/host body -> HostSample(source="simulated")."""
    if not isinstance(payload, dict) or not payload.get("simulated"):
        raise ProbeError("the demo host endpoint answered something that is not a simulated host")
    pressure = payload.get("pressure")
    pressure_value = float(pressure) if isinstance(pressure, int | float) and not isinstance(pressure, bool) else None
    raw_level = payload.get("pressure_level")
    level = _LEVEL_NAMES.get(raw_level) if isinstance(raw_level, int) else None
    return HostSample(
        ts=ts,
        mem_total_bytes=_int(payload, "mem_total_bytes"),
        mem_free_bytes=_int(payload, "mem_free_bytes"),
        mem_available_bytes=_int(payload, "mem_available_bytes"),
        page_size=_int(payload, "page_size"),
        pages_free=_int(payload, "pages_free"),
        swap_used_bytes=_int(payload, "swap_used_bytes"),
        swapins=_int(payload, "swapins"),
        swapouts=_int(payload, "swapouts"),
        pressure=pressure_value,
        source=SIMULATED_SOURCE,
        pressure_level=level or pressure_level(pressure_value, SIMULATED_SOURCE),
    )


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
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport, trust_env=False)
        self.simulated = False

    def detect(self) -> bool:
        """True when the Ollama URL serves a simulated host (the demo emulator)."""
        try:
            response = self._http.get(DEMO_HOST_PATH)
            payload = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            payload = None
        self.simulated = isinstance(payload, dict) and bool(payload.get("simulated"))
        return self.simulated

    def sample(self) -> HostSample:
        if not self.simulated:
            return self._real_probe()
        try:
            response = self._http.get(DEMO_HOST_PATH)
            payload = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProbeError(f"the demo's simulated host did not answer: {type(exc).__name__}") from None
        return host_sample_from_demo(payload, self.clock())

    def close(self) -> None:
        self._http.close()
