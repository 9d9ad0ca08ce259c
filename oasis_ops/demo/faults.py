"""Runtime-switchable faults of the Ollama emulator, and the simulated host memory they drive.

The emulator owns one `FaultBoard`. Faults are switched over its control endpoint
(`POST /_demo/faults`, see `oasis-ops demo fault`) and turned into effects:
- per request, at its start: latency multipliers, and whether it wedges (`stopping_deadlock`);
- per runner, pushed live to the runner process: stall on/off, CPU spin threads, RSS target.

Faults (parameters in `FAULTS`):
- `latency_drift`: prompt-eval and generation time times a multiplier that grows while on.
- `stall`: generations hang before their next token until the fault is cleared, the runner is
  killed, the client goes away, or `stall_s` seconds passed (0 = no limit).
- `stopping_deadlock`: the next `count` requests wedge for good: they ignore the client going
  away and the fault being cleared; only killing the runner ends them. With `keep_alive: 0`
  the model then stays Stopping forever, as in the incident.
- `memory_pressure`: every runner's RSS really grows (`rate_mb_s`, up to `cap_mb`, hard cap
  512 MB); the host is NOT stressed: `/_demo/host` reports a simulated host whose free pages
  fall and swap-outs climb over `ramp_s`; generation slows with the simulated pressure.
- `flash_attention_cpu_spill`: runners loaded with FlashAttention Enabled spin `threads` CPU
  threads and generate `slowdown` times slower, while /api/ps still says size_vram == size
  (100% GPU); the image encoder is not slowed.
- `runner_crash`: the next `count` runners that are generating are killed with SIGKILL
  mid-answer (a segfault or the OOM killer, as far as Ollama can tell).
- `vram_pressure` (only with the simulated GPU, `oasis-ops demo --gpu`): another process takes
  `grab_gb` of VRAM over `ramp_s` (by default all but `leave_fraction` of the largest model's
  size); a model loaded while it is held gets only the VRAM left (its
  other layers on the CPU: /api/ps size_vram < size, the CPU/GPU split), generates up to
  `slowdown` times slower (in proportion to its CPU share) and its runner spins CPU threads.
  With `reload` 1 the loaded models reload once the grab is complete (as a keep-alive expiry, a
  crash or a changed num_ctx would make them), so they spill; a model stays split until it
  reloads with the VRAM free again (an evict, once the other process is gone).

On the real engine (llama.cpp serving smollm2:135m) the same switches act on the real process
(`oasis_ops.demo.ollama.realfaults`): stall is SIGSTOP until cleared; stopping_deadlock is a
SIGSTOP that is never undone (what a wedged runner is underneath: only a kill ends it);
latency_drift and memory_pressure's slowdown duty-cycle SIGSTOP/SIGCONT so generation is
really that much slower; runner_crash is a real SIGKILL. With the emulator on the real host
(`OASIS_EMU_HOST=real`) memory_pressure allocates real memory in a capped child process
(`oasis_ops.demo.ollama.hog`) instead of simulating a host.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oasis_ops.errors import UsageError

MEMORY_HARD_CAP_MB = 512.0


@dataclass(frozen=True)
class Param:
    default: float
    minimum: float
    maximum: float
    help: str


@dataclass(frozen=True)
class FaultSpec:
    name: str
    help: str
    params: Mapping[str, Param] = field(default_factory=dict)


FAULTS: dict[str, FaultSpec] = {
    spec.name: spec
    for spec in (
        FaultSpec("latency_drift", "generation latency multiplier growing over time", {
            "rate_per_min": Param(1.0, 0.0, 6000.0, "multiplier added per minute while on"),
            "max_multiplier": Param(20.0, 1.0, 1000.0, "ceiling of the multiplier"),
        }),
        FaultSpec("stall", "generations hang until cleared, killed or stall_s elapses", {
            "stall_s": Param(0.0, 0.0, 86400.0, "longest stall of one request, seconds (0 = no limit)"),
        }),
        FaultSpec("stopping_deadlock", "the next requests wedge for good (only a runner kill ends them)", {
            "count": Param(1.0, 1.0, 1000.0, "how many requests wedge"),
        }),
        FaultSpec("memory_pressure", "runner RSS grows; simulated host memory runs out", {
            "rate_mb_s": Param(10.0, 0.1, 512.0, "runner RSS growth, MB per second"),
            "cap_mb": Param(300.0, 1.0, MEMORY_HARD_CAP_MB, "largest extra RSS per runner, MB"),
            "ramp_s": Param(60.0, 1.0, 86400.0, "seconds until the simulated host is at full pressure"),
            "slowdown": Param(4.0, 1.0, 100.0, "generation time multiplier at full pressure"),
        }),
        FaultSpec("flash_attention_cpu_spill", "runner CPU busy while /api/ps says 100% GPU", {
            "threads": Param(1.0, 1.0, 4.0, "busy-spinning threads in the runner"),
            "slowdown": Param(4.0, 1.0, 100.0, "generation time multiplier"),
        }),
        FaultSpec("runner_crash", "the next runners that are generating are killed (SIGKILL) mid-answer", {
            "count": Param(1.0, 1.0, 100.0, "how many runners to kill"),
        }),
        FaultSpec("vram_pressure", "another process takes GPU memory; models loaded meanwhile spill layers to the CPU", {
            "grab_gb": Param(0.0, 0.0, 1024.0, "VRAM the other process takes, GB (0: all but leave_fraction of the largest model)"),
            "leave_fraction": Param(0.4, 0.0, 1.0, "with grab_gb 0: the share of the largest model that still fits on the GPU"),
            "ramp_s": Param(10.0, 0.0, 86400.0, "seconds until it holds all of it"),
            "slowdown": Param(6.0, 1.0, 100.0, "generation time multiplier of a model wholly on the CPU (scaled by its CPU share)"),
            "reload": Param(1.0, 0.0, 1.0, "1: loaded models reload once the grab is complete, and spill"),
        }),
    )
}


def coerce_params(name: str, params: Mapping[str, Any]) -> dict[str, float]:
    """Defaults filled in and every value checked; raises UsageError naming the bad one."""
    spec = fault_spec(name)
    out = {key: p.default for key, p in spec.params.items()}
    for key, value in params.items():
        if key not in spec.params:
            allowed = ", ".join(spec.params) or "none"
            raise UsageError(f"fault {name} has no parameter {key!r} (parameters: {allowed})")
        p = spec.params[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"fault {name}: {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or not p.minimum <= number <= p.maximum:
            raise UsageError(f"fault {name}: {key} must be between {p.minimum:g} and {p.maximum:g}, got {value!r}")
        out[key] = number
    return out


def fault_spec(name: str) -> FaultSpec:
    try:
        return FAULTS[name]
    except KeyError:
        raise UsageError(f"unknown fault {name!r} (faults: {', '.join(FAULTS)})") from None


@dataclass
class FaultState:
    on: bool = False
    params: dict[str, float] = field(default_factory=dict)
    since_mono: float = 0.0
    since: datetime | None = None
    wedges_left: int = 0  # stopping_deadlock and runner_crash: uses left
    wedged: int = 0


class SimulatedHost:
    """A macOS-shaped host whose memory follows the memory_pressure fault (never the real host).

    Healthy numbers and the worst case follow the incident's vm_stat snapshots: 16 KiB pages,
    ~2.1M pages free when healthy, ~58k at the bottom, swap-outs climbing to ~0.5M over the ramp.
    """

    PAGE_SIZE = 16384
    MEM_TOTAL = 55_297_703_936  # 51.5 GiB
    PAGES_FREE_HEALTHY = 2_103_449
    PAGES_FREE_FLOOR = 58_011
    SWAPOUT_PEAK_PER_S = 14_000.0  # ~0.5M over a 60 s ramp

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._severity = 0.0
        self._last = clock()
        self.swapouts = 0.0
        self.swapins = 0.0

    def advance(self, pressure_on: bool, ramp_s: float) -> float:
        """Move the simulation to now; returns the severity 0..1."""
        with self._lock:
            now = self._clock()
            dt = max(0.0, now - self._last)
            self._last = now
            step = dt / max(ramp_s, 1e-6)
            if pressure_on:
                self._severity = min(1.0, self._severity + step)
            else:
                self._severity = max(0.0, self._severity - 2 * step)
            # Swap traffic only starts once free memory is mostly gone (the write-up's inflection).
            swap_rate = self.SWAPOUT_PEAK_PER_S * max(0.0, (self._severity - 0.5) * 2) ** 2
            self.swapouts += swap_rate * dt
            self.swapins += swap_rate * 0.1 * dt
            return self._severity

    @property
    def severity(self) -> float:
        return self._severity

    def snapshot(self, pressure_on: bool, ramp_s: float) -> dict[str, Any]:
        severity = self.advance(pressure_on, ramp_s)
        pages_free = int(self.PAGES_FREE_HEALTHY - severity * (self.PAGES_FREE_HEALTHY - self.PAGES_FREE_FLOOR))
        free = pages_free * self.PAGE_SIZE
        available = free + int((1 - severity) * 6e9)
        level = 1 if severity < 0.5 else (2 if severity < 0.85 else 4)
        return {
            "simulated": True,
            "source": "simulated",
            "ts": datetime.now(UTC).isoformat(),
            "mem_total_bytes": self.MEM_TOTAL,
            "mem_free_bytes": free,
            "mem_available_bytes": available,
            "page_size": self.PAGE_SIZE,
            "pages_free": pages_free,
            "swap_used_bytes": min(int(self.swapouts) * self.PAGE_SIZE, 8 * 1024**3),
            "swapins": int(self.swapins),
            "swapouts": int(self.swapouts),
            "pressure": round(severity * 100, 1),
            "pressure_level": level,  # kern.memorystatus_vm_pressure_level: 1 normal, 2 warn, 4 critical
        }


class FaultBoard:
    """The emulator's fault switches (thread-safe) and the effects derived from them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, simulated_host: bool = True, gpu: bool = False) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = {name: FaultState(params=coerce_params(name, {})) for name in FAULTS}
        self.simulated_host = simulated_host
        self.gpu = gpu  # the emulator presents a simulated GPU (vram_pressure acts on it)
        self.host = SimulatedHost(clock)
        self._reload_done = False

    # --- switching ---------------------------------------------------------------------------
    def set(self, name: str, on: bool, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        fault_spec(name)
        if name == "vram_pressure" and on and not self.gpu:
            raise UsageError("vram_pressure needs the demo's simulated GPU: start the demo with --gpu (OASIS_EMU_GPU=1)")
        with self._lock:
            state = self._state[name]
            if params or on:
                state.params = coerce_params(name, {**(state.params if not on else {}), **(params or {})})
            if on and not state.on:
                state.since_mono = self._clock()
                state.since = datetime.now(UTC)
            if on and name == "vram_pressure" and not state.on:
                self._reload_done = False
            if on and name in ("stopping_deadlock", "runner_crash"):
                state.wedges_left = int(state.params["count"])
                state.wedged = 0
            if not on:
                state.since = None
                state.wedges_left = 0
            state.on = on
        return self.snapshot()

    def clear_all(self) -> dict[str, Any]:
        for name in FAULTS:
            self.set(name, False)
        return self.snapshot()

    def is_on(self, name: str) -> bool:
        with self._lock:
            return self._state[name].on

    def params(self, name: str) -> dict[str, float]:
        with self._lock:
            return dict(self._state[name].params)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            faults: dict[str, Any] = {}
            for name, state in self._state.items():
                entry: dict[str, Any] = {
                    "on": state.on,
                    "since": state.since.isoformat() if state.since else None,
                    "params": dict(state.params),
                    "help": FAULTS[name].help,
                }
                if name == "latency_drift":
                    entry["multiplier"] = round(self._drift_locked(), 3)
                if name in ("stopping_deadlock", "runner_crash"):
                    entry["wedges_left"] = state.wedges_left
                    entry["wedged"] = state.wedged
                if name == "vram_pressure":
                    entry["gpu"] = "simulated" if self.gpu else "none"
                if name == "memory_pressure":
                    entry["rss_target_mb"] = round(self._rss_target_locked() / 1e6, 1)
                    entry["host"] = "simulated" if self.simulated_host else "real"
                    if self.simulated_host:
                        entry["host_severity"] = round(self.host.severity, 3)
                faults[name] = entry
        return {"faults": faults}

    # --- effects -----------------------------------------------------------------------------
    def _drift_locked(self) -> float:
        state = self._state["latency_drift"]
        if not state.on:
            return 1.0
        minutes = (self._clock() - state.since_mono) / 60.0
        return min(state.params["max_multiplier"], 1.0 + state.params["rate_per_min"] * minutes)

    def _rss_target_locked(self) -> int:
        state = self._state["memory_pressure"]
        if not state.on:
            return 0
        mb = min(state.params["cap_mb"], MEMORY_HARD_CAP_MB,
                 state.params["rate_mb_s"] * (self._clock() - state.since_mono))
        return int(mb * 1e6)

    def vram_grab(self) -> tuple[float, dict[str, float], float]:
        """vram_pressure: how far the other process's grab is (0..1; 0 when off), the fault's
        parameters and when it was switched on (an episode's key); the emulator turns them into
        bytes (it knows the GPU and the models)."""
        with self._lock:
            state = self._state["vram_pressure"]
            if not state.on:
                return 0.0, dict(state.params), 0.0
            ramp = state.params["ramp_s"]
            progress = 1.0 if ramp <= 0 else min(1.0, (self._clock() - state.since_mono) / ramp)
            return progress, dict(state.params), state.since_mono

    def split_slowdown(self, cpu_share: float) -> float:
        """Generation time multiplier of a model with `cpu_share` of it on the CPU (a VRAM spill)."""
        with self._lock:
            slowdown = self._state["vram_pressure"].params["slowdown"]
        return 1.0 + (slowdown - 1.0) * min(1.0, max(0.0, cpu_share))

    def vram_reload_due(self) -> bool:
        """True once per vram_pressure episode with `reload` 1, when the grab is complete: the
        emulator then unloads its loaded models (each reloads, split, at its next request)."""
        with self._lock:
            state = self._state["vram_pressure"]
            if not state.on or self._reload_done or state.params["reload"] < 0.5:
                return False
            if self._clock() - state.since_mono < state.params["ramp_s"]:
                return False
            self._reload_done = True
            return True

    def host_snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self._state["memory_pressure"]
            on, ramp = state.on, state.params["ramp_s"]
        return self.host.snapshot(on, ramp)

    def take(self, name: str) -> bool:
        """Consume one use of a counted fault (stopping_deadlock, runner_crash); True if one was left."""
        with self._lock:
            state = self._state[name]
            if not state.on or state.wedges_left <= 0:
                return False
            state.wedges_left -= 1
            state.wedged += 1
            return True

    def used_up(self, name: str) -> bool:
        """A counted fault that is on with no use left."""
        with self._lock:
            state = self._state[name]
            return state.on and state.wedges_left <= 0

    def hog_target_mb(self) -> float:
        """Real host: the memory the hog should hold now (grows at rate_mb_s up to cap_mb)."""
        with self._lock:
            return self._rss_target_locked() / 1e6

    def real_slowdown(self) -> float:
        """Real engine: how many times slower generation should be (drift x memory pressure)."""
        with self._lock:
            drift = self._drift_locked()
            mem = self._state["memory_pressure"]
            mem_on, ramp, mem_slowdown = mem.on, mem.params["ramp_s"], mem.params["slowdown"]
        severity = self.host.advance(mem_on, ramp) if self.simulated_host else (1.0 if mem_on else 0.0)
        return drift * (1.0 + (mem_slowdown - 1.0) * severity)

    def request_effects(self, flash_attention: bool, cpu_share: float = 0.0) -> dict[str, Any]:
        """Multipliers for one request starting now, and whether it wedges (consumes one).
        `cpu_share`: the part of the model on the CPU (a VRAM spill at its load), 0..1."""
        with self._lock:
            drift = self._drift_locked()
            eval_mult = 1.0 + (self._state["vram_pressure"].params["slowdown"] - 1.0) * min(1.0, max(0.0, cpu_share))  # as split_slowdown
            spill = self._state["flash_attention_cpu_spill"]
            if spill.on and flash_attention:
                eval_mult *= spill.params["slowdown"]
            mem = self._state["memory_pressure"]
            mem_on, ramp = mem.on, mem.params["ramp_s"]
            mem_slowdown = mem.params["slowdown"]
            deadlock = self._state["stopping_deadlock"]
            wedge = deadlock.on and deadlock.wedges_left > 0
            if wedge:
                deadlock.wedges_left -= 1
                deadlock.wedged += 1
        severity = self.host.advance(mem_on, ramp) if self.simulated_host else (1.0 if mem_on else 0.0)
        eval_mult *= 1.0 + (mem_slowdown - 1.0) * severity
        return {"prompt_multiplier": drift, "eval_multiplier": drift * eval_mult, "wedge": wedge}

    def runner_control(self, flash_attention: bool, cpu_share: float = 0.0) -> dict[str, Any]:
        """The live state pushed to a runner process (`cpu_share`: its layers on the CPU)."""
        with self._lock:
            stall = self._state["stall"]
            spill = self._state["flash_attention_cpu_spill"]
            fa_threads = int(spill.params["threads"]) if spill.on and flash_attention else 0
            split_threads = 1 if cpu_share > 0 else 0  # its CPU layers keep a core busy (one: the demo shares the machine)
            return {
                "stall": stall.on,
                "stall_s": stall.params["stall_s"],
                "spin_threads": max(fa_threads, split_threads),
                "rss_target_bytes": self._rss_target_locked() if self.simulated_host else 0,
            }
