"""Preflight: is this machine fit to start a long Ollama run? Each check is ok, warn or block.

Checks (ids): `ollama` (reachable), `free_memory` (free + reclaimable memory against
--min-free-gb plus the model's size when it is not loaded yet and its KV cache per extra
NUM_PARALLEL slot), `swap` (already in use), `pressure` (now), `flash_attention` (on, or left
to Ollama's default, on Apple Silicon), `runners` (stale runners of no current `ollama serve`,
duplicate runners of one model), `stopping` (models stuck Stopping), `concurrency` (the live
runner's max_concurrency from the control channel against the recommendation: 1 for Ollama on
Apple Silicon, else NUM_PARALLEL).

Every source is injectable (a host sampler, an OllamaClient, a process lister, the runner's
state), so tests feed recorded vm_stat/sysctl output, an httpx.MockTransport and fixed process
lists. Verdict and exit code: blocking -> 1, warnings -> 3, go -> 0.
"""

from __future__ import annotations

import os
import platform
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oasis_ops.control import RunnerState
from oasis_ops.diagnosis import text as t
from oasis_ops.errors import OllamaError, ProbeError
from oasis_ops.probes import HostSample, OllamaClient, sample_host
from oasis_ops.probes.flash import (
    FlashAttentionSetting,
    default_server_log,
    log_statements,
    model_flash_attention,
    read_log_tail,
    server_flash_attention,
)
from oasis_ops.probes.gguf import gguf_architecture
from oasis_ops.probes.ollama import ModelStatus
from oasis_ops.probes.processes import (
    OllamaTree,
    ProcessList,
    blob_from_manifest,
    blob_key,
    default_models_dir,
    find_ollama_tree,
)
from oasis_ops.settings import Settings

OK, WARN, BLOCK = "ok", "warn", "block"
EXIT_CODES = {OK: 0, BLOCK: 1, WARN: 3}
GB = 1_000_000_000
SWAP_WARN_BYTES = 1 * GB
KV_SHARE_PER_SLOT = 0.1  # KV cache of one more parallel slot, as a share of the model's size (rough)
PSI_WARN, PSI_CRITICAL = 10.0, 40.0


@dataclass(frozen=True)
class Check:
    id: str
    status: str  # ok | warn | block
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "values": self.values}


@dataclass
class PreflightResult:
    checks: list[Check]

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks}
        return BLOCK if BLOCK in statuses else WARN if WARN in statuses else OK

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def headline(self) -> str:
        blocks = [c.id for c in self.checks if c.status == BLOCK]
        warns = [c.id for c in self.checks if c.status == WARN]
        if blocks:
            return f"BLOCKED: do not start a long run ({', '.join(blocks)})"
        if warns:
            return f"GO WITH WARNINGS ({', '.join(warns)})"
        return "GO: every check passed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": {OK: "go", WARN: "warnings", BLOCK: "blocked"}[self.verdict],
            "exit_code": self.exit_code,
            "checks": [c.as_dict() for c in self.checks],
        }


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


@dataclass
class Sources:
    """Where preflight looks. None means "use the real thing" (or, for state, "not known")."""

    host: Callable[[], HostSample] | None = None
    client: OllamaClient | None = None
    processes: ProcessList | None = None
    runner_state: RunnerState | None = None
    apple_silicon: bool | None = None
    server_log: str | os.PathLike[str] | None = None
    models_dir: str | os.PathLike[str] | None = None
    serve_pid: int | None = None  # None: the `ollama serve` listening on the Ollama port (serve_pid_for)
    gpus: Callable[[], Any] | None = None  # a GpuSnapshot reader (oasis_ops.probes.gpu); None: the real GPUs


def run_preflight(
    settings: Settings,
    *,
    model: str | None = None,
    min_free_gb: float = 8.0,
    sources: Sources | None = None,
) -> PreflightResult:
    src = sources or Sources()
    apple = src.apple_silicon if src.apple_silicon is not None else is_apple_silicon()
    checks: list[Check] = []

    # Ollama and its processes first: the memory check needs the model's size and NUM_PARALLEL.
    statuses: list[ModelStatus] | None = None
    version: str | None = None
    client = src.client or OllamaClient.from_settings(settings)
    try:
        statuses = client.ps()
        try:
            version = client.version()
        except OllamaError:
            version = None
        checks.append(Check("ollama", OK, f"Ollama {version or '(version unknown)'} answers at {client.base_url} "
                                          f"({len(statuses)} model(s) loaded)"))  # fmt: skip
    except OllamaError as exc:
        checks.append(Check("ollama", WARN, f"{exc.message}; start Ollama before the run"))
    finally:
        if src.client is None:
            client.close()
    tree: OllamaTree | None = None
    try:
        from oasis_ops.probes import PsutilProcesses
        from oasis_ops.probes.processes import serve_pid_for

        records = (src.processes or PsutilProcesses())()
        serve_pid = src.serve_pid if src.serve_pid is not None else serve_pid_for(client.base_url, records)
        tree = find_ollama_tree(records, serve_pid=serve_pid)
    except (OSError, ProbeError):
        tree = None
    environ = dict(tree.serve.environ) if tree and tree.serve and tree.serve.environ else {}
    num_parallel = _num_parallel(environ)

    host: HostSample | None = None
    try:
        host = (src.host or sample_host)()
    except ProbeError as exc:
        checks.append(Check("free_memory", WARN, f"cannot read host memory: {exc}"))
    if host is not None:
        checks.append(_free_memory(host, model, statuses, min_free_gb, num_parallel, src))
        checks.append(_swap(host))
        checks.append(_pressure(host))
    log_path = src.server_log if src.server_log is not None else default_server_log(settings.server_log or None)
    statements = log_statements(read_log_tail(log_path)) if log_path else []
    checks.append(_flash(flash_for_run(model, version, environ, tree, statements, src), apple, model))
    if tree is not None:
        checks.append(_runners(tree))
    if statuses is not None:
        checks.append(_stopping(judged_statuses(statuses, settings), float(settings.evict_grace_s)))
    if not apple:  # a Mac's GPU memory is its host memory: the free_memory check
        checks.append(_vram(src, statuses, model))
    checks.append(_concurrency(src.runner_state, apple, num_parallel))
    return PreflightResult(checks)


def _vram(src: Sources, statuses: list[ModelStatus] | None, model: str | None) -> Check:
    from oasis_ops.diagnosis.preflight_gpu import vram_check

    if src.gpus is not None:
        snapshot = src.gpus()
    else:
        from oasis_ops.probes.gpu import GpuProbe

        snapshot = GpuProbe().read()
    size, loaded = model_size_bytes(model, statuses, src.models_dir) if model else (None, False)
    return Check("vram", *vram_check(snapshot, statuses, model, size, loaded))


def judged_statuses(statuses: list[ModelStatus], settings: Settings) -> list[ModelStatus]:
    """Ollama's Stopping on a model that keeps serving is a stale expiry (oasis_ops.modelstate):
    judged from the sidecar's samples and the trial DB when --db gives them."""
    from datetime import UTC, datetime

    from oasis_ops.modelstate import judge_all
    from oasis_ops.sidecar import Sidecar, sidecar_path_for

    sidecar = None
    if settings.db or settings.sidecar:
        path = sidecar_path_for(settings.db or None, settings)
        sidecar = Sidecar(path, settings) if path.exists() else None
    return judge_all(statuses, settings, datetime.now(UTC), sidecar=sidecar, db=settings.db or None)


def _num_parallel(environ: dict[str, str]) -> int:
    raw = environ.get("OLLAMA_NUM_PARALLEL", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def model_size_bytes(model: str, statuses: list[ModelStatus] | None, models_dir: str | os.PathLike[str] | None) -> tuple[int | None, bool]:
    """(size, loaded): from /api/ps when loaded, else the weights blob's file size."""
    for status in statuses or []:
        if model in (status.name, status.model):
            return status.size_bytes, True
    blob = blob_from_manifest(default_models_dir(str(models_dir) if models_dir else None), model)
    if blob and Path(blob).is_file():
        return Path(blob).stat().st_size, False
    return None, False


def _free_memory(host: HostSample, model: str | None, statuses: list[ModelStatus] | None, min_free_gb: float,
                 num_parallel: int, src: Sources) -> Check:  # fmt: skip
    available = host.mem_available_bytes if host.mem_available_bytes is not None else host.mem_free_bytes
    if available is None:
        return Check("free_memory", WARN, "free memory unknown on this machine")
    minimum = min_free_gb * GB
    need = minimum
    parts = [f"{min_free_gb:g} GB headroom"]
    values: dict[str, Any] = {"available_bytes": available, "free_bytes": host.mem_free_bytes, "min_free_gb": min_free_gb,
                              "num_parallel": num_parallel, "pages_free": host.pages_free, "page_size": host.page_size}  # fmt: skip
    if model:
        size, loaded = model_size_bytes(model, statuses, src.models_dir)
        values.update(model=model, model_size_bytes=size, model_loaded=loaded)
        if size:
            if not loaded:
                need += size
                parts.append(f"{model} {t.size(size)} to load")
            if num_parallel > 1:
                need += size * KV_SHARE_PER_SLOT * (num_parallel - 1)
                parts.append(f"KV cache for {num_parallel - 1} more parallel slot(s) (OLLAMA_NUM_PARALLEL={num_parallel})")
    values["need_bytes"] = need
    vm = ""
    if host.source.startswith("macos") and host.pages_free is not None and host.page_size:
        vm = f" (vm_stat: Pages free {t.count(host.pages_free)} x {t.count(host.page_size)} B = {t.size(host.mem_free_bytes)})"
    elif host.mem_free_bytes is not None:
        vm = f" ({t.size(host.mem_free_bytes)} of it free outright)"
    have = f"{t.size(available)} free or reclaimable{vm}"
    if available < minimum:
        return Check("free_memory", BLOCK, f"only {have}; a long run needs at least {min_free_gb:g} GB", values)
    if available < need:
        return Check("free_memory", WARN, f"{have}, below the {t.size(need)} wanted ({' + '.join(parts)})", values)
    return Check("free_memory", OK, f"{have}; {t.size(need)} wanted ({' + '.join(parts)})", values)


def _swap(host: HostSample) -> Check:
    used = host.swap_used_bytes
    if used is None:
        return Check("swap", OK, "swap use unknown", {})
    values = {"swap_used_bytes": used, "swapouts": host.swapouts}
    if used >= SWAP_WARN_BYTES:
        return Check("swap", WARN, f"{t.size(used)} of swap already in use (Swapouts {t.count(host.swapouts)}): memory is already short", values)
    return Check("swap", OK, f"{t.size(used)} of swap in use", values)


def _pressure(host: HostSample) -> Check:
    pressure = host.pressure
    if pressure is None:
        return Check("pressure", OK, "memory pressure unknown", {})
    label = host.pressure_level
    if label is None:
        label = "critical" if pressure >= PSI_CRITICAL else "warn" if pressure >= PSI_WARN else "normal"
    values = {"pressure": pressure, "level": label, "source": host.source}
    what = f"memory pressure {label} ({pressure:.0f}/100, {host.source})"
    if label == "critical":
        return Check("pressure", BLOCK, f"{what}: the machine is swapping now", values)
    if label == "warn":
        return Check("pressure", WARN, what, values)
    return Check("pressure", OK, what, values)


def flash_for_run(model: str | None, version: str | None, environ: dict[str, str], tree: OllamaTree | None,
                  statements: list[dict[str, Any]], src: Sources) -> FlashAttentionSetting:  # fmt: skip
    """The one flash-attention answer (oasis_ops.probes.flash) for the model the run will use:
    its runner's command line when it is loaded, its blob's architecture against the version's
    default otherwise. Without --model, the server-wide setting."""
    if not model:
        return server_flash_attention(environ or None, statements, version=version)
    blob = blob_from_manifest(default_models_dir(str(src.models_dir) if src.models_dir else None), model)
    runner = None
    if tree is not None and blob:
        runner = next((rp for rp in tree.runners if rp.command.model and blob_key(rp.command.model) == blob_key(blob)), None)
    return model_flash_attention(
        serve_environ=environ or None, runner_cmdline=runner.record.cmdline if runner else None, blob=blob,
        architecture=gguf_architecture(blob) if blob else None, version=version, statements=statements,
    )  # fmt: skip


def _flash(setting: FlashAttentionSetting, apple: bool, model: str | None) -> Check:
    values = {**setting.as_dict(), "apple_silicon": apple, "model": model}
    what = f"flash attention {setting.value or 'decided per model'}" + (f" for {model}" if model else "")
    if setting.setting and setting.setting != setting.value:
        what += f" (asked: {setting.setting})"
    where = f"{setting.source}: {setting.detail}"
    if not apple:
        return Check("flash_attention", OK, f"{what} ({where}); not Apple Silicon", values)
    fix = "set OLLAMA_FLASH_ATTENTION=0 (`launchctl setenv OLLAMA_FLASH_ATTENTION 0`, then restart Ollama)"
    if setting.value == "off":
        return Check("flash_attention", OK, f"{what} ({where})", values)
    if setting.value == "on":
        return Check("flash_attention", WARN, f"{what}, Apple Silicon ({where}): it can spill gemma's graph to the CPU; {fix}", values)
    return Check("flash_attention", WARN, f"{what} on Apple Silicon ({where}); pass --model to know; {fix}", values)


def _runners(tree: OllamaTree) -> Check:
    problems = []
    for rp in tree.stray_runners:
        problems.append(f"stale runner pid {rp.pid} ({t.size(rp.record.rss_bytes)} RSS) is not a child of the current `ollama serve`")
    by_blob: dict[str, list[int]] = defaultdict(list)
    for rp in tree.runners:
        if rp.command.model:
            by_blob[blob_key(rp.command.model)].append(rp.pid)
    for pids in by_blob.values():
        if len(pids) > 1:
            problems.append(f"{len(pids)} runners serve one model (pids {', '.join(map(str, pids))}): a leak; kill the older ones")
    values = {"serve_pid": tree.serve.pid if tree.serve else None, "runners": [rp.pid for rp in tree.runners],
              "stray_runners": [rp.pid for rp in tree.stray_runners]}  # fmt: skip
    if problems:
        return Check("runners", WARN, "; ".join(problems), values)
    if tree.serve is None:
        return Check("runners", OK, "no `ollama serve` on this machine listens on the Ollama port", values)
    return Check("runners", OK, f"`ollama serve` pid {tree.serve.pid} with {len(tree.runners)} runner(s), no stale or duplicate one", values)


def _stopping(statuses: list[ModelStatus], grace_s: float) -> Check:
    stuck = [s for s in statuses if s.state == "stopping" and (s.stopping_for_s or 0) > grace_s]
    brief = [s for s in statuses if s.state == "stopping" and s not in stuck]
    busy = [s for s in statuses if s.busy]
    values = {"stopping": [{"model": s.name, "stopping_for_s": s.stopping_for_s} for s in stuck + brief],
              "busy_with_stale_expiry": [s.name for s in busy]}  # fmt: skip
    if stuck:
        names = ", ".join(f"{s.name} for {t.duration(s.stopping_for_s)}" for s in stuck)
        return Check("stopping", BLOCK, f"stuck Stopping…: {names}; hard-kill its runner first (`oasis-ops recover MODEL`)", values)
    if brief:
        return Check("stopping", WARN, f"{', '.join(s.name for s in brief)} Stopping… right now (under {grace_s:g} s so far)", values)
    if busy:
        return Check("stopping", OK, f"no model Stopping… ({', '.join(s.name for s in busy)}: Ollama shows Stopping, but it "
                                     "keeps serving: its expiry is stale)", values)  # fmt: skip
    return Check("stopping", OK, "no model Stopping…", values)


def _concurrency(state: RunnerState | None, apple: bool, num_parallel: int) -> Check:
    recommended = 1 if apple else max(1, num_parallel)
    why = "Ollama on Apple Silicon serialises Metal work; concurrency only multiplies memory" if apple else f"OLLAMA_NUM_PARALLEL={num_parallel}"
    values: dict[str, Any] = {"recommended": recommended, "max_concurrency": state.max_concurrency if state else None}
    if state is None or state.max_concurrency is None:
        return Check("concurrency", OK, f"runner concurrency unknown (no control state; pass --db); recommended {recommended} ({why})", values)
    if state.max_concurrency > recommended:
        return Check("concurrency", WARN, f"runner max_concurrency {state.max_concurrency}, recommended {recommended} ({why}): "
                     f"`oasis-ops concurrency {recommended} --db ...`", values)  # fmt: skip
    return Check("concurrency", OK, f"runner max_concurrency {state.max_concurrency} (recommended {recommended})", values)


def format_text(result: PreflightResult) -> str:
    marks = {OK: "ok   ", WARN: "WARN ", BLOCK: "BLOCK"}
    lines = [f"[{marks[c.status]}] {c.id:<16} {c.message}" for c in result.checks]
    lines.append(result.headline)
    return "\n".join(lines)
