"""Probes: host memory, Ollama's API and its runner processes. No UI, no storage.

Each probe takes its sources as arguments (a /proc root, a command runner, an OllamaClient with
an optional httpx transport, a process-list callable, a clock), so tests feed fixtures, real
loopback servers and real child processes.

The facade the sampler and `oasis-ops status` call:

    client = OllamaClient(settings.ollama_host, timeout_s=settings.ollama_timeout_s)
    probe = ModelProbe(client, PsutilProcesses(), models_dir=settings.ollama_models)
    snapshots = probe.snapshot()          # list[ModelSnapshot], one per /api/ps entry
    host = sample_host()                  # HostSample
    flash = probe.flash_attention(snapshots, version, server_log_path=...)  # per model

Keep one ModelProbe per sampler: it caches blob paths per (model, digest) and psutil Process
objects per (pid, create_time) (CPU % needs two looks: the first snapshot of a runner has
runner_cpu_percent None). `probe_models()` is the one-shot form.

"gone" never comes from /api/ps: `diff_models(previous, current)` turns two polls into
transitions (newly seen, loaded <-> stopping, gone) for the events table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from oasis_ops.errors import OllamaError
from oasis_ops.probes.flash import (
    FlashAttentionSetting,
    log_statements,
    model_flash_attention,
    read_log_tail,
    server_flash_attention,
)
from oasis_ops.probes.gguf import gguf_architecture
from oasis_ops.probes.host import Clock, HostSample, human_bytes, sample_host
from oasis_ops.probes.ollama import (
    ModelStatus,
    ModelTransition,
    OllamaClient,
    diff_models,
    parse_rfc3339,
    processor_split,
    resolve_ollama_host,
)
from oasis_ops.probes.processes import (
    OllamaTree,
    ProcessList,
    ProcessRecord,
    PsutilProcesses,
    RunnerProcess,
    blob_from_manifest,
    default_models_dir,
    find_ollama_tree,
    match_runner,
    parse_runner_cmdline,
    verify_runner,
)

__all__ = [
    "FlashAttentionSetting",
    "HostSample",
    "ModelProbe",
    "ModelSnapshot",
    "ModelStatus",
    "ModelTransition",
    "OllamaClient",
    "OllamaTree",
    "ProcessRecord",
    "PsutilProcesses",
    "RunnerProcess",
    "diff_models",
    "find_ollama_tree",
    "model_flash_attention",
    "human_bytes",
    "parse_rfc3339",
    "parse_runner_cmdline",
    "probe_models",
    "processor_split",
    "resolve_ollama_host",
    "sample_host",
    "verify_runner",
]


@dataclass(frozen=True)
class ModelSnapshot:
    """A /api/ps entry joined with the runner process serving it (runner_* None when no
    runner was matched: remote Ollama, unknown blob, or the runner is gone)."""

    ts: datetime
    status: ModelStatus
    blob_path: str | None
    runner_pid: int | None
    runner_create_time: float | None
    runner_rss_bytes: int | None
    runner_cpu_percent: float | None
    runner_threads: int | None
    runner_cmdline: tuple[str, ...] | None
    runner_variant: str | None
    runner_port: int | None
    note: str | None

    # convenience pass-throughs used by the sidecar's model_samples row
    @property
    def model(self) -> str:
        return self.status.name

    @property
    def state(self) -> str:
        return self.status.state

    def as_row(self) -> dict[str, Any]:
        """The sidecar's model_samples columns."""
        return {
            "ts": self.ts,
            "model": self.status.name,
            "state": self.status.state,
            "expires_at": self.status.expires_at,
            "size_bytes": self.status.size_bytes,
            "size_vram_bytes": self.status.size_vram_bytes,
            "context_length": self.status.context_length,
            "runner_pid": self.runner_pid,
            "runner_rss_bytes": self.runner_rss_bytes,
            "runner_cpu_percent": self.runner_cpu_percent,
        }

    def as_dict(self) -> dict[str, Any]:
        data = self.status.as_dict()
        data.update(
            ts=self.ts.isoformat(),
            blob_path=self.blob_path,
            runner_pid=self.runner_pid,
            runner_create_time=self.runner_create_time,
            runner_rss_bytes=self.runner_rss_bytes,
            runner_cpu_percent=self.runner_cpu_percent,
            runner_threads=self.runner_threads,
            runner_cmdline=list(self.runner_cmdline) if self.runner_cmdline else None,
            runner_variant=self.runner_variant,
            runner_port=self.runner_port,
            note=self.note,
        )
        return data


class ModelProbe:
    """Stateful facade: /api/ps + blob paths + runner processes. Raises OllamaUnreachable /
    OllamaBadResponse when /api/ps fails; a failing /api/show only blanks that model's runner."""

    MAX_BLOB_CACHE = 256
    # Bounds against a hostile or broken server: a real Ollama holds a few models at once
    # (OLLAMA_MAX_LOADED_MODELS), and each unknown blob costs an /api/show call.
    MAX_MODELS = 64
    SHOW_BUDGET_S = 5.0  # /api/show calls of one snapshot (or flash read) stop after this; blobs stay unknown

    def __init__(
        self,
        client: OllamaClient,
        processes: ProcessList | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        *,
        serve_pid: int | None = None,
    ) -> None:
        self.client = client
        self.processes: ProcessList = processes or PsutilProcesses()
        self.models_dir = default_models_dir(str(models_dir) if models_dir else None)
        self.clock: Clock = clock or client.clock
        self.serve_pid = serve_pid
        self._blobs: dict[tuple[str, str], str | None] = {}
        self.last_tree: OllamaTree | None = None
        self.models_listed = 0  # how many models the last /api/ps listed (only MAX_MODELS are probed)
        self._show_until = float("inf")

    def _show(self, model: str) -> dict[str, Any] | None:
        """/api/show within this snapshot's budget; None once the budget is spent."""
        if time.monotonic() > self._show_until:
            return None
        return self.client.show(model)

    def blob_path(self, status: ModelStatus) -> str | None:
        """Weights blob of a model: the manifest under OLLAMA_MODELS (a local read), else
        /api/show's FROM line. Cached per (name, digest): a re-pull changes the digest."""
        key = (status.name, status.digest)
        if key in self._blobs:
            return self._blobs[key]
        path = blob_from_manifest(self.models_dir, status.name)
        if path is None:
            try:
                shown = self._show(status.name)
            except OllamaError:
                return None  # not cached: try again next time
            if shown is None:
                return None  # over budget: not cached either
            paths = shown.get("blob_paths") or []
            path = paths[0] if paths else None
        if len(self._blobs) >= self.MAX_BLOB_CACHE:
            self._blobs.clear()
        self._blobs[key] = path
        return path

    def snapshot(
        self, statuses: Iterable[ModelStatus] | None = None, *, refresh_processes: bool = True
    ) -> list[ModelSnapshot]:
        """One ModelSnapshot per /api/ps entry (or per given status). With
        refresh_processes=False the last process scan is reused (the sampler polls /api/ps
        every second and rescans processes every process_interval_s)."""
        models = list(statuses) if statuses is not None else self.client.ps()
        self.models_listed = len(models)
        models = models[: self.MAX_MODELS]
        self._show_until = time.monotonic() + self.SHOW_BUDGET_S
        now = self.clock()
        if not models:
            return []
        if refresh_processes or self.last_tree is None:
            self.last_tree = find_ollama_tree(self.processes(), serve_pid=self.serve_pid)
        tree = self.last_tree
        snapshots = []
        for status in models:
            blob = self.blob_path(status)
            match = match_runner(tree, [blob] if blob else [], [status.name, status.model])
            notes = [n for n in (match.note, *tree.notes) if n]
            if tree.serve is None:
                notes.append("no `ollama serve` on this machine listens on the Ollama port")
            runner = match.runner
            rec = runner.record if runner else None
            snapshots.append(
                ModelSnapshot(
                    ts=now,
                    status=status,
                    blob_path=blob,
                    runner_pid=rec.pid if rec else None,
                    runner_create_time=rec.create_time if rec else None,
                    runner_rss_bytes=rec.rss_bytes if rec else None,
                    runner_cpu_percent=rec.cpu_percent if rec else None,
                    runner_threads=rec.num_threads if rec else None,
                    runner_cmdline=rec.cmdline if rec else None,
                    runner_variant=runner.command.variant if runner else None,
                    runner_port=runner.command.port if runner else None,
                    note="; ".join(notes) or None,
                )
            )
        return snapshots

    def architecture(self, blob: str | None, model: str) -> str | None:
        """`general.architecture` of the model: the GGUF header of its blob (a local read of a few
        bytes), else /api/show's model_info. Cached per blob."""
        key = ("arch", blob or model)
        if key in self._blobs:
            return self._blobs[key]
        arch = gguf_architecture(blob) if blob else None
        if arch is None:
            try:
                shown = self._show(model)
            except OllamaError:
                return None  # not cached: try again next time
            if shown is None:
                return None
            info = shown.get("model_info") or {}
            value = info.get("general.architecture") if isinstance(info, dict) else None
            arch = value if isinstance(value, str) and value else None
        if len(self._blobs) >= self.MAX_BLOB_CACHE:
            self._blobs.clear()
        self._blobs[key] = arch
        return arch

    def flash_attention(
        self,
        snapshots: Iterable[ModelSnapshot],
        version: str | None,
        server_log_path: str | os.PathLike[str] | None = None,
    ) -> tuple[FlashAttentionSetting, dict[str, FlashAttentionSetting]]:
        """(server-wide setting, {model name: its effective setting}) from the current serve's
        environment, the runners' command lines, the server log's tail and the version's default."""
        tree = self.last_tree or find_ollama_tree(self.processes(), serve_pid=self.serve_pid)
        self._show_until = time.monotonic() + self.SHOW_BUDGET_S
        environ = tree.serve.environ if tree.serve else None
        statements = log_statements(read_log_tail(server_log_path)) if server_log_path else []
        per_model = {}
        for snap in snapshots:
            per_model[snap.model] = model_flash_attention(
                serve_environ=environ, runner_cmdline=snap.runner_cmdline, blob=snap.blob_path,
                architecture=self.architecture(snap.blob_path, snap.model), version=version, statements=statements,
            )  # fmt: skip
        return server_flash_attention(environ, statements, version=version), per_model


def probe_models(
    client: OllamaClient,
    processes: ProcessList | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
    *,
    serve_pid: int | None = None,
) -> list[ModelSnapshot]:
    """One-shot ModelProbe(...).snapshot() (no caches kept: CPU % is None)."""
    return ModelProbe(client, processes, models_dir, clock, serve_pid=serve_pid).snapshot()
