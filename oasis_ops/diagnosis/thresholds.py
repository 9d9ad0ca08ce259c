"""Every threshold the diagnosis judges by, in one place, each with why it is what it is.

The two a user tunes are settings (`incident_threshold_sigma`, `incident_min_failure_rate`; the
watchdog's `watchdog_*`); the rest are fixed by what the evidence looks like, and live here so a
change to one is a change in one file (tests/test_pins_diagnosis.py pins how they are used).
"""

from __future__ import annotations

from datetime import timedelta

# --- incident windows (diagnosis/windows.py) -----------------------------------------------------
MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal distribution
MAD_FLOOR_FRACTION = 0.05  # a perfectly steady run's MAD is floored at 5% of its median p95
MIN_P95_RATIO = 1.5  # a departing p95 is also at least 1.5x the run's median p95
MIN_LATENCY_TRIALS = 3  # a minute's p95 needs this many latencies to be judged
MIN_FAILING_TRIALS = 2  # a minute at the failure-rate threshold departs only with 2+ failures (one is noise)
FAR_ABOVE_FACTOR = 10.0  # or 10x the run's own baseline failure rate...
FAR_ABOVE_MIN_RATE = 0.05  # ...and at least 5%...
FAR_ABOVE_MIN_FAILURES = 3  # ...with 3+ failures
WINDOW_MIN_FAILURES = 3  # a window needs 3+ failures in all...
WINDOW_MIN_DEPARTING = 2  # ...or 2+ departing minutes
DEFAULT_MERGE_GAP_MIN = 2  # departing minutes this close belong to one window
DEFAULT_TIMEOUT_MS = 60_000.0  # the harness's request timeout, when nothing says otherwise

# --- the window's context (checks/context.py) -----------------------------------------------------
MODEL_LOOKBACK = timedelta(minutes=60)  # model samples read from this long before the window
STOPPING_LOOKAHEAD = timedelta(minutes=30)  # a deadlock usually starts when the window ends
BUSY_CPU_PERCENT = 80.0  # a runner using this much CPU is working (the watchdog's own bar is 50%)
ENCODER_WARM_RATIO = 1.5  # image encoding within 1.5x the run's median is warm

# --- memory pressure (checks/memory.py) ------------------------------------------------------------
MEMORY_LOOKBACK = timedelta(hours=1)
FREE_DROP_FACTOR = 10.0  # free memory fell to a tenth of what it was
LOW_FREE_FRACTION = 0.05  # or below 5% of total memory
LOW_FREE_BYTES = 2_000_000_000  # (when total memory is unknown)
SWAP_CLIMB_PAGES = 10_000  # swap-outs that climbed by this many pages near the window
PRESSURE_HIGH = 50.0  # macOS "warn" and above; Linux PSI some avg10 >= 50%

# --- cold start (checks/cold_start.py) --------------------------------------------------------------
COLD_LEAD = timedelta(minutes=2)  # loads up to 2 minutes before the window count
ENCODER_COLD_RATIO = 3.0  # image encoding 3x the warm median is a cold encoder

# --- flash-attention spill (checks/flash_spill.py) ---------------------------------------------------
EVAL_SLOWDOWN = 2.5  # generation 2.5x slower per token than before the window

# --- stopping deadlock (checks/stopping.py) ----------------------------------------------------------
STOPPING_LEAD = timedelta(minutes=5)  # a Stopping episode up to 5 minutes before the window counts

# --- VRAM spill (checks/vram_spill.py) -----------------------------------------------------------------
VRAM_FULL_RATIO = 0.95  # a GPU with 95% of its memory used has no room for another layer or KV cache
GPU_SHARE_DROP = 0.05  # the model's share on the GPU fell by 5 points or more (100% -> 95% is already a spill)
CPU_RISE_FACTOR = 2.0  # the runner's CPU doubled (and reached BUSY_CPU_PERCENT)
