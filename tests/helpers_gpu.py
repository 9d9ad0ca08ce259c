"""A pynvml-like module for the GPU probe's NVML seam (answers in NVML's shapes and units)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


def fake_nvml(*, init_error: Exception | None = None, power: bool = True) -> Any:
    """pynvml's calls with the shapes NVML answers (bytes for memory, mW for power)."""
    calls: list[str] = []

    def get_power(handle: int) -> int:
        if not power:
            raise NotSupported("Not Supported")
        return 215_412

    def init() -> None:
        calls.append("init")
        if init_error:
            raise init_error

    return SimpleNamespace(
        NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, calls=calls,
        nvmlInit=init, nvmlShutdown=lambda: calls.append("shutdown"), nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetUUID=lambda h: "GPU-5f1e0c2a-aaaa",
        nvmlDeviceGetName=lambda h: b"NVIDIA GeForce RTX 4090",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=25_757_220_864, used=21_474_836_480, free=4_282_384_384),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=97, memory=40),
        nvmlDeviceGetTemperature=lambda h, sensor: 71, nvmlDeviceGetPowerUsage=get_power,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=4242, usedGpuMemory=20_000_000_000),
                                                        SimpleNamespace(pid=99, usedGpuMemory=None)],
    )  # fmt: skip


