"""macOS host memory from `vm_stat` and `sysctl` output.

The page size is read from vm_stat's own header ("page size of 16384 bytes" on Apple Silicon,
4096 on Intel), never assumed. The commands are run through a `run(argv) -> str` callable so
tests feed recorded output; the default runner sets LC_ALL=C so numbers come out in the C
locale, and `vm.swapusage` is read in both decimal forms anyway (`2048.00M`, and `2048,00M`
as printed under a comma-decimal locale such as de_DE or fr_FR).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

from oasis_ops.errors import ProbeError
from oasis_ops.probes.host import MACOS_PRESSURE_LEVELS, Clock, HostSample, utc_now

Runner = Callable[[list[str]], str]

VM_STAT_ARGV = ["vm_stat"]
SYSCTL_ARGV = [
    "sysctl",
    "vm.swapusage",
    "kern.memorystatus_vm_pressure_level",
    "hw.memsize",
    "hw.pagesize",
    "machdep.cpu.brand_string",
]

_HEADER = re.compile(r"page size of (\d+) bytes", re.IGNORECASE)
_COUNTER = re.compile(r'^\s*"?([^":]+?)"?\s*:\s*(-?\d+)\.?\s*$')
_SWAP_PART = re.compile(r"(total|used|free)\s*=\s*(\d[\d.,]*)\s*([KMGTP]?)", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def parse_vm_stat(text: str) -> dict[str, Any]:
    """Every counter of `vm_stat` output, snake_cased ("Pages free" -> pages_free), plus
    `page_size` (from the header; None when the header is missing) and `mem_free_bytes`
    (pages_free * page_size, or None). Junk lines are skipped; no counter at all is an error."""
    result: dict[str, Any] = {"page_size": None}
    counters = 0
    for line in text.splitlines():
        header = _HEADER.search(line)
        if header:
            result["page_size"] = int(header.group(1))
            continue
        match = _COUNTER.match(line)
        if not match:
            continue
        key = _snake(match.group(1))
        if not key:
            continue
        result[key] = int(match.group(2))
        counters += 1
    if counters == 0:
        raise ProbeError("vm_stat output has no counters", hint=f"got {text[:60]!r}")
    page_size = result["page_size"]
    pages_free = result.get("pages_free")
    result["mem_free_bytes"] = pages_free * page_size if page_size and pages_free is not None else None
    return result


def _decimal(number: str) -> float:
    """'2048.00' or '2048,00' (comma-decimal locale); with both marks the last one is the
    decimal point and the other groups thousands ('1.024,50', '1,024.50')."""
    number = number.rstrip(".,")
    point = max(number.rfind("."), number.rfind(","))
    if point < 0:
        return float(number)
    whole = number[:point].replace(".", "").replace(",", "")
    return float(f"{whole}.{number[point + 1:]}")


def _size_bytes(number: str, unit: str) -> int:
    return int(round(_decimal(number) * _SIZE_UNIT[unit.upper()]))


def parse_sysctl(text: str) -> dict[str, Any]:
    """`sysctl` output ("key: value" or "key = value" lines) -> raw values under `raw` plus:
    swap_total_bytes / swap_used_bytes / swap_free_bytes / swap_encrypted (vm.swapusage, M = MiB),
    pressure_level (1/2/4), pressure (0/50/100), pressure_level_label, mem_total_bytes
    (hw.memsize), page_size (hw.pagesize), cpu_brand and apple_silicon (None when unknown)."""
    raw: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(?::|=)\s*(.*?)\s*$", line)
        if match:
            raw[match.group(1)] = match.group(2)
    result: dict[str, Any] = {"raw": raw}

    swap = raw.get("vm.swapusage")
    if swap is not None:
        for part, number, unit in _SWAP_PART.findall(swap):
            result[f"swap_{part.lower()}_bytes"] = _size_bytes(number, unit)
        result["swap_encrypted"] = "encrypted" in swap.lower()

    level_text = raw.get("kern.memorystatus_vm_pressure_level")
    if level_text is not None and level_text.strip().lstrip("-").isdigit():
        level = int(level_text)
        result["pressure_level"] = level
        pressure, label = MACOS_PRESSURE_LEVELS.get(level, (None, None))
        result["pressure"] = pressure
        result["pressure_level_label"] = label

    for key, name in (("hw.memsize", "mem_total_bytes"), ("hw.pagesize", "page_size")):
        value = raw.get(key)
        if value is not None and value.isdigit():
            result[name] = int(value)

    brand = raw.get("machdep.cpu.brand_string")
    if brand is not None:
        result["cpu_brand"] = brand
        result["apple_silicon"] = brand.startswith("Apple")
    elif result.get("page_size") == 16384:
        result["apple_silicon"] = True
    else:
        result["apple_silicon"] = None
    return result


def default_runner(argv: list[str], timeout_s: float = 5.0) -> str:
    """Run a command and return its stdout; sysctl exits non-zero on one unknown key but
    still prints the others, so only an empty stdout counts as failure."""
    env = dict(os.environ, LC_ALL="C", LANG="C")  # C-locale numbers (no `2048,00M`)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    except FileNotFoundError:
        raise ProbeError(f"{argv[0]} not found", hint="not macOS?") from None
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{argv[0]} did not answer within {timeout_s:g} s") from None
    if not done.stdout.strip():
        raise ProbeError(f"{argv[0]} printed nothing (exit {done.returncode}): {done.stderr.strip()[:200]}")
    return done.stdout


def sample_macos(run: Runner = default_runner, clock: Clock = utc_now) -> HostSample:
    """One HostSample from `vm_stat` and `sysctl`. Free memory is vm_stat's "Pages free"
    (free minus speculative, as psutil reports it); available is free + speculative + inactive
    (psutil's definition). sysctl failing only blanks its fields."""
    vm = parse_vm_stat(run(list(VM_STAT_ARGV)))
    try:
        sysctl = parse_sysctl(run(list(SYSCTL_ARGV)))
    except ProbeError:
        sysctl = {}
    page_size = vm.get("page_size") or sysctl.get("page_size")
    pages_free = vm.get("pages_free")

    def pages_to_bytes(*names: str) -> int | None:
        counts = [vm.get(n) for n in names]
        if not page_size or any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None) * page_size

    return HostSample(
        ts=clock(),
        mem_total_bytes=sysctl.get("mem_total_bytes"),
        mem_free_bytes=pages_to_bytes("pages_free"),
        mem_available_bytes=pages_to_bytes("pages_free", "pages_speculative", "pages_inactive"),
        page_size=page_size,
        pages_free=pages_free,
        swap_used_bytes=sysctl.get("swap_used_bytes"),
        swapins=vm.get("swapins"),
        swapouts=vm.get("swapouts"),
        pressure=sysctl.get("pressure"),
        source="macos:vm_stat",
        pressure_level=sysctl.get("pressure_level_label"),
        swap_total_bytes=sysctl.get("swap_total_bytes"),
    )
