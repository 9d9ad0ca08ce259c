"""`recovery.json` in the control directory: "a hard-kill or recover is in progress".

The action that kills a runner writes it (atomically) before the signal and removes it when it
has finished, whatever the outcome; whoever forwards requests to Ollama (the oasis-ops proxy)
holds new requests while it stands, instead of sending them into a runner that is about to
die. A marker is only believed while its writer is alive (pid and create time) and for at most
`max_age_s`: a console that crashed mid-action never holds a run for good.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from oasis_ops.control.files import (
    as_float,
    atomic_write_json,
    ensure_control_dir,
    parse_time,
    read_json,
    utc_now,
)
from oasis_ops.errors import OasisOpsError

RECOVERY_FILE = "recovery.json"


@dataclass(frozen=True)
class RecoveryMarker:
    action: str
    model: str | None
    requested_by: str | None
    started_at: datetime | None
    pid: int | None
    create_time: float | None

    def describe(self) -> str:
        who = f" (requested by {self.requested_by})" if self.requested_by else ""
        return f"{self.action} of {self.model or 'a model'} in progress{who}"


def _writer_alive(pid: int | None, create_time: float | None) -> bool:
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return create_time is None or abs(process.create_time() - create_time) <= 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError, OverflowError):
        return False


def read_recovery(directory: str | os.PathLike[str], *, now: datetime | None = None,
                  max_age_s: float = 600.0) -> RecoveryMarker | None:  # fmt: skip
    """The standing marker, or None (absent, unreadable, its writer gone, or older than max_age_s)."""
    data, _ = read_json(Path(directory) / RECOVERY_FILE)
    if data is None:
        return None
    pid = data.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    create_time = as_float(data.get("create_time"))
    started_at = parse_time(data.get("started_at"))
    now = now or utc_now()
    if started_at is None or (now - started_at).total_seconds() > max_age_s or not _writer_alive(pid, create_time):
        return None
    return RecoveryMarker(
        action=str(data.get("action") or "recovery"),
        model=str(data["model"]) if data.get("model") else None,
        requested_by=str(data["requested_by"]) if data.get("requested_by") else None,
        started_at=started_at,
        pid=pid,
        create_time=create_time,
    )


@contextmanager
def recovery_in_progress(directory: str | os.PathLike[str] | None, action: str, model: str | None,
                         requested_by: str | None) -> Iterator[None]:  # fmt: skip
    """Stand a marker for the body's duration (no directory: nothing to tell anyone). A marker
    that cannot be written never stops the recovery itself."""
    path = None
    if directory is not None:
        try:
            path = ensure_control_dir(directory) / RECOVERY_FILE
            atomic_write_json(path, {
                "action": action, "model": model, "requested_by": requested_by,
                "started_at": utc_now().isoformat(), "pid": os.getpid(),
                "create_time": psutil.Process().create_time(),
            })  # fmt: skip
        except (OSError, OasisOpsError):  # a full disk or an odd directory must not block a kill
            path = None
    try:
        yield
    finally:
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass
