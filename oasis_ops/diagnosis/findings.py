"""Diagnosis: evidence-based findings for one incident window.

Each check reads the telemetry sidecar (host and /api/ps samples, events, actions, ingested
server.log and harness log) around the window and either returns a Finding with the numbers
that support it, or nothing. The write-up's reasoning, automated, one module per check under
oasis_ops/diagnosis/checks/ (each module's docstring gives the reasoning in full):

- `stopping_deadlock` (stopping.py): a model Stopping for longer than `watchdog_stopping_s`
  while trials do not complete or its runner's CPU stays busy.
- `memory_pressure` (memory.py): at least two of: free memory down tenfold, swap-outs climbing,
  pressure warn or critical.
- `vram_spill` (vram_spill.py): the model's GPU share fell (size_vram below size) or a GPU's memory
  was full, AND generation slowed or the runner's CPU rose.
- `flash_attention_cpu_spill` (flash_spill.py): flash attention on AND either the runner's CPU
  high while the split says 100% GPU, or generation slowing while the image encoder stays fast.
- `cold_start` (cold_start.py): confirmed by the model leaving /api/ps, a runner respawn, load
  lines or a cold encoder; refuted when the model stayed listed, loaded and warm.
- `client_timeout_only` (client_timeout.py): the harness timed out while the server answered
  every inference request of the window within the request timeout.

The shared plumbing (Finding, Telemetry, WindowContext, pick_model, timing_comparison) is
checks/context.py's. This module runs every check (`diagnose()`) and is where callers import
from. No finding is reported without evidence; the only refuted finding reported is cold_start.
"""

from __future__ import annotations

from oasis_ops.diagnosis.checks.client_timeout import NON_INFERENCE_PATHS as NON_INFERENCE_PATHS
from oasis_ops.diagnosis.checks.client_timeout import check_client_timeout
from oasis_ops.diagnosis.checks.cold_start import _cold_start_loads as _cold_start_loads
from oasis_ops.diagnosis.checks.cold_start import check_cold_start
from oasis_ops.diagnosis.checks.context import (
    ORDER,
    TITLES,
    Finding,
    Telemetry,
    WindowContext,
    pick_model,
    timing_comparison,
)
from oasis_ops.diagnosis.checks.context import TrialCounter as TrialCounter
from oasis_ops.diagnosis.checks.context import _detail as _detail
from oasis_ops.diagnosis.checks.context import apple_silicon as apple_silicon
from oasis_ops.diagnosis.checks.flash_spill import check_flash_spill, flash_setting
from oasis_ops.diagnosis.checks.memory import check_memory_pressure
from oasis_ops.diagnosis.checks.stopping import (
    StoppingEpisode,
    check_stopping_deadlock,
    stopping_episodes,
)
from oasis_ops.diagnosis.checks.vram_spill import check_vram_spill
from oasis_ops.diagnosis.thresholds import BUSY_CPU_PERCENT as BUSY_CPU_PERCENT
from oasis_ops.diagnosis.thresholds import COLD_LEAD as COLD_LEAD
from oasis_ops.diagnosis.thresholds import DEFAULT_TIMEOUT_MS as DEFAULT_TIMEOUT_MS
from oasis_ops.diagnosis.thresholds import ENCODER_COLD_RATIO as ENCODER_COLD_RATIO
from oasis_ops.diagnosis.thresholds import ENCODER_WARM_RATIO as ENCODER_WARM_RATIO
from oasis_ops.diagnosis.thresholds import EVAL_SLOWDOWN as EVAL_SLOWDOWN
from oasis_ops.diagnosis.thresholds import FREE_DROP_FACTOR as FREE_DROP_FACTOR
from oasis_ops.diagnosis.thresholds import LOW_FREE_BYTES as LOW_FREE_BYTES
from oasis_ops.diagnosis.thresholds import LOW_FREE_FRACTION as LOW_FREE_FRACTION
from oasis_ops.diagnosis.thresholds import MEMORY_LOOKBACK as MEMORY_LOOKBACK
from oasis_ops.diagnosis.thresholds import MODEL_LOOKBACK as MODEL_LOOKBACK
from oasis_ops.diagnosis.thresholds import PRESSURE_HIGH as PRESSURE_HIGH
from oasis_ops.diagnosis.thresholds import STOPPING_LEAD as STOPPING_LEAD
from oasis_ops.diagnosis.thresholds import STOPPING_LOOKAHEAD as STOPPING_LOOKAHEAD
from oasis_ops.diagnosis.thresholds import SWAP_CLIMB_PAGES as SWAP_CLIMB_PAGES


# --- all together -----------------------------------------------------------------------------
def diagnose(ctx: WindowContext) -> list[Finding]:
    """Every finding with evidence for one window, in a fixed order (confirmed first)."""
    if ctx.model is None:
        ctx.model = pick_model(ctx.telemetry, ctx.window)
    found: list[Finding] = []
    for check in (check_stopping_deadlock, check_memory_pressure, check_vram_spill):
        finding = check(ctx)
        if finding:
            found.append(finding)
    memory = any(f.id in ("memory_pressure", "vram_spill") for f in found)  # other causes of slow generation
    for extra in (check_flash_spill(ctx, memory), check_cold_start(ctx), check_client_timeout(ctx)):
        if extra:
            found.append(extra)
    found.sort(key=lambda f: (f.status != "confirmed", ORDER.index(f.id)))
    return found


__all__ = [
    "ORDER",
    "TITLES",
    "Finding",
    "StoppingEpisode",
    "Telemetry",
    "WindowContext",
    "diagnose",
    "flash_setting",
    "pick_model",
    "stopping_episodes",
    "timing_comparison",
]
