"""The exporter and the alert rules against the real Prometheus server and promtool (Debian's
2.42, installed by `make prometheus`): two exporters on this machine stand for two hosts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers_prometheus import need, running_prometheus
from prometheus_client import CollectorRegistry
from test_exporter import MODEL, write_sidecar, write_trials

from oasis_ops.exporter.collector import OasisCollector
from oasis_ops.exporter.httpd import MetricsServer
from oasis_ops.exporter.trialstats import LATENCY_BUCKETS_S, TrialStats
from oasis_ops.settings import load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "oasis-ops-rules.yml"


def test_the_alert_rules_pass_promtool_including_a_healthy_day_with_no_alert() -> None:
    promtool = need("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "oasis-ops-rules.test.yml"], cwd=RULES.parent, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _exporter(root: Path, host: str) -> MetricsServer:
    root.mkdir()
    write_trials(root / "trials.duckdb")
    write_sidecar(root / "trials.ops.duckdb")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OasisCollector(root / "trials.ops.duckdb", TrialStats(root / "trials.duckdb", load_settings()), host=host))
    return MetricsServer(registry, "127.0.0.1:0").start()


def test_prometheus_scrapes_two_hosts_and_promql_gives_their_figures(tmp_path: Path) -> None:
    a, b = _exporter(tmp_path / "a", "box-a"), _exporter(tmp_path / "b", "box-b")
    try:
        targets = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        with running_prometheus(tmp_path, targets, rule_files=[RULES]) as prom:
            hosts = prom.wait_for("sum by (host) (oasis_trials_total)", count=2)
            assert {r["metric"]["host"]: float(r["value"][1]) for r in hosts} == {"box-a": 300.0, "box-b": 300.0}
            assert [r["value"][1] for r in prom.query('up{job="oasis-ops"}')] == ["1", "1"]
            # p50 of the ok trials from the histogram lands in the bucket of the true median.
            expected = write_trials(tmp_path / "check.duckdb")
            ok = np.array(expected["buckets"][(MODEL, "ok")])
            (p50,) = prom.query(f'histogram_quantile(0.5, sum by (le) (oasis_trial_latency_seconds_bucket{{host="box-a",model="{MODEL}",outcome="ok"}}))')
            median = float(np.median(ok))
            upper = next(b for b in LATENCY_BUCKETS_S if b >= median)
            lower = max([0.0, *[b for b in LATENCY_BUCKETS_S if b < median]])
            assert lower <= float(p50["value"][1]) <= upper, (p50, median)
            stopping = prom.query('oasis_model_state{state="stopping"} == 1')
            assert sorted(r["metric"]["host"] for r in stopping) == ["box-a", "box-b"]
            # The rules run on the real series: the stuck model is pending (for: 1m) or firing on both hosts.
            alerts = prom.wait_for('ALERTS{alertname="OasisModelStuckStopping"}', count=2)
            assert {r["metric"]["model"] for r in alerts} == {MODEL}
            assert not prom.query('ALERTS{alertname="OasisSamplerDown"}')  # the heartbeat is fresh
            # Every query of the Grafana dashboard is valid PromQL over the exporter's series and
            # finds them (its $host and $__rate_interval as Grafana would fill them in).
            prom.wait_for("count(rate(oasis_trials_total[1m]))")  # two scrapes: rates exist
            for expr in dashboard_queries():
                filled = expr.replace("$host", ".*").replace("$__rate_interval", "1m")
                assert prom.query(filled), f"no series for the dashboard's {expr!r}"
    finally:
        a.stop()
        b.stop()


def dashboard_queries() -> list[str]:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "oasis-ops.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # an annotation fires on a change; here nothing changes while scraped: its series must exist
    queries += [a["expr"].removesuffix(" > 0") for a in dashboard["annotations"]["list"]]
    assert len(queries) >= 12
    return queries


def test_the_live_page_shows_both_hosts_through_prometheus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Hosts view of the Live page on a real Prometheus scraping two samplers' exporters."""
    from streamlit.testing.v1 import AppTest

    from oasis_ops.fleet import PrometheusClient, host_overview

    a, b = _exporter(tmp_path / "a", "box-a"), _exporter(tmp_path / "b", "box-b")
    try:
        with running_prometheus(tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as prom:
            prom.wait_for("count(rate(oasis_trials_total[1m]))")
            with PrometheusClient(prom.url) as client:
                rows = {r.host: r.figures for r in host_overview(client)}
            assert sorted(rows) == ["box-a", "box-b"]
            assert rows["box-a"]["stopping_models"] == 1.0 and rows["box-a"]["warnings"] == 1.0
            assert rows["box-b"]["available_bytes"] == 2**30 * 25 and rows["box-b"]["vram_used_ratio"] == 23 / 24
            monkeypatch.setenv("OASIS_OPS_DB", str(tmp_path / "a" / "trials.duckdb"))
            monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
            monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", "http://127.0.0.1:9")
            monkeypatch.setenv("OASIS_OPS_PROMETHEUS_URL", prom.url)
            at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
            at.run()
            at.switch_page("pages/live.py").run()
            assert not at.exception, [e.value for e in at.exception]
            assert "Hosts" in [h.value for h in at.subheader]
            table = at.dataframe[-1].value
            assert list(table.index) == ["box-a", "box-b"] and list(table["Stopping models"]) == [1, 1]
            assert list(table["sampler"]) == ["up", "up"] and list(table["VRAM used"]) == ["95.8%", "95.8%"]
            at.switch_page("pages/timeline.py").run()  # the Timeline shows them over the run's range
            assert not at.exception, [e.value for e in at.exception]
            assert "Hosts" in [h.value for h in at.subheader]
            assert ["box-a", "box-b"] in [list(d.value.index) for d in at.dataframe]
    finally:
        a.stop()
        b.stop()
