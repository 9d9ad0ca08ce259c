"""Pins of preflight's checks, one function at a time (mutation testing found their messages,
thresholds and values unchecked: tests/test_preflight.py runs the whole command on a few machines).

Each check is fed a built HostSample / ModelStatus / process tree; the expected texts are what a
user reads in `oasis-ops preflight`, so a changed word or threshold is a visible change."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from oasis_ops.control import parse_state
from oasis_ops.diagnosis import preflight as pf
from oasis_ops.diagnosis.preflight import BLOCK, OK, WARN, Check, PreflightResult, Sources
from oasis_ops.errors import ProbeError
from oasis_ops.probes import OllamaClient
from oasis_ops.probes.flash import FlashAttentionSetting
from oasis_ops.probes.host import HostSample
from oasis_ops.probes.ollama import ModelStatus, model_status_from_ps
from oasis_ops.probes.processes import find_ollama_tree, records_from
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials.writer import TrialWriter

NOW = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)
GB = 1_000_000_000


def host(**overrides: Any) -> HostSample:
    values: dict[str, Any] = {"ts": NOW, "mem_total_bytes": 64 * GB, "mem_free_bytes": 20 * GB, "mem_available_bytes": 30 * GB,
                              "page_size": None, "pages_free": None, "swap_used_bytes": 0, "swapins": 0, "swapouts": 0,
                              "pressure": 1.0, "source": "linux /proc"}  # fmt: skip
    values.update(overrides)
    return HostSample(**values)


def status(name: str = "m:1", **overrides: Any) -> ModelStatus:
    values: dict[str, Any] = {"name": name, "model": name, "digest": "d", "size_bytes": 4 * GB, "size_vram_bytes": 4 * GB,
                              "context_length": 4096, "expires_at": None, "state": "loaded", "stopping_since": None,
                              "stopping_for_s": None, "processor": "100% GPU", "cpu_percent": 0.0, "gpu_percent": 100.0,
                              "keep_alive_forever": False}  # fmt: skip
    values.update(overrides)
    return ModelStatus(**values)


def manifest(models: Path, name: str, tag: str, blob_bytes: int) -> Path:
    digest = "ab" * 32
    path = models / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}]}))
    blob = models / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\0" * blob_bytes)
    return blob


# -- the result as a whole


def test_verdict_exit_code_headline_and_dict_follow_the_worst_check() -> None:
    ok, warn, block = Check("a", OK, "fine"), Check("b", WARN, "hm", {"x": 1}), Check("c", BLOCK, "no")
    assert PreflightResult([ok]).verdict == OK and PreflightResult([ok]).exit_code == 0
    assert PreflightResult([ok, warn]).verdict == WARN and PreflightResult([ok, warn]).exit_code == 3
    assert PreflightResult([warn, block, ok]).verdict == BLOCK and PreflightResult([warn, block]).exit_code == 1
    assert PreflightResult([ok]).headline == "GO: every check passed"
    assert PreflightResult([ok, warn, Check("d", WARN, "")]).headline == "GO WITH WARNINGS (b, d)"
    assert PreflightResult([warn, block, Check("e", BLOCK, "")]).headline == "BLOCKED: do not start a long run (c, e)"
    assert PreflightResult([ok, warn]).as_dict() == {
        "verdict": "warnings", "exit_code": 3,
        "checks": [{"id": "a", "status": "ok", "message": "fine", "values": {}}, {"id": "b", "status": "warn", "message": "hm", "values": {"x": 1}}],
    }  # fmt: skip
    assert PreflightResult([block]).as_dict()["verdict"] == "blocked"
    assert PreflightResult([ok]).as_dict()["verdict"] == "go"
    assert pf.format_text(PreflightResult([ok, warn, block])) == (
        "[ok   ] a                fine\n[WARN ] b                hm\n[BLOCK] c                no\nBLOCKED: do not start a long run (c)"
    )


def test_apple_silicon_is_darwin_on_arm64(monkeypatch: pytest.MonkeyPatch) -> None:
    for plat, machine, expected in (("darwin", "arm64", True), ("darwin", "x86_64", False), ("linux", "arm64", False)):
        monkeypatch.setattr(pf.sys, "platform", plat)
        monkeypatch.setattr(pf.platform, "machine", lambda m=machine: m)
        assert pf.is_apple_silicon() is expected


@pytest.mark.parametrize(("raw", "expected"), [("4", 4), (" 2 ", 2), ("0", 1), ("-3", 1), ("x", 1), ("", 1), ("1", 1)])
def test_num_parallel_reads_a_positive_integer_else_one(raw: str, expected: int) -> None:
    assert pf._num_parallel({"OLLAMA_NUM_PARALLEL": raw}) == expected
    assert pf._num_parallel({}) == 1


# -- free memory


def test_free_memory_blocks_below_the_minimum_and_says_how_much_is_free() -> None:
    check = pf._free_memory(host(mem_available_bytes=5 * GB, mem_free_bytes=2 * GB), None, None, 8.0, 1, Sources())
    assert (check.id, check.status) == ("free_memory", BLOCK)
    assert check.message == "only 5.0 GB free or reclaimable (2.0 GB of it free outright); a long run needs at least 8 GB"
    assert check.values == {"available_bytes": 5 * GB, "free_bytes": 2 * GB, "min_free_gb": 8.0, "num_parallel": 1,
                            "pages_free": None, "page_size": None, "need_bytes": 8 * GB}  # fmt: skip


def test_free_memory_at_exactly_the_minimum_is_enough() -> None:
    assert pf._free_memory(host(mem_available_bytes=8 * GB), None, None, 8.0, 1, Sources()).status == OK
    assert pf._free_memory(host(mem_available_bytes=8 * GB - 1), None, None, 8.0, 1, Sources()).status == BLOCK


def test_free_memory_falls_back_to_free_and_says_unknown_without_either() -> None:
    check = pf._free_memory(host(mem_available_bytes=None, mem_free_bytes=9 * GB), None, None, 8.0, 1, Sources())
    assert check.status == OK and check.values["available_bytes"] == 9 * GB
    assert check.message == "9.0 GB free or reclaimable (9.0 GB of it free outright); 8.0 GB wanted (8 GB headroom)"
    unknown = pf._free_memory(host(mem_available_bytes=None, mem_free_bytes=None), None, None, 8.0, 1, Sources())
    assert (check.id, unknown.id) == ("free_memory", "free_memory")
    assert (unknown.status, unknown.message, unknown.values) == (WARN, "free memory unknown on this machine", {})


def test_free_memory_adds_an_unloaded_model_and_kv_per_extra_slot(tmp_path: Path) -> None:
    manifest(tmp_path, "gem", "e4b", 1000)
    src = Sources(models_dir=tmp_path)
    check = pf._free_memory(host(mem_available_bytes=8 * GB + 1500), "gem:e4b", None, 8.0, 3, src)
    # 8 GB + 1,000 B to load + 2 slots x 10% of 1,000 B = 8 GB + 1,200 B: 1,500 B over it
    assert check.status == OK and check.values["need_bytes"] == 8 * GB + 1200
    assert check.values["model"] == "gem:e4b" and check.values["model_size_bytes"] == 1000 and check.values["model_loaded"] is False
    assert check.message == ("8.0 GB free or reclaimable (20.0 GB of it free outright); 8.0 GB wanted (8 GB headroom + gem:e4b 1 kB "
                             "to load + KV cache for 2 more parallel slot(s) (OLLAMA_NUM_PARALLEL=3))")  # fmt: skip
    short = pf._free_memory(host(mem_available_bytes=8 * GB + 1100), "gem:e4b", None, 8.0, 3, src)
    assert short.status == WARN
    assert short.message.startswith("8.0 GB free or reclaimable (20.0 GB of it free outright), below the 8.0 GB wanted (8 GB headroom + ")
    one_slot = pf._free_memory(host(mem_available_bytes=8 * GB + 1100), "gem:e4b", None, 8.0, 1, src)
    assert one_slot.status == OK and one_slot.values["need_bytes"] == 8 * GB + 1000 and "KV cache" not in one_slot.message


def test_a_loaded_model_needs_no_room_to_load_but_its_slots_do() -> None:
    loaded = [status("gem:e4b", size_bytes=10 * GB)]
    check = pf._free_memory(host(mem_available_bytes=10 * GB), "gem:e4b", loaded, 8.0, 2, Sources())
    assert check.values["model_loaded"] is True and check.values["need_bytes"] == 9 * GB  # 8 GB + 10% of 10 GB
    assert check.status == OK and "to load" not in check.message
    assert pf.model_size_bytes("gem:e4b", loaded, None) == (10 * GB, True)
    by_model = [status("alias", size_bytes=3, model="gem:e4b")]
    assert pf.model_size_bytes("gem:e4b", by_model, None) == (3, True)


def test_model_size_from_the_blob_or_unknown(tmp_path: Path) -> None:
    manifest(tmp_path, "gem", "e4b", 4096)
    assert pf.model_size_bytes("gem:e4b", [status("other:1")], tmp_path) == (4096, False)
    assert pf.model_size_bytes("nothere:1", None, tmp_path) == (None, False)
    unknown = pf._free_memory(host(), "nothere:1", None, 8.0, 4, Sources(models_dir=tmp_path))
    assert unknown.values["need_bytes"] == 8 * GB and unknown.values["model_size_bytes"] is None


def test_free_memory_on_macos_shows_the_vm_stat_arithmetic() -> None:
    mac = host(source="macos vm_stat", pages_free=1000, page_size=16384, mem_free_bytes=16_384_000, mem_available_bytes=9 * GB)
    check = pf._free_memory(mac, None, None, 8.0, 1, Sources())
    assert check.message == ("9.0 GB free or reclaimable (vm_stat: Pages free 1,000 x 16,384 B = 16 MB); "
                             "8.0 GB wanted (8 GB headroom)")  # fmt: skip
    assert check.values["pages_free"] == 1000 and check.values["page_size"] == 16384
    no_pages = pf._free_memory(host(source="macos vm_stat", pages_free=None, page_size=16384), None, None, 8.0, 1, Sources())
    assert "vm_stat" not in no_pages.message and "of it free outright" in no_pages.message
    no_free = pf._free_memory(host(mem_free_bytes=None), None, None, 8.0, 1, Sources())
    assert no_free.message == "30.0 GB free or reclaimable; 8.0 GB wanted (8 GB headroom)"


# -- swap and pressure


def test_swap_warns_from_one_gb_in_use() -> None:
    assert pf._swap(host(swap_used_bytes=None)) == Check("swap", OK, "swap use unknown", {})
    assert pf._swap(host(swap_used_bytes=GB - 1, swapouts=5)) == Check("swap", OK, "1000 MB of swap in use",
                                                                        {"swap_used_bytes": GB - 1, "swapouts": 5})  # fmt: skip
    assert pf._swap(host(swap_used_bytes=GB, swapouts=12345)) == Check(
        "swap", WARN, "1.0 GB of swap already in use (Swapouts 12,345): memory is already short", {"swap_used_bytes": GB, "swapouts": 12345})


@pytest.mark.parametrize(("pressure", "level", "status", "label"), [
    (9.9, None, OK, "normal"), (10.0, None, WARN, "warn"), (39.9, None, WARN, "warn"), (40.0, None, BLOCK, "critical"),
    (0.0, "critical", BLOCK, "critical"), (99.0, "normal", OK, "normal"), (0.0, "warn", WARN, "warn"),
])  # fmt: skip
def test_pressure_levels_from_psi_or_the_os_word(pressure: float, level: str | None, status: str, label: str) -> None:
    check = pf._pressure(host(pressure=pressure, pressure_level=level))
    assert (check.id, check.status) == ("pressure", status)
    assert check.values == {"pressure": pressure, "level": label, "source": "linux /proc"}
    what = f"memory pressure {label} ({pressure:.0f}/100, linux /proc)"
    assert check.message == {BLOCK: f"{what}: the machine is swapping now", WARN: what, OK: what}[status]


def test_pressure_unknown_is_ok() -> None:
    assert pf._pressure(host(pressure=None)) == Check("pressure", OK, "memory pressure unknown", {})


# -- flash attention


def test_flash_is_ok_off_apple_silicon_and_warns_on_it_unless_off() -> None:
    on = FlashAttentionSetting("on", "environment", "OLLAMA_FLASH_ATTENTION=1", setting="on")
    check = pf._flash(on, False, "gem:e4b")
    assert check == Check("flash_attention", OK, "flash attention on for gem:e4b (environment: OLLAMA_FLASH_ATTENTION=1); not Apple Silicon",
                          {**on.as_dict(), "apple_silicon": False, "model": "gem:e4b"})  # fmt: skip
    fix = "set OLLAMA_FLASH_ATTENTION=0 (`launchctl setenv OLLAMA_FLASH_ATTENTION 0`, then restart Ollama)"
    assert pf._flash(on, True, None) == Check(
        "flash_attention", WARN, f"flash attention on, Apple Silicon (environment: OLLAMA_FLASH_ATTENTION=1): it can spill gemma's graph to the CPU; {fix}",
        {**on.as_dict(), "apple_silicon": True, "model": None})  # fmt: skip
    off = FlashAttentionSetting("off", "runner --flash-attn", "--flash-attn off", setting="auto")
    assert pf._flash(off, True, "m").message == "flash attention off for m (asked: auto) (runner --flash-attn: --flash-attn off)"
    assert pf._flash(off, True, "m").status == OK
    unknown = FlashAttentionSetting(None, "unknown", "no evidence")
    assert pf._flash(unknown, True, None) == Check(
        "flash_attention", WARN, f"flash attention decided per model on Apple Silicon (unknown: no evidence); pass --model to know; {fix}",
        {**unknown.as_dict(), "apple_silicon": True, "model": None})  # fmt: skip
    same = FlashAttentionSetting("on", "environment", "x", setting="on")
    assert "(asked" not in pf._flash(same, False, None).message


# -- runners, stopping, concurrency


def _tree(extra: list[dict[str, Any]] | None = None, serve: bool = True) -> Any:
    rows = [{"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 1.0, "username": "u"}] if serve else []
    rows += [{"pid": 200, "ppid": 100, "name": "ollama", "create_time": 2.0, "username": "u", "rss_bytes": 3 * GB,
              "cmdline": ["/usr/bin/ollama", "runner", "--model", "/m/blobs/sha256-aa", "--port", "1"]}]  # fmt: skip
    rows += extra or []
    return find_ollama_tree(records_from(rows), serve_pid=100 if serve else None)


def test_runners_clean_duplicate_and_stray() -> None:
    clean = pf._runners(_tree())
    assert clean == Check("runners", OK, "`ollama serve` pid 100 with 1 runner(s), no stale or duplicate one",
                          {"serve_pid": 100, "runners": [200], "stray_runners": []})  # fmt: skip
    twin = {"pid": 201, "ppid": 100, "name": "ollama", "create_time": 3.0, "username": "u", "rss_bytes": GB,
            "cmdline": ["/usr/bin/ollama", "runner", "--model", "/m/blobs/sha256-aa", "--port", "2"]}  # fmt: skip
    dup = pf._runners(_tree([twin]))
    assert dup.status == WARN and dup.values["runners"] == [201, 200]  # newest first
    assert dup.message == "2 runners serve one model (pids 201, 200): a leak; kill the older ones"
    stray = {"pid": 300, "ppid": 1, "name": "ollama", "create_time": 0.5, "username": "u", "rss_bytes": 2 * GB,
             "cmdline": ["/usr/bin/ollama", "runner", "--model", "/m/blobs/sha256-bb", "--port", "3"]}  # fmt: skip
    stale = pf._runners(_tree([stray]))
    assert stale.status == WARN and stale.values["stray_runners"] == [300]
    assert stale.message == "stale runner pid 300 (2.0 GB RSS) is not a child of the current `ollama serve`"
    both = pf._runners(_tree([twin, stray]))
    assert both.message.startswith("stale runner pid 300 (2.0 GB RSS) is not a child of the current `ollama serve`; 2 runners serve one model")
    orphan = pf._runners(_tree(serve=False))  # no serve on the port: its runner is nobody's
    assert (orphan.status, orphan.values) == (WARN, {"serve_pid": None, "runners": [], "stray_runners": [200]})
    assert pf._runners(find_ollama_tree([], serve_pid=None)) == Check(
        "runners", OK, "no `ollama serve` on this machine listens on the Ollama port", {"serve_pid": None, "runners": [], "stray_runners": []})


def test_stopping_blocks_past_the_grace_warns_within_it_and_names_a_busy_stale_expiry() -> None:
    stuck = status("a:1", state="stopping", stopping_for_s=11.0)
    brief = status("b:1", state="stopping", stopping_for_s=10.0)
    never = status("c:1", state="stopping", stopping_for_s=None)
    busy = status("d:1", busy=True)
    check = pf._stopping([stuck, brief, busy], 10.0)
    assert check.status == BLOCK
    assert check.message == "stuck Stopping…: a:1 for 11 s; hard-kill its runner first (`oasis-ops recover MODEL`)"
    assert check.values == {"stopping": [{"model": "a:1", "stopping_for_s": 11.0}, {"model": "b:1", "stopping_for_s": 10.0}],
                            "busy_with_stale_expiry": ["d:1"]}  # fmt: skip
    warn = pf._stopping([brief, never, status("e:1")], 10.0)
    assert (warn.id, warn.status, warn.message) == ("stopping", WARN, "b:1, c:1 Stopping… right now (under 10 s so far)")
    assert check.id == "stopping"
    assert warn.values["stopping"][1] == {"model": "c:1", "stopping_for_s": None}
    ok_busy = pf._stopping([busy], 10.0)
    assert ok_busy.status == OK
    assert ok_busy.message == "no model Stopping… (d:1: Ollama shows Stopping, but it keeps serving: its expiry is stale)"
    assert pf._stopping([status("e:1")], 2.5) == Check("stopping", OK, "no model Stopping…",
                                                        {"stopping": [], "busy_with_stale_expiry": []})  # fmt: skip


def test_concurrency_against_the_recommendation() -> None:
    def state(n: int) -> Any:
        return parse_state({"pid": 999_999, "applied_version": 1, "max_concurrency": n, "heartbeat_at": NOW.isoformat()}, NOW)

    unknown = pf._concurrency(None, False, 4)
    assert unknown == Check("concurrency", OK, "runner concurrency unknown (no control state; pass --db); recommended 4 (OLLAMA_NUM_PARALLEL=4)",
                            {"recommended": 4, "max_concurrency": None})  # fmt: skip
    apple = pf._concurrency(state(2), True, 4)
    assert apple.status == WARN and apple.values == {"recommended": 1, "max_concurrency": 2}
    assert apple.message == ("runner max_concurrency 2, recommended 1 (Ollama on Apple Silicon serialises Metal work; concurrency only "
                             "multiplies memory): `oasis-ops concurrency 1 --db ...`")  # fmt: skip
    assert pf._concurrency(state(4), False, 4) == Check("concurrency", OK, "runner max_concurrency 4 (recommended 4)",
                                                         {"recommended": 4, "max_concurrency": 4})  # fmt: skip
    assert pf._concurrency(state(5), False, 4).status == WARN
    assert pf._concurrency(state(1), False, 0).values["recommended"] == 1


# -- the whole run: which sources reach which check


def _gguf(path: Path, architecture: str) -> None:
    key, value = b"general.architecture", architecture.encode()
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 8)
                     + struct.pack("<Q", len(value)) + value)  # fmt: skip


def _client(models: list[dict[str, Any]] | None, version: str | None = "0.12.3") -> OllamaClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if models is None:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/api/ps":
            return httpx.Response(200, json={"models": models})
        if request.url.path == "/api/version" and version is not None:
            return httpx.Response(200, json={"version": version})
        return httpx.Response(404, json={"error": "not found"})

    return OllamaClient("http://127.0.0.1:11434", transport=httpx.MockTransport(handler), clock=lambda: NOW)


def _machine(tmp_path: Path, *, runner_flash: str | None = None, env: dict[str, str] | None = None) -> tuple[Sources, Path]:
    models = tmp_path / "models"
    blob = manifest(models, "gem", "e4b", 0)
    _gguf(blob, "gemma3")
    runner_cmd = ["/usr/bin/ollama", "runner", "--model", str(blob), "--port", "1"] + (["--flash-attn", runner_flash] if runner_flash else [])
    rows = [{"pid": 100, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 1.0, "username": "u",
             "environ": env if env is not None else {"HOME": "/home/u"}},
            {"pid": 200, "ppid": 100, "name": "ollama", "create_time": 2.0, "username": "u", "rss_bytes": GB, "cmdline": runner_cmd}]  # fmt: skip
    records = records_from(rows)
    log = tmp_path / "server.log"
    log.write_text("")
    sources = Sources(host=lambda: host(), processes=lambda: records, apple_silicon=True, server_log=log, models_dir=models, serve_pid=100)
    return sources, log


def _settings(tmp_path: Path) -> Any:
    return load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"), evict_grace_s=10.0)


def test_every_check_in_order_with_the_version_and_the_models_runner(tmp_path: Path) -> None:
    sources, _ = _machine(tmp_path, runner_flash="off")
    sources.client = _client([{"name": "gem:e4b", "model": "gem:e4b", "size": 2 * GB, "size_vram": 2 * GB, "digest": "d",
                               "expires_at": "2025-11-20T18:00:00Z"}])  # fmt: skip
    result = pf.run_preflight(_settings(tmp_path), model="gem:e4b", min_free_gb=8.0, sources=sources)
    checks = {c.id: c for c in result.checks}
    assert [c.id for c in result.checks] == ["ollama", "free_memory", "swap", "pressure", "flash_attention", "runners", "stopping", "concurrency"]
    assert checks["ollama"] == Check("ollama", OK, "Ollama 0.12.3 answers at http://127.0.0.1:11434 (1 model(s) loaded)")
    assert checks["free_memory"].values["model_loaded"] is True  # from /api/ps, not the 0-byte blob
    # the model's own runner says --flash-attn off: read from its command line, found through the blob
    assert checks["flash_attention"].values["source"] == "runner --flash-attn"
    assert checks["flash_attention"].values["value"] == "off" and checks["flash_attention"].values["model"] == "gem:e4b"
    assert checks["flash_attention"].status == OK
    assert checks["runners"].values == {"serve_pid": 100, "runners": [200], "stray_runners": []}
    assert checks["concurrency"].values["recommended"] == 1  # Apple Silicon, as the sources say


def test_a_model_not_loaded_is_judged_from_its_blobs_architecture_and_the_version(tmp_path: Path) -> None:
    sources, _ = _machine(tmp_path)
    sources.client = _client([])
    flash = {c.id: c for c in pf.run_preflight(_settings(tmp_path), model="gem:e4b", sources=sources).checks}["flash_attention"]
    assert flash.values["source"] == "version default"
    assert "Ollama 0.12.3" in flash.values["detail"] and "architecture gemma3" in flash.values["detail"]
    unknown = _client([], version=None)  # no /api/version: the default cannot be told
    sources.client = unknown
    checks = {c.id: c for c in pf.run_preflight(_settings(tmp_path), model="gem:e4b", sources=sources).checks}
    assert checks["ollama"].message == "Ollama (version unknown) answers at http://127.0.0.1:11434 (0 model(s) loaded)"
    assert checks["flash_attention"].values["source"] == "unknown" and checks["flash_attention"].status == WARN


def test_without_a_model_the_servers_setting_from_its_environment_or_its_log(tmp_path: Path) -> None:
    sources, log = _machine(tmp_path, env={"OLLAMA_FLASH_ATTENTION": "0"})
    sources.client = _client([])
    flash = {c.id: c for c in pf.run_preflight(_settings(tmp_path), sources=sources).checks}["flash_attention"]
    assert (flash.values["source"], flash.values["value"], flash.values["model"]) == ("environment", "off", None)
    sources, log = _machine(tmp_path / "b", env={})  # environment not readable: the log's server config decides
    sources.client = _client([])
    log.write_text('time=2025-11-20T08:58:12.004+01:00 level=INFO source=routes.go:1544 msg="server config" '
                   'env="map[OLLAMA_FLASH_ATTENTION:true OLLAMA_HOST:http://127.0.0.1:11434]"\n')  # fmt: skip
    flash = {c.id: c for c in pf.run_preflight(_settings(tmp_path), sources=sources).checks}["flash_attention"]
    assert (flash.values["source"], flash.values["value"]) == ("server log config", "on")
    log.write_text("")
    flash = {c.id: c for c in pf.run_preflight(_settings(tmp_path), sources=sources).checks}["flash_attention"]
    assert (flash.values["source"], flash.values["value"]) == ("version default", None)
    assert flash.values["detail"] == ("OLLAMA_FLASH_ATTENTION not readable from the server's environment: Ollama 0.12.3 decides per model "
                                      "(see each loaded model's answer)")  # fmt: skip


def test_ollama_down_and_host_memory_unreadable_are_warnings_not_errors(tmp_path: Path) -> None:
    sources, _ = _machine(tmp_path)
    sources.client = _client(None)

    def no_host() -> HostSample:
        raise ProbeError("no /proc/meminfo")

    sources.host = no_host
    checks = {c.id: c for c in pf.run_preflight(_settings(tmp_path), sources=sources).checks}
    assert checks["ollama"].status == WARN and checks["ollama"].message.endswith("; start Ollama before the run")
    assert checks["free_memory"] == Check("free_memory", WARN, "cannot read host memory: no /proc/meminfo")
    assert "swap" not in checks and "pressure" not in checks and "stopping" not in checks  # no readings, no verdicts


def test_preflight_judges_from_the_sidecar_it_is_given_or_the_trial_db(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.preflight import judged_statuses

    recent = datetime.now(UTC) - timedelta(seconds=5)  # judged_statuses judges at the real now
    stale = model_status_from_ps({"name": "m:1", "model": "m:1", "size": 10, "size_vram": 10,
                                  "expires_at": (recent - timedelta(seconds=60)).isoformat()}, recent)  # fmt: skip
    base = load_settings(env={})
    assert judged_statuses([stale], base)[0].state == "stopping"  # nothing given: nothing to judge with
    # the sidecar beside --db, present: its busy sample wins
    db = tmp_path / "run" / "trials.duckdb"
    db.parent.mkdir()
    Sidecar(db.parent / "trials.ops.duckdb").write_batch({"model_samples": [{"ts": recent, "model": "m:1", "state": "loaded", "ollama_state": "stopping",
                                                                             "busy": True, "expires_at": stale.expires_at}]})
    (beside,) = judged_statuses([stale], base.replace(db=str(db)))
    assert (beside.state, beside.busy) == ("loaded", True) and "the sampler saw it serving" in (beside.judged or "")
    # an explicit `sidecar` setting is read instead (none beside this db)
    other_db = tmp_path / "elsewhere" / "t.duckdb"
    other_db.parent.mkdir()
    assert judged_statuses([stale], base.replace(db=str(other_db)))[0].state == "stopping"
    assert judged_statuses([stale], base.replace(db=str(other_db), sidecar=str(db.parent / "trials.ops.duckdb")))[0].busy
    assert judged_statuses([stale], base.replace(sidecar=str(db.parent / "trials.ops.duckdb")))[0].busy  # no db at all
    # no sidecar, a trial DB with a trial ended ok since the expiry
    with TrialWriter(other_db, batch_size=1) as writer:
        writer.add(trial_id=1, model="m:1", started_at=recent - timedelta(seconds=20), finished_at=recent,
                   latency_ms=20_000.0, status="ok")  # fmt: skip
    (from_trials,) = judged_statuses([stale], base.replace(db=str(other_db)))
    assert from_trials.busy and "1 trial(s) ended ok" in (from_trials.judged or "")
    assert not (tmp_path / "elsewhere" / "t.ops.duckdb").exists()  # preflight never creates a sidecar
