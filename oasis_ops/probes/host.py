"""Host memory: one platform-neutral sample, shaped like the sidecar's `host_samples` row.

`sample_host()` picks the platform probe (Linux /proc, macOS vm_stat + sysctl). Every field the
source cannot give is None; a field is never guessed (in particular the page size: a 4096-byte
assumption understates Apple Silicon memory 4x).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]

# Linux PSI `some avg10` (percent of wall time some task stalled on memory) -> level label.
# Chosen so "warn" means noticeable stalls and "critical" means most of the time stalled.
PSI_WARN_PERCENT = 10.0
PSI_CRITICAL_PERCENT = 40.0

# macOS kern.memorystatus_vm_pressure_level -> (pressure 0..100, label)
MACOS_PRESSURE_LEVELS: dict[int, tuple[float, str]] = {
    1: (0.0, "normal"),
    2: (50.0, "warn"),
    4: (100.0, "critical"),
}

HOST_SAMPLE_COLUMNS = (
    "ts",
    "mem_total_bytes",
    "mem_free_bytes",
    "mem_available_bytes",
    "page_size",
    "pages_free",
    "swap_used_bytes",
    "swapins",
    "swapouts",
    "pressure",
    "source",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HostSample:
    """One host-memory reading. `swapins`/`swapouts` are the OS's cumulative page counters
    (rates are the consumer's job); `pressure` is 0..100 (Linux PSI some avg10, macOS level
    1/2/4 -> 0/50/100); `pressure_level` is "normal" / "warn" / "critical" or None."""

    ts: datetime
    mem_total_bytes: int | None
    mem_free_bytes: int | None
    mem_available_bytes: int | None
    page_size: int | None
    pages_free: int | None
    swap_used_bytes: int | None
    swapins: int | None
    swapouts: int | None
    pressure: float | None
    source: str
    pressure_level: str | None = None
    swap_total_bytes: int | None = None

    def as_row(self) -> dict[str, Any]:
        """Exactly the sidecar's host_samples columns, in order."""
        return {name: getattr(self, name) for name in HOST_SAMPLE_COLUMNS}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = self.ts.isoformat()
        return data


def host_sample_fields() -> list[str]:
    return [f.name for f in fields(HostSample)]


def psi_level(pressure: float | None) -> str | None:
    if pressure is None:
        return None
    if pressure >= PSI_CRITICAL_PERCENT:
        return "critical"
    if pressure >= PSI_WARN_PERCENT:
        return "warn"
    return "normal"


def human_bytes(n: int | float | None) -> str:
    """Decimal units (1 MB = 10^6 B), one decimal: 956858368 -> "956.9 MB"."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000.0 or unit == "TB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000.0
    raise AssertionError("unreachable")


def sample_host(
    *,
    proc_root: str = "/proc",
    run: Callable[[list[str]], str] | None = None,
    clock: Clock = utc_now,
    platform: str | None = None,
) -> HostSample:
    """Sample this machine's memory with the probe for its platform."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        from oasis_ops.probes.linux import sample_linux

        return sample_linux(proc_root=proc_root, clock=clock)
    if platform == "darwin":
        from oasis_ops.probes.macos import default_runner, sample_macos

        return sample_macos(run=run or default_runner, clock=clock)
    from oasis_ops.errors import ProbeError

    raise ProbeError(f"no host-memory probe for platform {platform!r}", hint="Linux and macOS are supported")
