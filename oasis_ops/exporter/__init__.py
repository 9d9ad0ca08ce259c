"""The Prometheus exporter: the sampler's and the trial table's figures as Prometheus metrics.

`oasis-ops sample --prometheus 127.0.0.1:9464` (or the `prometheus_listen` setting, which the
dashboard's own sampler also honours) serves `/metrics` beside the sampler. Ollama has no metrics
endpoint (ollama/ollama#3144); this answers what its users ask there (per-model requests, tokens,
latency, errors, GPU offload) from what the console already records. See collector.py for the
metric names; httpd.py for who may read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def start_exporter(settings: Any, sidecar_path: Path) -> Any:
    """The exporter over a sampler's sidecar and its trial DB, serving on `prometheus_listen`
    (a started httpd.MetricsServer; UsageError when the address is refused or taken)."""
    from prometheus_client import CollectorRegistry

    from oasis_ops.exporter.collector import OasisCollector
    from oasis_ops.exporter.httpd import MetricsServer
    from oasis_ops.exporter.trialstats import TrialStats
    from oasis_ops.probes.ollama import resolve_ollama_host

    registry = CollectorRegistry(auto_describe=False)
    registry.register(OasisCollector(sidecar_path, TrialStats(settings.db or None, settings), host=str(settings.metrics_host),
                                     ollama_url=resolve_ollama_host(str(settings.ollama_host))))  # fmt: skip
    return MetricsServer(registry, str(settings.prometheus_listen), access_secret=str(settings.access_secret),
                         allowed_hosts=list(settings.allowed_hosts)).start()  # fmt: skip
