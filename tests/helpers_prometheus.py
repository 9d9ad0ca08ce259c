"""A real Prometheus server (Debian's, installed by `make prometheus`) for a test, on loopback.

    with running_prometheus(tmp_path, targets=["127.0.0.1:9464"]) as prom:
        prom.wait_for('oasis_sampler_up{host="box-a"}')
        value = prom.query('sum(oasis_trials_total)')

It scrapes the targets every second (job `oasis-ops`), keeps its data under tmp_path, and is
stopped (and reaped) on exit. Without promtool/prometheus the tests skip, except under CI
(`CI` set), where `make test` must have installed them: there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (make prometheus installs Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 30.0, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                result = self.query(expr)
                if len(result) >= count:
                    return result
            time.sleep(0.5)
        raise AssertionError(f"Prometheus had no {count} series for {expr!r} within {timeout:g} s: {result}")


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, targets: list[str], *, rule_files: list[Path] = ()) -> Iterator[Prometheus]:  # type: ignore[assignment]
    binary = need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    rules = "".join(f"  - {p}\n" for p in rule_files)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rule_files else "")
        + "scrape_configs:\n  - job_name: oasis-ops\n    static_configs:\n"
        + f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(prom.url + "/-/ready", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
