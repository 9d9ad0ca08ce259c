"""The Prometheus exporter on real files, served over real HTTP on 127.0.0.1 and read back with
prometheus_client's reference parser: every figure checked against an independent computation
over the rows written; its access rule; and `oasis-ops sample --prometheus` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from oasis_ops.access import parse_listen
from oasis_ops.errors import UsageError
from oasis_ops.exporter.collector import OasisCollector
from oasis_ops.exporter.httpd import MetricsServer
from oasis_ops.exporter.trialstats import LATENCY_BUCKETS_S, TrialStats
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar, heartbeat_row

MODEL = "gemma4:e4b"


def now_utc() -> datetime:
    """Taken when the files are written (a suite may run a test long after it imported this)."""
    return datetime.now(UTC).replace(microsecond=0)


def write_trials(path: Path, *, tokens: bool = True) -> dict[str, Any]:
    """300 trials of two models: ok with log-normal latencies, timeouts at 60 s, errors, a NaN
    and a negative latency (no bucket); returns what the exporter must say, computed with numpy."""
    rng = np.random.default_rng(11)
    rows = []
    NOW = now_utc()  # noqa: N806
    for i in range(300):
        model = MODEL if i % 3 else "smollm2:135m"
        status = "timeout" if i % 25 == 0 else "error" if i % 41 == 0 else "ok"
        latency = 60_000.0 if status == "timeout" else float(rng.lognormal(np.log(3000), 0.8))
        if i == 7:
            latency = float("nan")
        if i == 8:
            latency = -5.0
        start = NOW - timedelta(minutes=30) + timedelta(seconds=5 * i)
        rows.append((i, "run-1", model, start.replace(tzinfo=None), (start + timedelta(seconds=3)).replace(tzinfo=None),
                     latency, status, 100 + i, 20 + (i % 7)))  # fmt: skip
    con = duckdb.connect(str(path))
    extra = ", prompt_tokens BIGINT, completion_tokens BIGINT" if tokens else ""
    con.execute("CREATE TABLE trials (trial_id BIGINT, run_id VARCHAR, model VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,"
                f" latency_ms DOUBLE, status VARCHAR, error VARCHAR{extra})")  # fmt: skip
    if tokens:
        con.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)", rows)
    else:
        con.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", [r[:7] for r in rows])
    con.close()
    expected: dict[str, Any] = {"trials": {}, "buckets": {}, "sum": {}, "tokens": {}}
    for _, _, model, _, _, latency, status, prompt, completion in rows:
        key = (model, status)
        expected["trials"][key] = expected["trials"].get(key, 0) + 1
        if np.isfinite(latency) and latency >= 0:
            expected["buckets"].setdefault(key, []).append(latency / 1000)
            expected["sum"][key] = expected["sum"].get(key, 0.0) + latency / 1000
        expected["tokens"][(model, "prompt")] = expected["tokens"].get((model, "prompt"), 0) + prompt
        expected["tokens"][(model, "completion")] = expected["tokens"].get((model, "completion"), 0) + completion
    return expected


def write_sidecar(path: Path) -> datetime:
    """A Linux host, a model Stopping for 4 minutes with its runner and VRAM, a GPU, an open
    warning, audited actions and a fresh heartbeat, as of now (returned)."""
    NOW = now_utc()  # noqa: N806
    start = NOW - timedelta(minutes=10)
    host = [{"ts": start + timedelta(seconds=10 * i), "mem_total_bytes": 64 * 2**30, "mem_free_bytes": 2**30 * (20 - i // 10),
             "mem_available_bytes": 2**30 * (30 - i // 10), "page_size": 4096, "pages_free": 2**18 * (20 - i // 10),
             "swap_used_bytes": 2**28, "swapins": 10 * i, "swapouts": 100 * i, "pressure": 12.5, "source": "linux:/proc"}
            for i in range(60)]  # fmt: skip
    stopping_since = NOW - timedelta(minutes=4)
    models = [{"ts": NOW - timedelta(seconds=2), "model": MODEL, "state": "stopping", "expires_at": stopping_since,
               "stopping_since": stopping_since, "size_bytes": 9_600_000_000, "size_vram_bytes": 9_600_000_000,
               "processor": "100% GPU", "context_length": 8192, "runner_pid": 4242, "runner_create_time": 1.0,
               "runner_rss_bytes": 10_600_000_000, "runner_cpu_percent": 99.5, "runner_threads": 12,
               "runner_vram_bytes": 9_000_000_000}]  # fmt: skip
    gpus = [{"ts": NOW - timedelta(seconds=3), "gpu_index": 0, "gpu_uuid": "GPU-0", "name": "NVIDIA A10", "vendor": "nvidia",
             "memory_total_bytes": 24_000_000_000, "memory_used_bytes": 23_000_000_000, "memory_free_bytes": 1_000_000_000,
             "utilization_percent": 95.0, "temperature_c": 71.0, "power_w": 140.0, "source": "nvml"}]  # fmt: skip
    actions = [{"ts": NOW - timedelta(minutes=m), "action": action, "target": MODEL, "outcome": outcome, "requested_by": "test",
                "detail": {}} for m, action, outcome in ((9, "evict", "ok"), (5, "evict", "failed"), (1, "hard_kill", "ok"))]  # fmt: skip
    warnings = [{"ts": NOW - timedelta(minutes=2), "change": "raised", "kind": "memory_exhaustion", "subject": None, "severity": "warn",
                 "message": "free memory runs out in ~9 min", "evidence": {}, "action": "lower concurrency",
                 "eta": NOW + timedelta(minutes=9), "first_seen": NOW - timedelta(minutes=3)}]  # fmt: skip
    beat = heartbeat_row(pid=os.getpid(), started_at=start, last_tick_at=NOW - timedelta(seconds=1), ticks=600, errors=3,
                         interval_s=10.0, now=NOW - timedelta(seconds=1))  # fmt: skip  # fresh for 50 s: a slow suite
    Sidecar(path).write_batch({"host_samples": host, "model_samples": models, "gpu_samples": gpus, "actions": actions,
                               "warnings": warnings, "sampler_status": [beat]})  # fmt: skip
    return NOW


def scrape(url: str, **kwargs: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} through the reference parser."""
    resp = httpx.get(url, timeout=10, **kwargs)
    assert resp.status_code == 200, resp.text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def serve(tmp_path: Path, **kwargs: Any) -> MetricsServer:
    settings = load_settings()
    registry = CollectorRegistry(auto_describe=False)
    trials = TrialStats(tmp_path / "trials.duckdb", settings, min_interval_s=0.0)
    registry.register(OasisCollector(tmp_path / "trials.ops.duckdb", trials, host="box-a"))
    return MetricsServer(registry, "127.0.0.1:0", **kwargs).start()


def test_every_figure_matches_the_rows_written(tmp_path: Path) -> None:
    expected = write_trials(tmp_path / "trials.duckdb")
    written = write_sidecar(tmp_path / "trials.ops.duckdb")
    server = serve(tmp_path)
    try:
        got = scrape(server.url)
    finally:
        server.stop()

    def value(metric: str, /, **labels: str) -> float:
        return got[metric][tuple(sorted({"host": "box-a", **labels}.items()))]

    assert value("oasis_trial_table_up") == 1.0
    for (model, outcome), n in expected["trials"].items():
        assert value("oasis_trials_total", model=model, outcome=outcome) == n
        latencies = np.array(expected["buckets"][(model, outcome)])
        for bound in LATENCY_BUCKETS_S:
            assert value("oasis_trial_latency_seconds_bucket", model=model, outcome=outcome, le=f"{bound:g}") == int((latencies <= bound).sum())
        assert value("oasis_trial_latency_seconds_bucket", model=model, outcome=outcome, le="+Inf") == len(latencies)
        assert value("oasis_trial_latency_seconds_count", model=model, outcome=outcome) == len(latencies)  # NaN, -5: not in a bucket
        assert value("oasis_trial_latency_seconds_sum", model=model, outcome=outcome) == pytest.approx(expected["sum"][(model, outcome)])
    for (model, kind), n in expected["tokens"].items():
        assert value("oasis_tokens_total", model=model, kind=kind) == n
    assert value("oasis_memory_free_bytes", source="linux:/proc") == 2**30 * 15  # the newest sample
    assert value("oasis_swap_out_pages_total", source="linux:/proc") == 5900 and value("oasis_memory_pressure_ratio", source="linux:/proc") == 0.125
    assert value("oasis_model_state", model=MODEL, state="stopping") == 1.0 and value("oasis_model_state", model=MODEL, state="loaded") == 0.0
    assert 238 <= value("oasis_model_stopping_seconds", model=MODEL) < 260
    assert value("oasis_runner_resident_memory_bytes", model=MODEL) == 10_600_000_000 and value("oasis_runner_cpu_ratio", model=MODEL) == 0.995
    assert value("oasis_runner_vram_bytes", model=MODEL) == 9_000_000_000
    assert value("oasis_gpu_memory_used_bytes", gpu="0", name="NVIDIA A10") == 23_000_000_000
    assert value("oasis_gpu_utilization_ratio", gpu="0", name="NVIDIA A10") == 0.95
    assert value("oasis_sampler_up") == 1.0 and value("oasis_sampler_errors_total") == 3
    assert value("oasis_warning_active", kind="memory_exhaustion", subject="", severity="warn") == 1.0
    assert value("oasis_actions_total", action="evict", outcome="ok") == 1 and value("oasis_actions_total", action="evict", outcome="failed") == 1
    assert value("oasis_action_last_timestamp_seconds", action="hard_kill") == pytest.approx((written - timedelta(minutes=1)).timestamp())


def test_no_sidecar_no_table_and_a_foreign_file_are_said_not_fatal(tmp_path: Path) -> None:
    server = serve(tmp_path)  # neither file exists yet
    try:
        got = scrape(server.url)
        assert got["oasis_trial_table_up"] == {(("host", "box-a"),): 0.0} and "oasis_memory_free_bytes" not in got
        (tmp_path / "trials.duckdb").write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000)  # not DuckDB
        assert scrape(server.url)["oasis_trial_table_up"] == {(("host", "box-a"),): 0.0}
        (tmp_path / "trials.duckdb").unlink()
        write_trials(tmp_path / "trials.duckdb", tokens=False)
        got = scrape(server.url)
        assert got["oasis_trial_table_up"] == {(("host", "box-a"),): 1.0} and "oasis_tokens_total" not in got
        assert httpx.get(server.url.replace("/metrics", "/nope"), timeout=5).status_code == 404
    finally:
        server.stop()


def test_the_access_rule_loopback_a_secret_and_the_host_header(tmp_path: Path) -> None:
    registry = CollectorRegistry(auto_describe=False)
    with pytest.raises(UsageError, match="without an access secret"):
        MetricsServer(registry, "0.0.0.0:0")
    for bad in ("localhost", "host:port", "127.0.0.1:99999"):
        with pytest.raises(UsageError):
            parse_listen(bad)
    secret = "a-long-enough-secret-42"
    server = serve(tmp_path, access_secret=secret)
    try:
        assert httpx.get(server.url, timeout=5).status_code == 401
        assert httpx.get(server.url, headers={"Authorization": "Bearer wrong-secret-of-length"}, timeout=5).status_code == 401
        assert scrape(server.url, headers={"Authorization": f"Bearer {secret}"})["oasis_trial_table_up"]
        assert httpx.get(server.url, headers={"Host": "evil.example:9464", "Authorization": f"Bearer {secret}"}, timeout=5).status_code == 403
        for _ in range(6):
            httpx.get(server.url, headers={"Authorization": "Bearer nope"}, timeout=5)
        locked = httpx.get(server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=5)
        assert locked.status_code == 429 and server.app.refused >= 8  # rate-limited after repeated wrong secrets
    finally:
        server.stop()


def test_oasis_ops_sample_serves_metrics_as_a_real_process(tmp_path: Path) -> None:
    write_trials(tmp_path / "trials.duckdb")
    with socket_port() as port:
        pass
    env = {**os.environ, "OASIS_OPS_OLLAMA_HOST": "http://127.0.0.1:9", "OASIS_OPS_METRICS_HOST": "box-b"}
    proc = subprocess.Popen([sys.executable, "-m", "oasis_ops", "sample", "--db", str(tmp_path / "trials.duckdb"), "--interval", "0.5",
                             "--prometheus", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        got: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                got = scrape(url)
                if "oasis_sampler_up" in got and "oasis_memory_free_bytes" in got:
                    break
            except (httpx.HTTPError, AssertionError):
                pass
            time.sleep(0.3)
        assert got.get("oasis_sampler_up") == {(("host", "box-b"),): 1.0}, got.keys()
        assert got["oasis_trials_total"][(("host", "box-b"), ("model", MODEL), ("outcome", "ok"))] > 0
        assert got["oasis_ollama_up"] == {(("host", "box-b"),): 0.0}  # nothing on port 9: said, not hidden
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in out


class socket_port:  # noqa: N801 - used as a context manager
    """A free loopback port (bound then released)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_an_ollama_serving_its_own_metrics_is_said_and_never_re_exported(tmp_path: Path) -> None:
    ollama_text = "# HELP ollama_requests_total Requests.\n# TYPE ollama_requests_total counter\nollama_requests_total 5\n"

    def registry_for(answer: httpx.Response) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(OasisCollector(None, None, host="box-a", ollama_url="http://127.0.0.1:11434",
                                         transport=httpx.MockTransport(lambda request: answer)))  # fmt: skip
        return registry

    from prometheus_client import generate_latest

    serving = generate_latest(registry_for(httpx.Response(200, text=ollama_text))).decode()
    assert 'oasis_ollama_metrics_endpoint{host="box-a"} 1.0' in serving and "ollama_requests_total" not in serving
    missing = generate_latest(registry_for(httpx.Response(404, text="404 page not found"))).decode()
    assert 'oasis_ollama_metrics_endpoint{host="box-a"} 0.0' in missing


def test_the_dashboards_own_sampler_exports_when_asked(tmp_path: Path) -> None:
    """`prometheus_listen` set: the dashboard launcher's sampler (SamplerService) serves /metrics too."""
    from oasis_ops.sampler.service import SamplerService

    write_trials(tmp_path / "trials.duckdb")
    settings = load_settings().replace(db=str(tmp_path / "trials.duckdb"), prometheus_listen="127.0.0.1:0", metrics_host="dash",
                                       ollama_host="http://127.0.0.1:9", snapshot_dir=str(tmp_path / "snap"))  # fmt: skip
    said: list[str] = []
    service = SamplerService(settings, announce=said.append)
    service.start()
    try:
        assert service.exporter is not None and said == [f"Prometheus metrics at {service.exporter.url}"]
        got = scrape(service.exporter.url)
        assert got["oasis_trials_total"][(("host", "dash"), ("model", MODEL), ("outcome", "ok"))] > 0
    finally:
        service.stop()
    assert service.exporter is None
