"""Preflight on recorded macOS output (vm_stat, sysctl), a mock Ollama API and fixed process lists.

critical pressure -> blocked (exit 1); a healthy machine -> go (exit 0); warnings only -> exit 3.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from oasis_ops.control import parse_state
from oasis_ops.diagnosis.preflight import Sources, format_text, run_preflight
from oasis_ops.probes import OllamaClient
from oasis_ops.probes.macos import parse_sysctl, sample_macos
from oasis_ops.probes.processes import ProcessRecord, records_from
from oasis_ops.settings import load_settings

NOW = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)
MODEL = "gemma4:e4b"
SIZE = 9_608_425_472
BLOB = "/Users/eval/.ollama/models/blobs/sha256-4e30e2665218745ef463f722c0bf86be0cab6ee676320f1cfadf91e989107448"
HEALTHY_SYSCTL = """vm.swapusage: total = 1024.00M  used = 0.00M  free = 1024.00M  (encrypted)
kern.memorystatus_vm_pressure_level: 1
hw.memsize: 55297703936
hw.pagesize: 16384
machdep.cpu.brand_string: Apple M2 Max
"""


def mac_host(fixtures: Path, vm_stat: str, sysctl: str | None = None) -> Callable[[], Any]:
    vm_text = (fixtures / "macos" / vm_stat).read_text()
    sysctl_text = sysctl if sysctl is not None else (fixtures / "macos" / "sysctl.txt").read_text()

    def run(argv: list[str]) -> str:
        return vm_text if argv[0] == "vm_stat" else sysctl_text

    return lambda: sample_macos(run=run, clock=lambda: NOW)


def ollama(models: list[dict[str, Any]]) -> OllamaClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1"
        if request.url.path == "/api/ps":
            return httpx.Response(200, json={"models": models})
        return httpx.Response(404, json={"error": "not found"})

    return OllamaClient("http://127.0.0.1:11434", transport=httpx.MockTransport(handler), clock=lambda: NOW)


def ps_model(expires_at: datetime) -> dict[str, Any]:
    return {"name": MODEL, "model": MODEL, "size": SIZE, "size_vram": SIZE, "digest": "abc",
            "expires_at": expires_at.isoformat().replace("+00:00", "Z"), "context_length": 4096}  # fmt: skip


def processes(*, flash: str = "off", env: dict[str, str] | None = None, extra: list[dict[str, Any]] | None = None) -> Callable[[], list[ProcessRecord]]:
    serve = {"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/Applications/Ollama.app/Contents/Resources/ollama", "serve"],
             "create_time": 1000.0, "username": "eval", "environ": env if env is not None else {"OLLAMA_FLASH_ATTENTION": "0" if flash == "off" else "1"}}  # fmt: skip
    runner = {"pid": 200, "ppid": 100, "name": "llama-server", "username": "eval", "create_time": 2000.0, "rss_bytes": 10_600_000_000,
              "cmdline": ["/Applications/Ollama.app/Contents/Resources/llama-server", "--model", BLOB, "--port", "53312", "--flash-attn", flash]}  # fmt: skip
    records = records_from([serve, runner, *(extra or [])])
    return lambda: records


def state(max_concurrency: int) -> Any:
    return parse_state({"pid": 999_999, "applied_version": 3, "max_concurrency": max_concurrency, "heartbeat_at": NOW.isoformat()}, NOW)


def settings(tmp_path: Path) -> Any:
    return load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"), evict_grace_s=10.0)


def by_id(result: Any) -> dict[str, Any]:
    return {c.id: c for c in result.checks}


def test_critical_pressure_blocks(fixtures_dir: Path, tmp_path: Path) -> None:
    sources = Sources(
        serve_pid=100,
        host=mac_host(fixtures_dir, "vm_stat_1800.txt"),  # 58,402 pages free, Swapouts 504,282
        client=ollama([ps_model(NOW - timedelta(minutes=20))]),  # stuck Stopping for 20 min
        processes=processes(flash="on"),
        runner_state=state(4),
        apple_silicon=parse_sysctl((fixtures_dir / "macos" / "sysctl.txt").read_text())["apple_silicon"],
        server_log="",
    )
    result = run_preflight(settings(tmp_path), model=MODEL, sources=sources)
    checks = by_id(result)
    assert result.verdict == "block" and result.exit_code == 1
    assert checks["pressure"].status == "block" and "critical" in checks["pressure"].message
    assert checks["stopping"].status == "block" and "gemma4:e4b for 20 min" in checks["stopping"].message
    assert checks["swap"].status == "warn" and "3.4 GB" in checks["swap"].message
    assert checks["flash_attention"].status == "warn" and "on" in checks["flash_attention"].message
    assert checks["concurrency"].status == "warn" and "recommended 1" in checks["concurrency"].message
    assert "Pages free 58,402 x 16,384 B = 957 MB" in checks["free_memory"].message
    doc = result.as_dict()
    assert doc["verdict"] == "blocked" and doc["exit_code"] == 1
    json.dumps(doc)  # serializable as the CLI prints it
    assert format_text(result).splitlines()[-1].startswith("BLOCKED")


def test_healthy_machine_goes(fixtures_dir: Path, tmp_path: Path) -> None:
    sources = Sources(
        serve_pid=100,
        host=mac_host(fixtures_dir, "vm_stat_1700.txt", HEALTHY_SYSCTL),  # 2,103,449 pages free: 34 GB
        client=ollama([ps_model(NOW + timedelta(minutes=5))]),
        processes=processes(flash="off"),
        runner_state=state(1),
        apple_silicon=True,
        server_log="",
    )
    result = run_preflight(settings(tmp_path), model=MODEL, min_free_gb=8, sources=sources)
    assert [c.status for c in result.checks] == ["ok"] * len(result.checks), format_text(result)
    assert {c.id for c in result.checks} == {"ollama", "free_memory", "swap", "pressure", "flash_attention", "runners", "stopping", "concurrency"}
    assert result.exit_code == 0 and result.verdict == "ok"
    free = by_id(result)["free_memory"]
    assert free.values["model_loaded"] is True and free.values["need_bytes"] == 8e9


def test_warnings_exit_3(fixtures_dir: Path, tmp_path: Path) -> None:
    stale = {"pid": 300, "ppid": 1, "name": "llama-server", "username": "eval", "create_time": 500.0, "rss_bytes": 9_000_000_000,
             "cmdline": ["/old/llama-server", "--model", BLOB, "--port", "40000"]}  # fmt: skip
    sources = Sources(
        serve_pid=100,
        host=mac_host(fixtures_dir, "vm_stat_1700.txt", HEALTHY_SYSCTL),
        client=ollama([]),  # not loaded yet, and its size unknown here
        processes=processes(flash="auto", env={}, extra=[stale]),  # macOS hides the environment
        runner_state=state(4),
        apple_silicon=True,
        server_log="",
    )
    result = run_preflight(settings(tmp_path), model=MODEL, sources=sources)
    checks = by_id(result)
    assert result.verdict == "warn" and result.exit_code == 3
    assert {c.id for c in result.checks if c.status == "warn"} == {"flash_attention", "runners", "concurrency"}
    assert "stale runner pid 300" in checks["runners"].message
    assert format_text(result).splitlines()[-1].startswith("GO WITH WARNINGS")


def test_not_enough_free_memory_blocks_and_ollama_down_warns(fixtures_dir: Path, tmp_path: Path) -> None:
    vm = (fixtures_dir / "macos" / "vm_stat_1800.txt").read_text().replace("822011.", "100.")  # little reclaimable

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = OllamaClient("http://127.0.0.1:9", transport=httpx.MockTransport(refused))
    host = lambda: sample_macos(run=lambda argv: vm if argv[0] == "vm_stat" else HEALTHY_SYSCTL, clock=lambda: NOW)  # noqa: E731
    sources = Sources(host=host, client=down, processes=lambda: [], apple_silicon=False, server_log="")
    result = run_preflight(settings(tmp_path), sources=sources)
    checks = by_id(result)
    assert checks["free_memory"].status == "block" and "a long run needs at least 8 GB" in checks["free_memory"].message
    assert checks["ollama"].status == "warn"
    assert "stopping" not in checks  # nothing to say without Ollama
    assert result.exit_code == 1


def test_cli_reads_concurrency_from_the_control_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from oasis_ops import cli
    from oasis_ops.control import atomic_write_json, ensure_control_dir

    db = tmp_path / "trials.duckdb"
    directory = ensure_control_dir(tmp_path / "trials.control")
    atomic_write_json(directory / "state.json", {"pid": 999_999, "applied_version": 2, "max_concurrency": 4,
                                                 "heartbeat_at": datetime.now(UTC).isoformat()})  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{port}")  # closed: Ollama is "down"
    code = cli.main(["preflight", "--db", str(db), "--server-log", str(tmp_path / "none.log"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == doc["exit_code"] and code in (1, 3)  # never "go": Ollama does not answer
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["ollama"]["status"] == "warn"
    assert checks["concurrency"]["values"]["max_concurrency"] == 4 and checks["concurrency"]["status"] == "warn"
    with pytest.raises(SystemExit) as refused:  # argparse: the flag's range, exit 2
        cli.main(["preflight", "--min-free-gb", "-1"])
    assert refused.value.code == 2
