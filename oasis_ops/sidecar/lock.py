"""One sampler per sidecar: an advisory flock on `<sidecar>.sampler.lock`.

The kernel drops a flock when its holder dies (even by SIGKILL), so a crashed sampler never
leaves a stale lock behind. The lock file is never deleted (deleting it would let a second
process lock a fresh inode while the first still holds the old one); its content says who
holds it, for the error message of the next process that tries.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from oasis_ops.errors import DataError, SidecarBusy


def sampler_lock_path(sidecar_path: str | os.PathLike[str]) -> Path:
    return Path(str(sidecar_path) + ".sampler.lock")


class SamplerLock:
    """`with SamplerLock(sidecar):` ... raises SidecarBusy when another sampler holds it."""

    def __init__(self, sidecar_path: str | os.PathLike[str]) -> None:
        self.sidecar_path = Path(sidecar_path)
        self.path = sampler_lock_path(sidecar_path)
        self._fd: int | None = None
        self.started_at: datetime | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> SamplerLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataError(f"cannot create the sampler lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise SidecarBusy(
                f"another sampler ({_describe(holder)}) is already writing {self.sidecar_path.name}",
                hint=f"lock file {self.path}",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise DataError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        self.started_at = datetime.now(UTC)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at.isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> SamplerLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    """'pid 1234, started 10:02:11' (plus the host when it is not this one)."""
    parts = [f"pid {holder.get('pid', 'unknown')}"]
    started = holder.get("started_at")
    if isinstance(started, str):
        try:
            parts.append(f"started {datetime.fromisoformat(started).astimezone().strftime('%H:%M:%S')}")
        except ValueError:
            pass
    host = holder.get("host")
    if isinstance(host, str) and host != socket.gethostname():
        parts.append(f"on {host}")
    return ", ".join(parts)
