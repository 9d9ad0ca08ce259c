"""The telemetry sampler (host memory, Ollama's /api/ps, runner processes -> the sidecar) and
the read side the Live page and `oasis-ops status` use.

    sampler = get_sampler(sidecar_path, settings)   # one thread per process, per sidecar
    report = Sampler(path, settings).open().tick()  # one sample (`oasis-ops sample --once`)

See core.py for the loop and the events it writes, runners.py for its reads of llama-server
runners, service.py for the per-process thread and the launcher's service, hostsource.py for the
demo's simulated host, views.py (header.py, window.py, livechart.py, runner_panel.py, reads.py)
for the Live page's queries and charts.
"""

from oasis_ops.sampler.core import (
    FLUSH_INTERVAL_S,
    HEARTBEAT_STALE_S,
    LOG_INTERVAL_S,
    Sampler,
    TickReport,
)
from oasis_ops.sampler.hostsource import SIMULATED_SOURCE, HostSource, is_simulated, pressure_level
from oasis_ops.sampler.procwatch import RunnerWatch
from oasis_ops.sampler.service import SamplerService, get_sampler, running_samplers, stop_sampler

__all__ = [
    "FLUSH_INTERVAL_S",
    "HEARTBEAT_STALE_S",
    "LOG_INTERVAL_S",
    "SIMULATED_SOURCE",
    "HostSource",
    "RunnerWatch",
    "Sampler",
    "SamplerService",
    "TickReport",
    "get_sampler",
    "is_simulated",
    "pressure_level",
    "running_samplers",
    "stop_sampler",
]
