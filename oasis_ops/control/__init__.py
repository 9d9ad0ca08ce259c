"""The control channel (DESIGN.md Contract 3): dashboard -> live runner, both sides.

`ControlChannel` (ours) writes `control.json` and reads the runner's `state.json`;
`RunnerControl` (the harness's) polls, applies to a `ResizableLimiter` /
`AsyncResizableLimiter`, and acknowledges. Files live in `<trials stem>.control/` (mode 0700).
"""

from oasis_ops.control.channel import (
    ControlChannel,
    RunnerState,
    concurrency_wording,
    control_summary,
    parse_state,
    pause_wording,
)
from oasis_ops.control.files import (
    CONTROL_FILE,
    STATE_FILE,
    atomic_write_json,
    control_dir_for,
    ensure_control_dir,
    read_json,
)
from oasis_ops.control.limiter import AsyncResizableLimiter, Limiter, ResizableLimiter
from oasis_ops.control.runner import ControlRequest, RunnerControl, parse_request

__all__ = [
    "CONTROL_FILE",
    "STATE_FILE",
    "AsyncResizableLimiter",
    "ControlChannel",
    "ControlRequest",
    "Limiter",
    "ResizableLimiter",
    "RunnerControl",
    "RunnerState",
    "atomic_write_json",
    "concurrency_wording",
    "control_summary",
    "control_dir_for",
    "ensure_control_dir",
    "parse_request",
    "parse_state",
    "pause_wording",
    "read_json",
]
