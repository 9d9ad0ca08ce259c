"""Linux host memory from a /proc root: meminfo, vmstat, pressure/memory (PSI).

The /proc root is an argument so tests feed a directory of fixture files. A junk line is
skipped, never fatal; a missing meminfo is a ProbeError (nothing useful can be said without it).
"""

from __future__ import annotations

import os
from pathlib import Path

from oasis_ops.errors import ProbeError
from oasis_ops.probes.host import Clock, HostSample, psi_level, utc_now

_UNIT_BYTES = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_meminfo(text: str) -> dict[str, int]:
    """`MemTotal:  24604516 kB` -> {"MemTotal": 25194024384} (bytes; unitless lines as-is)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            number = int(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else "b"
        values[key.strip()] = number * _UNIT_BYTES.get(unit, 1)
    return values


def parse_vmstat(text: str) -> dict[str, int]:
    """`pswpout 504282` -> {"pswpout": 504282}."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            values[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return values


def parse_psi(text: str) -> dict[str, dict[str, float]]:
    """`some avg10=37.21 avg60=... total=...` -> {"some": {"avg10": 37.21, ...}, "full": {...}}."""
    result: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        entry: dict[str, float] = {}
        for item in parts[1:]:
            key, sep, value = item.partition("=")
            if not sep:
                continue
            try:
                entry[key] = float(value)
            except ValueError:
                continue
        result[parts[0]] = entry
    return result


def system_page_size() -> int | None:
    try:
        size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return size if size > 0 else None


def sample_linux(
    proc_root: str | os.PathLike[str] = "/proc",
    page_size: int | None = None,
    clock: Clock = utc_now,
) -> HostSample:
    """One HostSample from <proc_root>/meminfo, vmstat and pressure/memory (when present)."""
    root = Path(proc_root)
    meminfo_text = _read(root / "meminfo")
    if meminfo_text is None:
        raise ProbeError(f"{root / 'meminfo'} does not exist", hint="is this a Linux /proc root?")
    meminfo = parse_meminfo(meminfo_text)
    if "MemTotal" not in meminfo:
        raise ProbeError(f"{root / 'meminfo'} has no MemTotal line")
    vmstat = parse_vmstat(_read(root / "vmstat") or "")
    psi_text = _read(root / "pressure" / "memory")
    psi = parse_psi(psi_text) if psi_text else {}

    page_size = page_size or system_page_size()
    free_bytes = meminfo.get("MemFree")
    pages_free = vmstat.get("nr_free_pages")
    if pages_free is None and free_bytes is not None and page_size:
        pages_free = free_bytes // page_size
    swap_total = meminfo.get("SwapTotal")
    swap_free = meminfo.get("SwapFree")
    swap_used = swap_total - swap_free if swap_total is not None and swap_free is not None else None
    pressure = psi.get("some", {}).get("avg10")
    if pressure is not None:
        pressure = max(0.0, min(100.0, pressure))
    return HostSample(
        ts=clock(),
        mem_total_bytes=meminfo.get("MemTotal"),
        mem_free_bytes=free_bytes,
        mem_available_bytes=meminfo.get("MemAvailable"),
        page_size=page_size,
        pages_free=pages_free,
        swap_used_bytes=swap_used,
        swapins=vmstat.get("pswpin"),
        swapouts=vmstat.get("pswpout"),
        pressure=pressure,
        source="linux:/proc",
        pressure_level=psi_level(pressure),
        swap_total_bytes=swap_total,
    )
