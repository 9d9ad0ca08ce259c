"""GPUs: memory, utilisation, temperature and power per GPU, and the VRAM each process holds.

Asked in order, the first that answers wins:
1. NVML (PyPI `nvidia-ml-py`, module `pynvml`, imported lazily): an absent module, an absent
   libnvidia-ml or no driver is "no NVIDIA GPU", never an error.
2. `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` and `--query-compute-apps=...`
   (MiB; `[N/A]` and `[Not Supported]` are unknown).
3. `rocm-smi --showmeminfo vram --showuse --showtemp --showpower --showpids --json` (AMD).
Sources are arguments (`nvml`: a pynvml-like module; `run`: argv -> stdout; `which`), so tests
feed recorded outputs. `read()` never raises; `note` says why each skipped source was skipped.
On a Mac there is no NVML, nvidia-smi or rocm-smi: GPU memory is host memory there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MIB = 1024 * 1024
RUN_TIMEOUT_S = 2.0
MAX_OUTPUT_BYTES = 1024 * 1024
GPU_QUERY = "index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,power.draw"
APPS_QUERY = "pid,gpu_uuid,used_memory"
ROCM_ARGS = ["--showmeminfo", "vram", "--showuse", "--showtemp", "--showpower", "--showpids", "--json"]


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str | None
    name: str
    vendor: str  # nvidia | amd
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    utilization_percent: float | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str | None
    gpu_index: int | None
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuSnapshot:
    ts: datetime
    source: str  # nvml | nvidia-smi | rocm-smi | none
    gpus: list[GpuReading] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    note: str | None = None

    def vram_of(self, pid: int | None) -> int | None:
        """VRAM `pid` holds on all GPUs (None: not listed, or not reported)."""
        held = [p.used_memory_bytes for p in self.processes if p.pid == pid and p.used_memory_bytes is not None]
        return sum(held) if held else None

    def as_rows(self) -> list[dict[str, Any]]:
        """gpu_samples rows (sidecar migration 008)."""
        return [{"ts": self.ts, "gpu_index": g.index, "gpu_uuid": g.uuid, "name": g.name, "vendor": g.vendor,
                 "memory_total_bytes": g.memory_total_bytes, "memory_used_bytes": g.memory_used_bytes,
                 "memory_free_bytes": g.memory_free_bytes, "utilization_percent": g.utilization_percent,
                 "temperature_c": g.temperature_c, "power_w": g.power_w, "source": self.source} for g in self.gpus]  # fmt: skip


def _number(text: Any) -> float | None:
    """A CSV or JSON field: `[N/A]`, `[Not Supported]`, `N/A`, '' -> None; `123 MiB` -> 123."""
    value = str(text).strip().split(" ")[0] if text is not None else ""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None


def _mib(text: Any) -> int | None:
    number = _number(text)
    return None if number is None else int(number * MIB)


def parse_nvidia_smi_csv(gpus_text: str, apps_text: str = "") -> tuple[list[GpuReading], list[GpuProcess]]:
    """`--query-gpu=GPU_QUERY` and `--query-compute-apps=APPS_QUERY` (csv,noheader,nounits)."""
    gpus = []
    for line in gpus_text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(GPU_QUERY.split(",")) or _number(cells[0]) is None:
            continue
        gpus.append(GpuReading(int(_number(cells[0]) or 0), cells[1] or None, cells[2], "nvidia", _mib(cells[3]), _mib(cells[4]),
                               _mib(cells[5]), _number(cells[6]), _number(cells[7]), _number(cells[8])))  # fmt: skip
    by_uuid = {g.uuid: g.index for g in gpus}
    apps = []
    for line in apps_text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 3 or _number(cells[0]) is None:
            continue
        apps.append(GpuProcess(int(_number(cells[0]) or 0), cells[1] or None, by_uuid.get(cells[1]), _mib(cells[2])))
    return gpus, apps


def parse_rocm_smi_json(text: str) -> tuple[list[GpuReading], list[GpuProcess]]:
    """rocm-smi --json: {"card0": {"VRAM Total Memory (B)": "...", "GPU use (%)": "...", ...}, "system": {...}}."""
    data = json.loads(text)
    gpus, procs = [], []
    if not isinstance(data, dict):
        return [], []
    for key, card in data.items():
        if not (isinstance(card, dict) and key.startswith("card") and key[4:].isdigit()):
            continue
        total, used = _number(card.get("VRAM Total Memory (B)")), _number(card.get("VRAM Total Used Memory (B)"))
        temp = next((_number(v) for k, v in card.items() if k.startswith("Temperature") and "edge" in k), None)
        power = next((_number(v) for k, v in card.items() if "Package Power (W)" in k), None)
        name = str(card.get("Card Series") or card.get("Card series") or f"AMD GPU {key[4:]}")
        gpus.append(GpuReading(int(key[4:]), str(card["Unique ID"]) if card.get("Unique ID") else None, name, "amd",
                               int(total) if total is not None else None, int(used) if used is not None else None,
                               int(total - used) if total is not None and used is not None else None,
                               _number(card.get("GPU use (%)")), temp, power))  # fmt: skip
    raw_system = data.get("system")
    system: dict[str, Any] = raw_system if isinstance(raw_system, dict) else {}
    for key, value in system.items():  # "PID1234": "python, 1, 1024, 0, unknown" (name, gpus, vram bytes, ...)
        if key.startswith("PID") and key[3:].isdigit():
            parts = [p.strip() for p in str(value).split(",")]
            vram = _number(parts[2]) if len(parts) > 2 else None
            procs.append(GpuProcess(int(key[3:]), None, None, int(vram) if vram is not None else None))
    return gpus, procs


def _default_nvml() -> Any:
    import pynvml  # lazily: PyPI nvidia-ml-py; only machines that look for GPUs pay for it

    return pynvml


def _default_run(argv: list[str], timeout_s: float) -> str:
    proc = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=True, stdin=subprocess.DEVNULL)
    return proc.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


class GpuProbe:
    def __init__(self, *, nvml: Any = None, run: Callable[[list[str], float], str] = _default_run,
                 which: Callable[[str], str | None] = shutil.which, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 load_nvml: Callable[[], Any] = _default_nvml) -> None:  # fmt: skip
        self.nvml = nvml
        self.run = run
        self.which = which
        self.clock = clock
        self.load_nvml = load_nvml

    def read(self) -> GpuSnapshot:
        notes: list[str] = []
        for name, reader in (("nvml", self._nvml), ("nvidia-smi", self._nvidia_smi), ("rocm-smi", self._rocm_smi)):
            try:
                found = reader()
            except Exception as exc:  # noqa: BLE001 - a GPU tool that breaks is "no answer", never a crash
                notes.append(f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
                continue
            if isinstance(found, str):
                notes.append(f"{name}: {found}")
                continue
            gpus, procs = found
            if gpus:
                return GpuSnapshot(self.clock(), name, gpus, procs, "; ".join(notes) or None)
            notes.append(f"{name}: no GPU listed")
        return GpuSnapshot(self.clock(), "none", [], [], "; ".join(notes))

    def _nvml(self) -> tuple[list[GpuReading], list[GpuProcess]] | str:
        try:
            nvml = self.nvml if self.nvml is not None else self.load_nvml()
        except ImportError:
            return "nvidia-ml-py not installed"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"no NVIDIA driver ({exc})"
        try:
            gpus, procs = [], []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                utilization = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
                temperature = _optional(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
                milliwatts = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
                gpus.append(GpuReading(index, uuid, _text(nvml.nvmlDeviceGetName(handle)), "nvidia", int(memory.total),
                                       int(memory.used), int(memory.free),
                                       float(utilization.gpu) if utilization is not None else None,
                                       float(temperature) if temperature is not None else None,
                                       milliwatts / 1000.0 if milliwatts is not None else None))  # fmt: skip
                for proc in _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
                    used = getattr(proc, "usedGpuMemory", None)
                    procs.append(GpuProcess(int(proc.pid), uuid, index, int(used) if isinstance(used, int) else None))
            return gpus, procs
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass

    def _nvidia_smi(self) -> tuple[list[GpuReading], list[GpuProcess]] | str:
        if self.which("nvidia-smi") is None:
            return "not installed"
        gpus_text = self.run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"], RUN_TIMEOUT_S)
        apps_text = self.run(["nvidia-smi", f"--query-compute-apps={APPS_QUERY}", "--format=csv,noheader,nounits"], RUN_TIMEOUT_S)
        return parse_nvidia_smi_csv(gpus_text, apps_text)

    def _rocm_smi(self) -> tuple[list[GpuReading], list[GpuProcess]] | str:
        if self.which("rocm-smi") is None:
            return "not installed"
        return parse_rocm_smi_json(self.run(["rocm-smi", *ROCM_ARGS], RUN_TIMEOUT_S))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(nvml: Any, call: Callable[..., Any], *args: Any) -> Any:
    """An NVML figure a GPU may not support (NVMLError_NotSupported on many consumer cards): None."""
    try:
        return call(*args)
    except nvml.NVMLError:
        return None
