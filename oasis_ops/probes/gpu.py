"""GPUs: memory, utilisation, temperature and power per GPU, and the VRAM each process holds.

Asked in order, the first that answers wins:
1. NVML (PyPI `nvidia-ml-py`, module `pynvml`, imported lazily): an absent module, an absent
   libnvidia-ml or no driver is "no NVIDIA GPU", never an error.
2. `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` and `--query-compute-apps=...`
   (MiB; `[N/A]` and `[Not Supported]` are unknown), else `nvidia-smi -q -x` (XML) when the
   query lists no GPU. The parsers also read headed CSV (`--format=csv`, units in the header or
   the values) and XML from several drivers, as recorded in tests/fixtures/gpu.
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


def _split_csv(line: str) -> list[str]:
    return [c.strip() for c in line.split(",")]


# Header names of `--format=csv` (with or without nounits) for the fields the probe reads: the
# query field, or its header spelling where nvidia-smi prints another (`used_memory` is headed
# `used_gpu_memory`). A header cell is "name [unit]".
_GPU_FIELDS = {"index": "index", "uuid": "uuid", "name": "name", "memory.total": "memory.total",
               "memory.used": "memory.used", "memory.free": "memory.free", "utilization.gpu": "utilization.gpu",
               "temperature.gpu": "temperature.gpu", "power.draw": "power.draw", "power.draw.instant": "power.draw"}  # fmt: skip
_APP_FIELDS = {"pid": "pid", "gpu_uuid": "gpu_uuid", "used_memory": "used_memory", "used_gpu_memory": "used_memory"}


def _header(cells: list[str], fields: dict[str, str]) -> dict[str, int] | None:
    """{field: column} when `cells` is a `--format=csv` header naming at least one known field."""
    names = [cell.split(" [", 1)[0].strip() for cell in cells]
    found: dict[str, int] = {}
    for column, name in enumerate(names):
        if name in fields and fields[name] not in found:
            found[fields[name]] = column
    return found or None


def _table(text: str, noheader_fields: str, fields: dict[str, str]) -> list[dict[str, str]]:
    """Rows of nvidia-smi CSV as {field: cell}: headed (`--format=csv[,nounits]`, any columns,
    in any order) or headerless in the order of `noheader_fields` (`csv,noheader,nounits`)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = _header(_split_csv(lines[0]), fields)
    if header is not None and "pid" not in header and "index" not in header and "name" not in header:
        header = None
    if header is not None:
        rows = []
        for line in lines[1:]:
            cells = _split_csv(line)
            if len(cells) < max(header.values()) + 1:
                continue  # a warning line nvidia-smi printed among the rows
            rows.append({name: cells[column] for name, column in header.items()})
        return rows
    order = noheader_fields.split(",")
    return [dict(zip(order, cells, strict=True)) for cells in map(_split_csv, lines) if len(cells) == len(order)]


def parse_nvidia_smi_csv(gpus_text: str, apps_text: str = "") -> tuple[list[GpuReading], list[GpuProcess]]:
    """`--query-gpu=GPU_QUERY` and `--query-compute-apps=APPS_QUERY` as the probe asks them
    (`csv,noheader,nounits`), or any `--format=csv` output with a header (units in the header
    or in the values, more or other columns, as users and exporters record it)."""
    gpus = []
    for position, row in enumerate(_table(gpus_text, GPU_QUERY, _GPU_FIELDS)):
        index = _number(row.get("index")) if "index" in row else float(position)
        if index is None:
            continue
        used, total, free = _mib(row.get("memory.used")), _mib(row.get("memory.total")), _mib(row.get("memory.free"))
        if total is None and used is not None and free is not None:
            total = used + free  # a capture without memory.total (reserved memory is not in either)
        gpus.append(GpuReading(int(index), row.get("uuid") or None, row.get("name") or f"GPU {int(index)}", "nvidia", total, used,
                               free, _number(row.get("utilization.gpu")), _number(row.get("temperature.gpu")),
                               _number(row.get("power.draw"))))  # fmt: skip
    by_uuid = {g.uuid: g.index for g in gpus}
    apps = []
    for row in _table(apps_text, APPS_QUERY, _APP_FIELDS):
        pid = _number(row.get("pid"))
        if pid is None:
            continue
        uuid = row.get("gpu_uuid") or None
        apps.append(GpuProcess(int(pid), uuid, by_uuid.get(uuid), _mib(row.get("used_memory"))))
    return gpus, apps


def _xml_text(node: Any, path: str) -> str | None:
    found = node.find(path)
    return found.text.strip() if found is not None and found.text is not None else None


def parse_nvidia_smi_xml(text: str) -> tuple[list[GpuReading], list[GpuProcess]]:
    """`nvidia-smi -q -x`: per <gpu>, fb_memory_usage (MiB), utilization/gpu_util, temperature/
    gpu_temp, power_readings/power_draw (gpu_power_readings from driver 535; instant_power_draw
    where a driver prints that), and each processes/process_info's pid and used_memory."""
    import xml.etree.ElementTree as ET  # noqa: S405 - a local tool's output; expat refuses entity expansion bombs

    root = ET.fromstring(text)  # noqa: S314
    gpus, procs = [], []
    for position, gpu in enumerate(root.findall("gpu")):
        index = _number(_xml_text(gpu, "minor_number"))
        index = int(index) if index is not None else position
        uuid = _xml_text(gpu, "uuid")
        power = None
        for path in ("gpu_power_readings/power_draw", "gpu_power_readings/instant_power_draw", "power_readings/power_draw",
                     "power_readings/instant_power_draw"):  # fmt: skip
            power = _number(_xml_text(gpu, path))
            if power is not None:
                break
        gpus.append(GpuReading(index, uuid, _xml_text(gpu, "product_name") or f"GPU {index}", "nvidia",
                               _mib(_xml_text(gpu, "fb_memory_usage/total")), _mib(_xml_text(gpu, "fb_memory_usage/used")),
                               _mib(_xml_text(gpu, "fb_memory_usage/free")), _number(_xml_text(gpu, "utilization/gpu_util")),
                               _number(_xml_text(gpu, "temperature/gpu_temp")), power))  # fmt: skip
        for proc in gpu.findall("processes/process_info"):
            pid = _number(_xml_text(proc, "pid"))
            if pid is not None:
                procs.append(GpuProcess(int(pid), uuid, index, _mib(_xml_text(proc, "used_memory"))))
    return gpus, procs


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
        gpus, procs = parse_nvidia_smi_csv(gpus_text)
        if not gpus:  # a driver that refuses one of the fields: its XML report has them all
            try:
                return parse_nvidia_smi_xml(self.run(["nvidia-smi", "-q", "-x"], RUN_TIMEOUT_S))
            except SyntaxError:  # xml.etree's ParseError: not an XML report either
                return "no GPU listed (nor in its -q -x report)"
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
