"""`oasis-ops status`: one snapshot of Ollama, its models and runners, host memory and flash
attention, as a JSON-able dict (keys documented in the README) and as text. No UI here.

Runner CPU % needs two looks at the process, and a swap-out rate needs two counter readings,
so the snapshot looks twice, STATUS_INTERVAL_S (1 s) apart. The swap-out rate comes from the
sidecar's recent host samples instead when a sampler is writing them (same source, fresh).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.control import control_dir_for, control_summary
from oasis_ops.errors import OasisOpsError, OllamaError, OllamaUnreachable
from oasis_ops.fmt import fmt_duration
from oasis_ops.modelstate import RunnerLooks, judge_all
from oasis_ops.probes import (
    HostSample,
    ModelProbe,
    ModelSnapshot,
    OllamaClient,
    PsutilProcesses,
    human_bytes,
)
from oasis_ops.probes.flash import default_server_log
from oasis_ops.probes.host import utc_now
from oasis_ops.probes.processes import ProcessList
from oasis_ops.sampler.core import HEARTBEAT_STALE_S
from oasis_ops.sampler.hostsource import HostSource, emulated_models, is_simulated, pressure_level
from oasis_ops.sampler.procwatch import serve_pid_for
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, records

STATUS_INTERVAL_S = 1.0
SIDECAR_RATE_WINDOW_S = 120.0  # swap-out rate over at most the last two minutes of samples
SIDECAR_MAX_AGE_S = 30.0  # the sidecar's newest host sample must be this fresh to be used
SIDECAR_MIN_SPAN_S = 5.0  # and its samples must span at least this long


def swapouts_per_min(first_ts: datetime, first: int | None, last_ts: datetime, last: int | None) -> float | None:
    """Rate between two cumulative counter readings; None when unknown or the counter reset."""
    if first is None or last is None:
        return None
    span = (last_ts - first_ts).total_seconds()
    if span <= 0 or last < first:
        return None
    return (last - first) / span * 60.0


def sidecar_swap_rate(sidecar: Sidecar, source: str | None, now: datetime) -> tuple[float | None, str | None]:
    """(swap-outs per minute, note) from the sidecar's recent host samples of `source`."""
    if not sidecar.path.exists():
        return None, None
    rows = records(sidecar.host_samples_since(now - timedelta(seconds=SIDECAR_RATE_WINDOW_S), max_rows=1000))
    rows = [r for r in rows if r.get("swapouts") is not None and (source is None or r.get("source") == source)]
    if len(rows) < 2:
        return None, None
    first, last = rows[0], rows[-1]
    if (now - last["ts"]).total_seconds() > SIDECAR_MAX_AGE_S or (last["ts"] - first["ts"]).total_seconds() < SIDECAR_MIN_SPAN_S:
        return None, None
    rate = swapouts_per_min(first["ts"], first["swapouts"], last["ts"], last["swapouts"])
    span = (last["ts"] - first["ts"]).total_seconds()
    return rate, f"sidecar: {len(rows)} samples over {span:.0f} s"


def with_episode(entry: dict[str, Any], sidecar: Sidecar | None, now: datetime) -> dict[str, Any]:
    """Count Stopping from the start of the runner's Stopping episode in the sampler's samples
    when that is earlier: a harness that re-sends keep_alive 0 resets Ollama's expires_at, but
    not how long the runner has been stuck. `stopping_counted_from` says which was used."""
    entry = dict(entry)
    entry["stopping_counted_from"] = "ollama" if entry["state"] == "stopping" else None
    if entry["state"] != "stopping" or sidecar is None:
        return entry
    start = episode_start_from_sidecar(sidecar, entry["name"], now, entry.get("runner_pid"))
    ollama_since = datetime.fromisoformat(entry["stopping_since"]) if entry["stopping_since"] else None
    if start is not None and (ollama_since is None or start < ollama_since):
        entry["stopping_since"] = start.isoformat()
        entry["stopping_for_s"] = round((now - start).total_seconds(), 1)
        entry["stopping_counted_from"] = "sampler episode"
    return entry


def model_dict(snapshot: ModelSnapshot) -> dict[str, Any]:
    status = snapshot.status
    return {
        "name": status.name,
        "state": status.state,
        "ollama_state": status.ollama_state,
        "busy": status.busy,
        "judged": status.judged,
        "stopping_since": status.stopping_since.isoformat() if status.stopping_since else None,
        "stopping_for_s": round(status.stopping_for_s, 1) if status.stopping_for_s is not None else None,
        "expires_at": status.expires_at.isoformat() if status.expires_at else None,
        "keep_alive_forever": status.keep_alive_forever,
        "processor": status.processor,
        "processor_cpu_percent": status.cpu_percent,
        "processor_gpu_percent": status.gpu_percent,
        "size_bytes": status.size_bytes,
        "size_vram_bytes": status.size_vram_bytes,
        "context_length": status.context_length,
        "runner_pid": snapshot.runner_pid,
        "runner_create_time": snapshot.runner_create_time,
        "runner_rss_bytes": snapshot.runner_rss_bytes,
        "runner_cpu_percent": round(snapshot.runner_cpu_percent, 1) if snapshot.runner_cpu_percent is not None else None,
        "runner_threads": snapshot.runner_threads,
        "runner_cmdline": list(snapshot.runner_cmdline) if snapshot.runner_cmdline else None,
        "note": snapshot.note,
    }


def host_dict(sample: HostSample | None, rate: float | None, rate_source: str | None, error: str | None) -> dict[str, Any]:
    keys = ("mem_total_bytes", "mem_free_bytes", "mem_available_bytes", "page_size", "pages_free", "swap_total_bytes",
            "swap_used_bytes", "swapins", "swapouts", "pressure")  # fmt: skip
    data: dict[str, Any] = {key: getattr(sample, key) if sample else None for key in keys}
    source = sample.source if sample else None
    data.update(
        ts=sample.ts.isoformat() if sample else None,
        source=source,
        simulated=is_simulated(source),
        pressure_level=(sample.pressure_level or pressure_level(sample.pressure, source)) if sample else None,
        swapouts_per_min=round(rate, 1) if rate is not None else None,
        swapouts_per_min_from=rate_source,
        error=error,
    )
    return data


def take_status(
    settings: Settings,
    *,
    sidecar_path: str | os.PathLike[str] | None = None,
    client: OllamaClient | None = None,
    processes: ProcessList | None = None,
    host_source: HostSource | None = None,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    interval_s: float = STATUS_INTERVAL_S,
    gpu_reader: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The snapshot as a dict (see the README's `oasis-ops status --json` keys). `errors` lists
    what could not be read; Ollama being down is not an error (ollama.reachable is false)."""
    own_client = client is None
    client = client or OllamaClient(settings.ollama_host, timeout_s=float(settings.ollama_timeout_s), clock=clock)
    own_host = host_source is None
    host_source = host_source or HostSource(settings.ollama_host, timeout_s=min(1.0, float(settings.ollama_timeout_s)), clock=clock)
    process_list = processes or PsutilProcesses()
    probe = ModelProbe(client, process_list, settings.ollama_models or None, clock)
    errors: list[str] = []
    sidecar = Sidecar(sidecar_path, settings) if sidecar_path else None
    looks = RunnerLooks()
    try:
        # Ollama first: whether it serves the demo's simulated host decides the host source.
        ollama: dict[str, Any] = {"url": client.base_url, "reachable": False, "version": None, "error": None}
        try:
            ollama["version"] = client.version()
            ollama["reachable"] = True
        except OllamaUnreachable as exc:
            ollama["error"] = str(exc)
        except OllamaError as exc:
            ollama.update(reachable=True, error=str(exc))
        if ollama["reachable"]:
            host_source.detect()
            # The serve listening on our URL, not another one on this machine (see serve_pid_for).
            probe.serve_pid = serve_pid_for(client.base_url, process_list())

        def host_now() -> tuple[HostSample | None, str | None]:
            try:
                return host_source.sample(), None
            except OasisOpsError as exc:
                return None, str(exc)

        def models_now() -> list[ModelSnapshot]:
            if not ollama["reachable"] or ollama["error"]:
                return []
            try:
                return probe.snapshot()
            except OllamaError as exc:
                ollama["error"] = str(exc)
                return []

        # Ollama's Stopping on a llama-server runner: read the runner at both looks, so a runner
        # decoding between them is known to serve now, not only as of the sampler's last read.
        def look_at_runners(snapshots: list[ModelSnapshot]) -> None:
            targets = [(m.model, m.runner_pid, m.runner_create_time, m.runner_port) for m in snapshots
                       if m.status.ollama_state == "stopping" and m.runner_variant == "llama-server"
                       and m.runner_pid is not None and m.runner_port]  # fmt: skip
            if targets:
                looks.look(targets)  # type: ignore[arg-type]

        host1, host_error = host_now()
        models = models_now()
        look_at_runners(models)
        rate: float | None = None
        rate_from: str | None = None
        if sidecar is not None and host1 is not None:
            try:
                rate, rate_from = sidecar_swap_rate(sidecar, host1.source, clock())
            except OasisOpsError as exc:
                errors.append(f"sidecar: {exc}")
        need_cpu = any(m.runner_pid is not None for m in models)
        need_rate = rate is None and host1 is not None
        host = host1
        if need_cpu or need_rate:
            sleep(interval_s)  # the second look: runner CPU % and the swap-out counter
            host2, error2 = host_now()
            if host2 is not None:
                host = host2
                if need_rate and host1 is not None and host1.source == host2.source:
                    rate = swapouts_per_min(host1.ts, host1.swapouts, host2.ts, host2.swapouts)
                    rate_from = f"two readings {(host2.ts - host1.ts).total_seconds():.1f} s apart"
            host_error = host_error or error2
            if need_cpu:
                models = models_now() or models
                look_at_runners(models)
        if host_error:
            errors.append(f"host memory: {host_error}")
        if probe.models_listed > probe.MAX_MODELS:
            errors.append(f"Ollama lists {probe.models_listed} loaded models; only the first {probe.MAX_MODELS} are shown")
        if models:  # Ollama's Stopping on a model that keeps serving is a stale expiry: judge it
            now = clock()
            judged = judge_all([m.status for m in models], settings, now, sidecar=sidecar, db=settings.db or None,
                               seen=looks.serving(now))  # fmt: skip
            models = [dataclasses.replace(m, status=j) for m, j in zip(models, judged, strict=True)]

        # The demo's emulated models (a Python stand-in, not a real runner) say so everywhere.
        emulated = emulated_models(client.base_url) if models else frozenset()
        server_log = default_server_log(settings.server_log or None)
        model_flash: dict[str, dict[str, Any]] = {}
        try:
            server_flash, per_model = probe.flash_attention(models, ollama["version"], server_log_path=server_log)
            flash = server_flash.as_dict()
            model_flash = {name: setting.as_dict() for name, setting in per_model.items()}
        except OasisOpsError as exc:
            flash = {"value": None, "setting": None, "source": "unknown", "detail": str(exc)}

        sampler: dict[str, Any] | None = None
        if sidecar is not None and sidecar.path.exists():
            try:
                beat = sidecar.sampler_heartbeat(now=clock(), stale_after_s=HEARTBEAT_STALE_S)
            except OasisOpsError as exc:
                errors.append(f"sidecar: {exc}")
                beat = None
            if beat is not None:
                sampler = {
                    "running": beat.running,
                    "pid": beat.pid,
                    "last_tick_at": beat.last_tick_at.isoformat() if beat.last_tick_at else None,
                    "age_s": round(beat.age_s, 1) if beat.age_s is not None else None,
                    "errors": beat.errors,
                    "last_error": beat.last_error,
                    "summary": beat.describe(),
                }
        return {
            "taken_at": clock().isoformat(),
            "ollama": ollama,
            "models": [{**with_episode(model_dict(m), sidecar, clock()), "flash_attention": model_flash.get(m.model),
                        "emulated": m.model in emulated}
                       for m in models],
            "host": host_dict(host, rate, rate_from, host_error),
            "flash_attention": flash,
            "sidecar": str(sidecar.path) if sidecar is not None else None,
            "sampler": sampler,
            "control": control_summary(_control_dir(settings), clock),
            "gpus": gpu_dict(gpu_reader() if gpu_reader is not None else _read_gpus(settings), models),
            "errors": errors,
        }
    finally:
        looks.close()
        if own_client:
            client.close()
        if own_host:
            host_source.close()


def _read_gpus(settings: Settings) -> Any:
    # lazily: NVML and subprocesses only for status
    from oasis_ops.sampler.gpusource import GpuSource

    source = GpuSource(settings.ollama_host, timeout_s=min(1.0, float(settings.ollama_timeout_s)))
    try:
        return source.read()  # the demo's simulated GPU in the demo, else this machine's
    finally:
        source.close()


def gpu_dict(snapshot: Any, models: list[ModelSnapshot]) -> dict[str, Any]:
    """`gpus` of `status --json`: the GPUs and each runner's VRAM (source `none` without a GPU)."""
    return {
        "source": snapshot.source,
        "note": snapshot.note,
        "devices": [{"index": g.index, "uuid": g.uuid, "name": g.name, "vendor": g.vendor,
                     "memory_total_bytes": g.memory_total_bytes, "memory_used_bytes": g.memory_used_bytes,
                     "memory_free_bytes": g.memory_free_bytes, "utilization_percent": g.utilization_percent,
                     "temperature_c": g.temperature_c, "power_w": g.power_w} for g in snapshot.gpus],
        "runner_vram_bytes": {m.model: snapshot.vram_of(m.runner_pid) for m in models if m.runner_pid is not None and snapshot.gpus},
    }  # fmt: skip


def _control_dir(settings: Settings) -> Path | None:
    if not (settings.db or settings.control_dir):
        return None
    return control_dir_for(settings.db or None, settings)


# --- text ---------------------------------------------------------------------------------------
def _num(value: float | int | None, fmt: str = "{:,}") -> str:
    return "?" if value is None else fmt.format(value)


def format_status(snap: dict[str, Any]) -> str:
    """The snapshot for people (what `oasis-ops status` prints without --json)."""
    lines: list[str] = []
    ollama = snap["ollama"]
    if ollama["reachable"] and not ollama["error"]:
        lines.append(f"Ollama   {ollama['url']}: reachable, version {ollama['version']}")
    elif ollama["reachable"]:
        lines.append(f"Ollama   {ollama['url']}: answering, but not usably: {ollama['error']}")
    else:
        lines.append(f"Ollama   {ollama['url']}: NOT REACHABLE ({ollama['error']})")
    if snap["models"]:
        lines.append("Models")
        for m in snap["models"]:
            if m["state"] == "stopping":
                state = f"STOPPING for {fmt_duration(m['stopping_for_s'])}"
            elif m.get("ollama_state") == "stopping":
                state = "loaded, busy"  # Ollama shows Stopping: its expiry is stale
            else:
                state = "loaded"
            runner = (
                f"runner pid {m['runner_pid']}, RSS {human_bytes(m['runner_rss_bytes'])}, "
                f"CPU {_num(m['runner_cpu_percent'], '{:.1f}')}%"
                if m["runner_pid"] is not None
                else "runner not found on this machine"
            )
            name = f"{m['name']} (EMULATED)" if m.get("emulated") else m["name"]
            lines.append(f"  {name:<24} {state:<22} {m['processor']:<16} {runner}")
            flash = m.get("flash_attention")
            if flash:
                asked = f", asked {flash['setting']}" if flash.get("setting") and flash["setting"] != flash["value"] else ""
                lines.append(f"  {'':<24} flash attention {flash['value'] or 'unknown'}{asked} (from {flash['source']}: {flash['detail']})")
            if m.get("judged"):
                lines.append(f"  {'':<24} {m['judged']}")  # it says what Ollama shows, and why
            if m.get("note"):
                lines.append(f"  {'':<24} note: {m['note']}")
    elif ollama["reachable"]:
        lines.append("Models   none loaded")
    host = snap["host"]
    label = "SIMULATED by the demo emulator" if host["simulated"] else (host["source"] or "unavailable")
    lines.append(f"Host     memory ({label})")
    if host["error"] and host["mem_free_bytes"] is None:
        lines.append(f"  unavailable: {host['error']}")
    else:
        page = host["page_size"]
        lines.append(
            f"  free {human_bytes(host['mem_free_bytes'])} ({_num(host['pages_free'])} pages of {_num(page)} B), "
            f"available {human_bytes(host['mem_available_bytes'])}, swap used {human_bytes(host['swap_used_bytes'])}"
        )
        rate = host["swapouts_per_min"]
        rate_text = f"{rate:,.0f}/min ({host['swapouts_per_min_from']})" if rate is not None else "unknown"
        level = host["pressure_level"] or "unknown"
        lines.append(f"  swap-outs {rate_text}, pressure {_num(host['pressure'], '{:.1f}')} ({level})")
    flash = snap["flash_attention"]
    if flash["value"] is not None or not snap["models"]:
        lines.append(f"Flash attention  {flash['value'] or 'per model'} (from {flash['source']}: {flash['detail']})")
    sampler = snap.get("sampler")
    if snap.get("sidecar"):
        lines.append(f"Sampler  {sampler['summary'] if sampler else 'never ran on'} ({snap['sidecar']})")
    gpus = snap.get("gpus")
    if gpus and gpus["devices"]:
        for g in gpus["devices"]:
            used, total = g["memory_used_bytes"], g["memory_total_bytes"]
            share = f" ({used / total:.0%})" if used is not None and total else ""
            util = f", busy {g['utilization_percent']:.0f}%" if g["utilization_percent"] is not None else ""
            lines.append(f"GPU {g['index']}    {g['name']}: VRAM {human_bytes(used)} of {human_bytes(total)} used{share}{util} ({gpus['source']})")
        for model, vram in gpus["runner_vram_bytes"].items():
            if vram is not None:
                lines.append(f"  {model:<24} runner holds {human_bytes(vram)} of VRAM")
    elif gpus:
        lines.append(f"GPU      none found ({gpus['note'] or 'no NVIDIA or AMD GPU'})")
    control = snap.get("control")
    if control:  # the harness's helper or the oasis-ops proxy, whichever applies the control channel
        lines.append(f"Control  {control['summary']}")
    for error in snap["errors"]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def sidecar_for(db: str | None, settings: Settings) -> Path | None:
    """The sidecar `status` reads: --db's (or the db/sidecar settings'), else none."""
    from oasis_ops.sidecar import sidecar_path_for

    if not db and not settings.sidecar:
        return None
    return sidecar_path_for(db or None, settings)


def flash_attention_now(settings: Settings, processes: ProcessList | None = None) -> dict[str, Any]:
    """Flash attention of the current `ollama serve` and of each loaded model, for pages that
    refresh often: {"server": {...}, "models": {name: {...}}, "emulated": [names]} (keys as
    `status --json`; `emulated`: the demo emulator's models with no real inference behind them)."""
    with OllamaClient(settings.ollama_host, timeout_s=float(settings.ollama_timeout_s)) as client:
        process_list = processes or PsutilProcesses()
        probe = ModelProbe(client, process_list, settings.ollama_models or None)
        try:
            probe.serve_pid = serve_pid_for(client.base_url, process_list())
            version = client.version()
            snapshots = probe.snapshot()
            server, per_model = probe.flash_attention(snapshots, version, default_server_log(settings.server_log or None))
            return {"server": server.as_dict(), "models": {name: f.as_dict() for name, f in per_model.items()},
                    "emulated": sorted(emulated_models(client.base_url)) if snapshots else []}
        except OasisOpsError as exc:
            return {"server": {"value": None, "setting": None, "source": "unknown", "detail": str(exc)}, "models": {},
                    "emulated": []}
