"""The demo's simulated GPU: an NVIDIA card as `nvidia-smi` prints it, driven by the emulator.

With `oasis-ops demo --gpu` (the emulator's `OASIS_EMU_GPU=1`) the emulator presents one GPU at
`GET /_demo/gpu`: the two CSV answers the console's probe asks a real `nvidia-smi` for
(`--query-gpu=...` and `--query-compute-apps=...`, `--format=csv,noheader,nounits`), built on
the emulator's clock from a recorded card (`RECORDED_CARD`: its name, size and idle figures as a
real driver printed them) plus what the emulator holds on it: each emulated runner's VRAM, and
the VRAM another process takes under the `vram_pressure` fault. The console parses them with the
same parser as a real nvidia-smi's output and labels them `simulated` everywhere.

Placement follows Ollama's: a model is placed when it loads (the VRAM free then decides how many
layers go to the GPU; the rest run on the CPU, and `ollama ps` shows the split) and stays placed
until it unloads, whatever happens to the GPU meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Card:
    name: str
    uuid: str
    memory_total_mib: int
    idle_used_mib: int  # the driver's and the desktop's share before any model
    idle_temperature_c: float
    busy_temperature_c: float
    idle_power_w: float
    busy_power_w: float


# From a real `nvidia-smi -q -x` of a GeForce RTX 4090 (driver 535.86.05, recorded in
# tests/fixtures/gpu/nvidia-smi-q-x-rtx-4090-535.86.05.xml; SOURCES.md names its source): its
# name, UUID, FB memory total and idle figures. The busy figures are not a recording: a load
# temperature and power well under the card's 450 W limit.
RECORDED_CARD = Card(
    name="NVIDIA GeForce RTX 4090",
    uuid="GPU-71d1acc2-662d-2166-bf9f-65272d2fc437",
    memory_total_mib=24564,
    idle_used_mib=2,
    idle_temperature_c=40.0,
    busy_temperature_c=66.0,
    idle_power_w=26.84,
    busy_power_w=330.0,
)


class SimulatedGpu:
    """One card; `place()` at a runner's load, `answer()` for /_demo/gpu."""

    def __init__(self, card: Card = RECORDED_CARD) -> None:
        self.card = card
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        return self.card.memory_total_mib * MIB

    def free_bytes(self, runner_vram: Iterable[int], grabbed_bytes: int) -> int:
        used = self.card.idle_used_mib * MIB + sum(runner_vram) + grabbed_bytes
        return max(0, self.total_bytes - used)

    def place(self, size_bytes: int, runner_vram: Iterable[int], grabbed_bytes: int) -> int:
        """VRAM a model of `size_bytes` gets at its load: all of it when it fits, else what is
        free (Ollama offloads the layers that fit and runs the rest on the CPU)."""
        return max(0, min(int(size_bytes), self.free_bytes(runner_vram, grabbed_bytes)))

    def answer(self, runners: Iterable[tuple[int, int]], grabbed_bytes: int, busy: bool) -> dict[str, Any]:
        """The /_demo/gpu body: nvidia-smi's two CSV answers for `runners` ((pid, vram bytes))
        and the VRAM another process holds (`grabbed_bytes`, listed as its own compute app)."""
        card = self.card
        apps = [(pid, vram) for pid, vram in runners if vram > 0]
        used_mib = card.idle_used_mib + sum(v for _, v in apps) // MIB + grabbed_bytes // MIB
        used_mib = min(used_mib, card.memory_total_mib)
        share = used_mib / card.memory_total_mib
        utilization = 97 if busy and apps else 0
        temperature = card.busy_temperature_c if utilization else card.idle_temperature_c
        power = card.busy_power_w if utilization else card.idle_power_w + 10.0 * share
        gpu_line = (f"0, {card.uuid}, {card.name}, {card.memory_total_mib}, {used_mib}, "
                    f"{card.memory_total_mib - used_mib}, {utilization}, {temperature:.0f}, {power:.2f}")  # fmt: skip
        app_lines = [f"{pid}, {card.uuid}, {vram // MIB}" for pid, vram in apps]
        if grabbed_bytes > 0:  # the other workload (a training job, another server) as nvidia-smi lists it
            app_lines.append(f"{OTHER_PID}, {card.uuid}, {grabbed_bytes // MIB}")
        return {"simulated": True, "query_gpu": gpu_line + "\n", "query_apps": "".join(line + "\n" for line in app_lines)}


OTHER_PID = 4_000_001  # the other workload's pid: no runner's (the sampler matches runners by pid)
