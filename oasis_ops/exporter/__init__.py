"""The Prometheus exporter: the sampler's and the trial table's figures as Prometheus metrics.

`oasis-ops sample --prometheus 127.0.0.1:9464` (or the `prometheus_listen` setting, which the
dashboard's own sampler also honours) serves `/metrics` beside the sampler. Ollama has no metrics
endpoint (ollama/ollama#3144); this answers what its users ask there (per-model requests, tokens,
latency, errors, GPU offload) from what the console already records. See collector.py for the
metric names; httpd.py for who may read them.
"""
