"""Everything an action needs, passed in (so tests feed a loopback Ollama and real processes).

`ActionContext.from_settings(settings, db=..., requested_by="cli")` builds the real one: the
Ollama client, the full process list (every process, so a decoy PID is refused as "not an
Ollama runner" rather than reported as vanished), the sidecar that gets the audit rows and the
control channel, both derived from the trial DB path like everywhere else.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from oasis_ops.control import ControlChannel, control_dir_for
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.probes.processes import (
    ProcessList,
    PsutilProcesses,
    default_models_dir,
    serve_pid_for,
)
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for


def serve_pid_listening(base_url: str) -> int | None:
    """The pid of the `ollama serve` listening on the port we talk to: "the current serve",
    exactly (probes.processes.serve_pid_for over this machine's ollama processes). None when it
    cannot be told (remote host, no permission, not an `ollama serve`): no serve then."""
    try:
        records = PsutilProcesses(with_environ=False)()
    except (psutil.Error, OSError):
        return None
    return serve_pid_for(base_url, records)


def full_process_list() -> ProcessList:
    """Every process with ppid, create time and user (environ not needed for a kill)."""
    return PsutilProcesses(only_ollama=False, with_environ=False)


@dataclass
class ActionContext:
    settings: Settings
    client: OllamaClient
    sidecar: Sidecar | None = None
    control: ControlChannel | None = None
    requested_by: str = "cli"
    processes: ProcessList = field(default_factory=full_process_list)
    models_dir: Path = field(default_factory=lambda: default_models_dir(None))
    serve_pid: int | None = None  # None: the serve listening on the Ollama port, else discovery
    sleep: Callable[[float], None] = time.sleep
    poll_interval_s: float = 0.2
    kill_confirm_timeout_s: float = 5.0  # SIGKILL to "gone from the process table"
    respawn_timeout_s: float = 60.0  # a tiny request after a kill may have to load the model
    db: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        db: str | os.PathLike[str] | None = None,
        requested_by: str = "cli",
        transport: httpx.BaseTransport | None = None,
        sidecar_path: str | os.PathLike[str] | None = None,
    ) -> ActionContext:
        """`sidecar_path` overrides the sidecar derived from the trial DB (the sampler knows it)."""
        trial_db = str(db or settings.db or "") or None
        sidecar = None
        if sidecar_path is not None:
            sidecar = Sidecar(sidecar_path, settings)
        elif trial_db or settings.sidecar:
            sidecar = Sidecar(sidecar_path_for(trial_db, settings), settings)
        control = ControlChannel(control_dir_for(trial_db, settings)) if (trial_db or settings.control_dir) else None
        return cls(
            settings=settings,
            client=OllamaClient.from_settings(settings, transport=transport),
            sidecar=sidecar,
            control=control,
            requested_by=requested_by,
            models_dir=default_models_dir(settings.ollama_models or None),
            db=trial_db,
        )

    def current_serve_pid(self) -> int | None:
        return self.serve_pid if self.serve_pid is not None else serve_pid_listening(self.client.base_url)

    def as_requester(self, requested_by: str) -> ActionContext:
        """The same context, acting for someone else (shares the client)."""
        return dataclasses.replace(self, requested_by=requested_by)

    def close(self) -> None:
        self.client.close()
