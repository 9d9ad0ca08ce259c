"""Lock-free snapshots of a live DuckDB file (Contract 1: the runner never loses a trial to us).

DuckDB allows one read-write process or many read-only ones, and a read-only connection on the
live file makes a runner's read-write open fail at once. So we never open the live file: we
copy `x.duckdb` and `x.duckdb.wal` into a private directory and open the copy read-only.

- A copy counts when the main file did not change while we copied it (size, mtime, inode).
  The WAL may have grown meanwhile: DuckDB replays a WAL cut mid-entry as its complete prefix
  (measured), so an appended-to WAL still gives a consistent, slightly older view.
- The copy is opened and validated by the caller; a torn copy (mid-checkpoint) fails there and
  is retried; after a few attempts the last good snapshot stays in use and Freshness says so.
- When only the WAL changed, the previous snapshot's main file is hard-linked instead of copied
  (a read-only open never writes it, measured), so a runner that holds the file open costs us
  a WAL copy per refresh, not a database copy.
- Copies are rate-limited: at most one per `min_interval_s`, stretched to 4x the last copy time
  so a huge file copied every second cannot keep the disk busy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

import duckdb

from oasis_ops import duck
from oasis_ops.errors import ConfigError, DatabaseCorrupt, DatabaseMissing, DataError, SchemaError

T = TypeVar("T")

LIVE_WINDOW_S = 60.0



def private_dir(directory: Path) -> None:
    """Snapshots are copies of the user's trial data: the directory must be ours and private.
    In a shared location another user could otherwise pre-create it and read every copy."""
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise ConfigError(f"cannot inspect snapshot directory {directory}: {exc.strerror or exc}") from None
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"snapshot directory {directory} is owned by uid {info.st_uid}, not by us (uid {os.getuid()}); refusing it",
            hint="set snapshot_dir to a directory of your own",
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)  # ours but open to others (umask, or made by hand): close it

@dataclass(frozen=True)
class Freshness:
    """Where the shown data comes from and how old it is."""

    source_path: str
    snapshot_taken_at: datetime  # when the snapshot was last known to match the source (UTC)
    source_mtime: datetime  # newest mtime of the .duckdb and its .wal (UTC)
    newest_trial_at: datetime | None  # newest trial start time in the snapshot (UTC)
    stale_s: float  # now - snapshot_taken_at
    live: bool  # the source changed within the last minute
    note: str = ""  # e.g. "snapshot copy torn, showing the last good one"
    trials: int = 0  # rows in the snapshot
    copy_ms: float = 0.0  # how long the last snapshot copy took


@dataclass(frozen=True)
class FileSig:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileSig | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class SourceSig:
    db: FileSig | None
    wal: FileSig | None

    @property
    def mtime(self) -> float:
        return max((s.mtime_ns for s in (self.db, self.wal) if s is not None), default=0) / 1e9


@dataclass
class Snapshot(Generic[T]):
    """One validated copy: its files, the open read-only connection, and what validation found."""

    db_copy: Path
    con: duckdb.DuckDBPyConnection
    state: T
    sig: SourceSig
    taken_at: float
    copy_ms: float
    files: list[Path] = field(default_factory=list)


def default_snapshot_root(configured: str) -> Path:
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "oasis-ops" / "snapshots"


def snapshot_dir_for(source: Path, configured: str) -> Path:
    """Private directory for one source file: <root>/<hash of its absolute path>."""
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return default_snapshot_root(configured) / digest


def connect_read_only(path: Path, *, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """duck.connect(read_only=True) on a snapshot copy."""
    return connect_with_limits(path, read_only=True, memory_limit=memory_limit, threads=threads)


def connect_with_limits(path: Path, *, read_only: bool, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """duck.connect with our limits (read-only opens need the file to exist)."""
    return duck.connect(path, read_only=read_only, memory_limit=memory_limit, threads=threads, must_exist=read_only)


class Snapshotter(Generic[T]):
    """Keeps the newest good read-only snapshot of `source`; see the module docstring."""

    def __init__(
        self,
        source: Path,
        directory: Path,
        *,
        open_snapshot: Callable[[Path], duckdb.DuckDBPyConnection],
        validate: Callable[[duckdb.DuckDBPyConnection], T],
        min_interval_s: float = 1.0,
        max_interval_s: float = 5.0,
        attempts: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.wal = source.with_name(source.name + ".wal")
        self.directory = directory
        self._open = open_snapshot
        self._validate = validate
        self.min_interval_s = min_interval_s
        self.max_interval_s = max(max_interval_s, min_interval_s)
        self.attempts = attempts
        self._clock = clock
        self._seq = 0
        self._token = uuid.uuid4().hex[:8]  # several sources in one process share the directory
        self._tried: list[Path] = []
        self.current: Snapshot[T] | None = None
        self.verified_at = 0.0  # last time the source was seen unchanged from `current`
        self.note = ""
        self._last_attempt_at = 0.0
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot use the snapshot directory {self.directory.parent}: {exc.strerror or exc}",
                              hint="set snapshot_dir (OASIS_OPS_SNAPSHOT_DIR) to a writable directory of yours") from None
        private_dir(self.directory)
        self._remove_orphans()
        prune_source_dirs(self.directory.parent, keep=self.directory)

    # --- public -------------------------------------------------------------------------------
    def source_sig(self) -> SourceSig:
        db = FileSig.of(self.source)
        if db is None:
            raise DatabaseMissing(f"trial database not found: {self.source}")
        return SourceSig(db, FileSig.of(self.wal))

    def refresh(self, *, force: bool = False) -> bool:
        """Take a new snapshot if the source changed and the interval passed; True if taken."""
        now = self._clock()
        sig = self.source_sig()
        if self.current is not None and sig == self.current.sig:
            self.verified_at = now
            return False
        if not force and self.current is not None and now - self._last_attempt_at < self._interval():
            return False
        self._last_attempt_at = now
        return self._take(sig)

    def close(self) -> None:
        if self.current is not None:
            self._discard(self.current)
            self.current = None

    # --- internals ----------------------------------------------------------------------------
    def _interval(self) -> float:
        copy_s = (self.current.copy_ms / 1000.0) if self.current else 0.0
        return min(max(self.min_interval_s, 4.0 * copy_s), self.max_interval_s)

    def _take(self, sig: SourceSig) -> bool:
        last_error: DataError | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(0.02 * attempt)
                sig = self.source_sig()
            started = time.perf_counter()
            checked_at = self._clock()
            copy, files = self._copy(sig)
            if copy is None:
                continue  # the main file changed under us: torn, try again
            copy_ms = (time.perf_counter() - started) * 1000.0
            con = None
            try:
                con = self._open(copy)
                state = self._validate(con)
            except SchemaError:
                self._close_quietly(con)
                self._remove(files)
                if self.current is None:
                    raise
                self.note = "the trial table changed shape in the newest copy, showing the last good one"
                return False
            except (DataError, duckdb.Error) as exc:
                self._close_quietly(con)
                self._remove(files)
                last_error = exc if isinstance(exc, DataError) else duck.translate(exc, str(copy))
                continue
            previous = self.current
            self.current = Snapshot(copy, con, state, sig, checked_at, copy_ms, files)
            self.verified_at = checked_at
            self.note = ""
            if previous is not None:
                self._discard(previous)
            return True
        if self.current is None:
            message = str(last_error) if last_error else f"{self.source} kept changing while it was copied"
            if duck.os_refusal(message) is not None:  # our copy could not be written (a full disk): not the file's fault
                raise DataError(f"cannot make a snapshot copy of {self.source} in {self.directory}: {message}",
                                hint="free some space, or set `snapshot_dir` elsewhere")  # fmt: skip
            raise DatabaseCorrupt(self._source_message(message))
        self.note = (
            f"snapshot copy torn ({self.attempts} attempts), showing the last good one from "
            f"{datetime.fromtimestamp(self.current.taken_at, UTC):%H:%M:%S} UTC"
        )
        return False

    def _source_message(self, message: str) -> str:
        # Messages name the user's file, not our private copy of it.
        for path in sorted(self._tried, key=lambda p: -len(str(p))):
            message = message.replace(str(path), str(self.source))
        if "cannot be read as a DuckDB database" not in message and "not a DuckDB database" not in message:
            return f"{self.source} cannot be read as a DuckDB database: {message}"
        return message

    def _copy(self, sig: SourceSig) -> tuple[Path | None, list[Path]]:
        self._seq += 1
        copy = self.directory / f"snap-{os.getpid()}-{self._token}-{self._seq}.duckdb"
        copy_wal = copy.with_name(copy.name + ".wal")
        files = [copy, copy_wal]
        self._tried = [*self._tried[-10:], copy_wal, copy]
        try:
            previous = self.current
            if previous is not None and previous.sig.db == sig.db and self._link(previous.db_copy, copy):
                pass
            else:
                shutil.copyfile(self.source, copy)
            if sig.wal is not None:
                try:
                    shutil.copyfile(self.wal, copy_wal)
                except FileNotFoundError:
                    pass  # checkpointed away meanwhile: the main-file check below decides
        except FileNotFoundError:
            self._remove(files)
            raise DatabaseMissing(f"trial database not found: {self.source}") from None
        except OSError as exc:
            self._remove(files)
            raise DataError(f"cannot copy {self.source} for a snapshot: {exc}") from None
        after = SourceSig(FileSig.of(self.source), FileSig.of(self.wal))
        # A WAL created or appended to during the copy is fine (we hold its prefix); a WAL
        # replaced or truncated means a checkpoint ran, and then the main file changed too.
        wal_grew = sig.wal is None or (
            after.wal is not None and after.wal.inode == sig.wal.inode and after.wal.size >= sig.wal.size
        )
        if after.db != sig.db or not wal_grew:
            self._remove(files)
            return None, files
        return copy, files

    @staticmethod
    def _link(existing: Path, new: Path) -> bool:
        try:
            os.link(existing, new)
            return True
        except OSError:
            return False

    def _discard(self, snap: Snapshot[T]) -> None:
        self._close_quietly(snap.con)
        self._remove(snap.files)

    @staticmethod
    def _close_quietly(con: duckdb.DuckDBPyConnection | None) -> None:
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    @staticmethod
    def _remove(files: list[Path]) -> None:
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _remove_orphans(self) -> None:
        """Delete snapshot files left by processes that no longer exist."""
        for path in self.directory.glob("snap-*"):
            parts = path.name.split("-")
            try:
                pid = int(parts[1])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                path.unlink()


STALE_SOURCE_DIR_S = 7 * 86400.0  # a source not opened for a week: its directory goes


def prune_source_dirs(root: Path, *, keep: Path, max_age_s: float = STALE_SOURCE_DIR_S, now: float | None = None) -> list[Path]:
    """Disk stays bounded: remove the per-source directories (16 hex digits) under `root` that
    nobody opened for `max_age_s` and that hold no snapshot of a running process (their saved
    run groups and orphan copies with them). Returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for directory in entries:
        name = directory.name
        if directory == keep or len(name) != 16 or any(c not in "0123456789abcdef" for c in name):
            continue
        try:
            if not stat.S_ISDIR(directory.lstat().st_mode) or now - directory.stat().st_mtime < max_age_s:
                continue
            files = list(directory.iterdir())
            if any(_alive(int(p.name.split("-")[1])) for p in files if p.name.startswith("snap-") and p.name.split("-")[1].isdigit()):
                continue
            for path in files:
                if path.is_file() and not path.is_symlink():
                    path.unlink()
            directory.rmdir()
            removed.append(directory)
        except (OSError, ValueError):
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
