"""Where GPU reads come from: this machine's (NVML, nvidia-smi, rocm-smi), or the demo's simulated GPU.

With `oasis-ops demo --gpu` the Ollama emulator presents one NVIDIA card at `GET /_demo/gpu`:
nvidia-smi's two CSV answers, built on its clock (oasis_ops.demo.gpu). They are parsed by the
same parser as a real nvidia-smi's output and labelled `source="simulated"` (gpu_samples.source,
`status`, the Live page). As for the simulated host, the demo-only endpoint is asked only of a
loopback Ollama URL whose answers carry the emulator's mark, with a total deadline and a capped
body; any other Ollama is never asked, and this machine's GPUs are read instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from oasis_ops.probes.deadline import Deadline, DeadlineTransport
from oasis_ops.probes.gpu import GpuSnapshot, parse_nvidia_smi_csv
from oasis_ops.probes.ollama import resolve_ollama_host
from oasis_ops.sampler.hostsource import (
    SIMULATED_SOURCE,
    demo_json,
    is_loopback_url,
    serves_simulated,
)

DEMO_GPU_PATH = "/_demo/gpu"
DEMO_GPU_MAX_BYTES = 64 * 1024  # a /_demo/gpu body is ~0.3 KB
REDETECT_S = 60.0  # a demo (or a --gpu emulator) started after the sampler is found within a minute


class GpuSource:
    """`read()` -> GpuSnapshot: the demo's simulated GPU when the Ollama URL serves one, else
    `real.read()` (oasis_ops.probes.gpu.GpuProbe, built lazily). Never raises."""

    def __init__(self, ollama_url: str | None = None, *, real: Any = None, timeout_s: float = 1.0,
                 transport: httpx.BaseTransport | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.base_url = resolve_ollama_host(ollama_url)
        self.loopback = is_loopback_url(self.base_url)
        self.clock = clock
        self.monotonic = monotonic
        self._real = real
        self._timeout_s = timeout_s
        self._deadline = Deadline()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport or DeadlineTransport(self._deadline),
                                  trust_env=False)  # fmt: skip
        self.simulated = False
        self._detect_at = float("-inf")

    @property
    def real(self) -> Any:
        if self._real is None:
            from oasis_ops.probes.gpu import GpuProbe  # lazily: NVML only when a GPU is read

            self._real = GpuProbe()
        return self._real

    def _ask(self) -> tuple[int, Any]:
        self._deadline.at = time.monotonic() + self._timeout_s
        try:
            return demo_json(self._http, DEMO_GPU_PATH, DEMO_GPU_MAX_BYTES)
        finally:
            self._deadline.at = None

    def detect(self) -> bool:
        """True when the (loopback) Ollama URL is the demo emulator presenting a GPU."""
        self._detect_at = self.monotonic() + REDETECT_S
        self.simulated = self.loopback and serves_simulated(self._http, self._deadline, self._timeout_s, DEMO_GPU_PATH, DEMO_GPU_MAX_BYTES)
        return self.simulated

    def read(self) -> GpuSnapshot:
        if not self.simulated and self.monotonic() >= self._detect_at:
            self.detect()
        if not self.simulated:
            return self.real.read()  # type: ignore[no-any-return]
        try:
            status, payload = self._ask()
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            self.simulated = False  # the demo went away: look again at the next read
            self._detect_at = float("-inf")
            return GpuSnapshot(self.clock(), "none", [], [], f"the demo's simulated GPU did not answer: {type(exc).__name__}")
        return snapshot_from_demo(status, payload, self.clock())

    def close(self) -> None:
        self._http.close()


def snapshot_from_demo(status: int, payload: Any, now: datetime) -> GpuSnapshot:
    """The emulator's /_demo/gpu answer -> GpuSnapshot(source="simulated"); a clean "none" with
    the reason for anything else (the demo has no GPU, or it answered something unusable)."""
    if status != 200:
        return GpuSnapshot(now, "none", [], [], f"the demo presents no GPU (HTTP {status}); start it with --gpu")
    if not isinstance(payload, dict) or payload.get("simulated") is not True:
        return GpuSnapshot(now, "none", [], [], "the demo's GPU endpoint answered something that is not a simulated GPU")
    gpus_text, apps_text = payload.get("query_gpu"), payload.get("query_apps")
    if not isinstance(gpus_text, str) or not isinstance(apps_text, str):
        return GpuSnapshot(now, "none", [], [], "the demo's GPU endpoint answered without nvidia-smi's two outputs")
    gpus, processes = parse_nvidia_smi_csv(gpus_text, apps_text)
    if not gpus:
        return GpuSnapshot(now, "none", [], [], "the demo's simulated GPU listed no GPU")
    return GpuSnapshot(now, SIMULATED_SOURCE, gpus, processes, None)
