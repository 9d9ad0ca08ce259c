"""Incremental, junk-proof ingestion of server.log / runner.log into the telemetry sidecar.

Behaviour (also in the README):
- `log_offsets` (keyed by the file's absolute path) stores the inode, the size seen, the byte
  offset up to which whole lines were ingested, and `head_hash`: the SHA-256 of the file's first
  min(4096, offset) bytes. A second run over an unchanged file adds nothing.
- Appended bytes are ingested from the stored offset. Only whole lines: a last line without its
  newline is left for the next run.
- Rotation: a different inode, or a head that no longer hashes the same, means a new file at that
  path: it is read from byte 0. A file given under a path we have no offset for, whose inode and
  head match another path's stored offset (macOS renames server.log to server-1.log), continues
  from that offset: give the rotated file too and it is finished, not read twice.
- Truncation: a size smaller than the stored offset restarts the file from byte 0.
- Rows and the new offset are written in ONE transaction per chunk (default 8 MB), after checking
  inside it that the stored offset is still the one we started from (compare-and-set), so a crash
  or a concurrent ingester never duplicates or loses lines. Bulk insert: one Arrow table per
  table per chunk (`sql/logs_insert_*.sql`), never one INSERT per row. The sidecar is opened
  per chunk and closed again; a lock held by another process is retried with backoff.
- At the end of each file the parser is finished: llama-server timing blocks still waiting for
  their request take their fallback time (see oasis_ops.logs.timings). The follower in
  oasis_ops.logs.tail keeps that state in memory between ticks instead.
- Naive times (Gin, Go plain-logger lines): with no offset given, the parser first reads the
  file's head (`HEAD_OFFSET_BYTES`, from byte 0 even when resuming) for the first slog line's
  offset, then follows the slog lines; each FileResult says which offset was used and why
  (`utc_offset`, `utc_offset_source`). A given offset always wins.
- Junk (undecodable bytes, binary, truncated or over-long lines) is counted and skipped; a line
  longer than 1 MiB is dropped without being held in memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import duckdb
import pyarrow as pa

from oasis_ops import duck
from oasis_ops.errors import DataError, UsageError
from oasis_ops.logs.harness import HarnessLogParser
from oasis_ops.logs.rows import COLUMNS, ParseCounts, Rows
from oasis_ops.logs.server import ServerLogParser
from oasis_ops.logs.timefmt import LocalClock
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.sqlfiles import sql

LogKind = Literal["server", "harness"]

HEAD_BYTES = 4096
HEAD_OFFSET_BYTES = 1 << 20  # read for the first slog offset before parsing a server log
MAX_LINE_BYTES = 1 << 20
DEFAULT_CHUNK_BYTES = 64 << 20
READ_BYTES = 16 << 20

_INSERT_SQL = {
    "log_requests": ("logs_insert_requests", "logs_batch_requests"),
    "log_events": ("logs_insert_events", "logs_batch_events"),
    "log_timings": ("logs_insert_timings", "logs_batch_timings"),
    "harness_log": ("logs_insert_harness", "logs_batch_harness"),
}
_INT_COLUMNS = {"status", "task_id", "prompt_tokens", "eval_tokens", "line_no", "request_line_no"}
_FLOAT_COLUMNS = {"latency_ms", "prompt_eval_ms", "eval_ms", "total_ms", "image_encode_ms", "image_decode_ms"}


@dataclass(frozen=True)
class StoredOffset:
    path: str
    inode: int | None
    size: int | None
    offset_bytes: int
    head_hash: str | None


@dataclass
class FileResult:
    """What one file's ingestion did."""

    path: str
    kind: LogKind
    start: Literal["new", "resume", "rotated", "truncated", "continued"]
    start_offset: int
    end_offset: int = 0
    continued_from: str | None = None
    counts: ParseCounts = field(default_factory=ParseCounts)
    utc_offset: str | None = None  # the offset naive times were read with (None: machine zone)
    utc_offset_source: str = ""  # why that one

    @property
    def bytes_read(self) -> int:
        return self.end_offset - self.start_offset


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def counts(self) -> ParseCounts:
        total = ParseCounts()
        for f in self.files:
            total.add(f.counts)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": [
                {
                    "path": f.path,
                    "kind": f.kind,
                    "start": f.start,
                    "continued_from": f.continued_from,
                    "start_offset": f.start_offset,
                    "end_offset": f.end_offset,
                    "utc_offset": f.utc_offset,
                    "utc_offset_source": f.utc_offset_source,
                    **f.counts.as_dict(),
                }
                for f in self.files
            ],
            "total": self.counts.as_dict(),
        }


# --- file identity ----------------------------------------------------------------------------
def head_hash(handle: BinaryIO, length: int) -> str:
    """SHA-256 (hex) of the first min(4096, length) bytes: the same bytes every time we compare."""
    # pread: never moves the file position a reader may be relying on
    return hashlib.sha256(os.pread(handle.fileno(), min(HEAD_BYTES, max(0, length)), 0)).hexdigest()


def count_lines(handle: BinaryIO, end: int) -> int:
    """Newlines in bytes [0, end): the line number before `end` (line numbers are 1-based)."""
    handle.seek(0)
    remaining, lines = end, 0
    while remaining > 0:
        block = handle.read(min(READ_BYTES, remaining))
        if not block:
            break
        lines += block.count(b"\n")
        remaining -= len(block)
    return lines


def plan_start(
    path: str, handle: BinaryIO, stored: dict[str, StoredOffset]
) -> tuple[Literal["new", "resume", "rotated", "truncated", "continued"], int, str | None]:
    """Where to start reading `path`: (how, offset, the path it continues) against stored offsets."""
    st = os.fstat(handle.fileno())
    row = stored.get(path)
    if row is not None:
        if row.inode is not None and row.inode != st.st_ino:
            return "rotated", 0, None
        if st.st_size < row.offset_bytes:
            return "truncated", 0, None
        if row.head_hash is not None and head_hash(handle, row.offset_bytes) != row.head_hash:
            return "rotated", 0, None
        return "resume", row.offset_bytes, None
    # An unknown path: maybe a rotated file we were reading under its old name.
    for other in stored.values():
        if other.inode == st.st_ino and other.offset_bytes <= st.st_size and other.path != path:
            if other.head_hash is None or head_hash(handle, other.offset_bytes) == other.head_hash:
                return "continued", other.offset_bytes, other.path
    return "new", 0, None


# --- the sidecar side --------------------------------------------------------------------------
class LogStore:
    """Log writes into the sidecar through engineer E's `Sidecar` (short open, one transaction,
    close; per-process lock; retry on a lock held by another process)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.path = sidecar.path

    @classmethod
    def at(cls, sidecar_path: str | os.PathLike[str], settings: Settings | None = None) -> LogStore:
        return cls(Sidecar(sidecar_path, settings))

    def offsets(self) -> dict[str, StoredOffset]:
        frame = self.sidecar.query("logs_offsets_all")
        out: dict[str, StoredOffset] = {}
        for path, inode, size, offset_bytes, digest in frame.itertuples(index=False, name=None):
            out[path] = StoredOffset(
                path,
                None if inode is None or inode != inode else int(inode),
                None if size is None or size != size else int(size),
                0 if offset_bytes is None or offset_bytes != offset_bytes else int(offset_bytes),
                digest if isinstance(digest, str) else None,
            )
        return out

    def commit(
        self,
        tables: dict[str, pa.Table],
        path: str,
        expected: StoredOffset | None,
        new: StoredOffset,
    ) -> None:
        """Insert the rows and move the offset of `path` in one transaction, if nobody else moved
        it since `expected` (None: no row). Raises ConcurrentIngest when someone did."""
        self.sidecar.migrate() if not self.sidecar._migrated else None
        # Sidecar._connection: E's per-process lock + retry on lock (a public transaction()
        # context manager is requested in the report).
        with self.sidecar._connection(read_only=False) as con:
            try:
                con.begin()
                found = con.execute(sql("logs_offset_get"), {"path": path}).fetchall()
                row = found[0] if found else None
                current = None if row is None else (row[1], int(row[3] or 0), row[4])
                wanted = None if expected is None else (expected.inode, expected.offset_bytes, expected.head_hash)
                if current != wanted:
                    con.rollback()
                    raise ConcurrentIngest(
                        f"{path} was ingested by another process meanwhile; this chunk was not written",
                        hint="run again: it continues from the new offset",
                    )
                for table, arrow in tables.items():
                    if arrow.num_rows:
                        statement, view = _INSERT_SQL[table]
                        con.register(view, arrow)
                        try:
                            con.execute(sql(statement))
                        finally:
                            con.unregister(view)
                con.execute(
                    sql("logs_offset_upsert"),
                    {
                        "path": path,
                        "inode": new.inode,
                        "size": new.size,
                        "offset_bytes": new.offset_bytes,
                        "head_hash": new.head_hash,
                        "updated_at": datetime.now(UTC),
                    },
                )
                con.commit()
            except duckdb.Error as exc:
                try:
                    con.rollback()
                except duckdb.Error:
                    pass
                raise duck.translate(exc, str(self.path)) from None


class ConcurrentIngest(DataError):
    """Another ingester moved this file's offset while we were reading it."""


def to_arrow(columns: dict[str, list[Any]], source_file: str) -> pa.Table:
    """Column lists from a parser (ts in epoch µs) -> an Arrow table with the table's types."""
    arrays: dict[str, pa.Array] = {}
    n = len(columns["line_no"])
    for name, values in columns.items():
        if name == "ts":
            arrays[name] = pa.array(values, type=pa.timestamp("us", tz="UTC"))
        elif name in _INT_COLUMNS:
            arrays[name] = pa.array(values, type=pa.int64())
        elif name in _FLOAT_COLUMNS:
            arrays[name] = pa.array(values, type=pa.float64())
        else:
            arrays[name] = pa.array(values, type=pa.string())
    arrays["source_file"] = pa.array([source_file] * n, type=pa.string())
    return pa.table(arrays, schema=_schema_for(columns))


def _schema_for(columns: dict[str, list[Any]]) -> pa.Schema:
    for table, names in COLUMNS.items():
        if tuple(columns) == names:
            return _schema(table)
    raise ValueError(f"unknown column set {tuple(columns)}")


def take_tables(rows: Rows, source_file: str) -> dict[str, pa.Table]:
    """Everything a parser holds, one Arrow table per sidecar table (rows made line by line and
    rows made in bulk by the vectorised path, in the same column order and types)."""
    taken, pieces = rows.take(), rows.take_pieces()
    tables: dict[str, pa.Table] = {}
    for table, cols in taken.items():
        parts = [to_arrow(cols, source_file)] if cols["line_no"] else []
        for piece in pieces[table]:
            n = len(piece["line_no"])
            arrays = {c: piece[c] for c in COLUMNS[table]}
            arrays["source_file"] = pa.array([source_file] * n, type=pa.string()) if n else pa.array([], pa.string())
            parts.append(pa.table(arrays, schema=_schema(table)))
        if parts:
            tables[table] = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
    return tables


def _schema(table: str) -> pa.Schema:
    fields = []
    for name in (*COLUMNS[table], "source_file"):
        if name == "ts":
            kind: pa.DataType = pa.timestamp("us", tz="UTC")
        elif name in _INT_COLUMNS:
            kind = pa.int64()
        elif name in _FLOAT_COLUMNS:
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


# --- reading one file ---------------------------------------------------------------------------
Parser = ServerLogParser | HarnessLogParser


def make_parser(kind: LogKind, clock: LocalClock, handle: BinaryIO | None = None) -> Parser:
    """A parser for `kind`; a server parser reads the offset of the file's first slog line
    from `handle`'s head (pread: the position is left alone)."""
    if kind == "server":
        parser = ServerLogParser(clock)
        if handle is not None and parser.auto_offset:
            try:
                parser.prime_offset(os.pread(handle.fileno(), HEAD_OFFSET_BYTES, 0))
            except OSError:
                pass
        return parser
    if kind == "harness":
        return HarnessLogParser(clock)
    raise UsageError(f"unknown log kind {kind!r}")


@dataclass
class FileCursor:
    """Reading position in one log file, carried between chunks (and, in the follower, ticks)."""

    path: str
    kind: LogKind
    parser: Parser
    offset: int = 0
    line_no: int = 0  # lines fully consumed before `offset`
    inode: int | None = None
    head: str | None = None
    skipping: bool = False  # inside an over-long line: drop bytes up to its newline
    stored: StoredOffset | None = None  # what log_offsets holds for `path` (compare-and-set)

    def state(self, size: int) -> StoredOffset:
        return StoredOffset(self.path, self.inode, size, self.offset, self.head)


def read_chunks(
    cursor: FileCursor,
    handle: BinaryIO,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Feed whole lines from `cursor.offset` to the parser; yield after every ~chunk_bytes.

    Advances cursor.offset / line_no past consumed lines only; a partial last line stays unread.
    `max_bytes` bounds one call (the follower's tick). `progress(offset)` after each read.
    """
    handle.seek(cursor.offset)
    carry = b""
    since_yield = 0
    read_total = 0
    parser = cursor.parser
    while max_bytes is None or read_total < max_bytes:
        want = READ_BYTES if max_bytes is None else min(READ_BYTES, max_bytes - read_total)
        data = handle.read(want)
        if not data:
            break
        read_total += len(data)
        if cursor.skipping:
            cut = data.find(b"\n")
            if cut < 0:
                cursor.offset += len(data)
                continue
            cursor.offset += cut + 1
            cursor.line_no += 1
            cursor.skipping = False
            data = data[cut + 1 :]
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            carry = buf
            if len(carry) > MAX_LINE_BYTES:  # no newline in sight: drop it, count it once
                parser.counts.junk += 1
                cursor.offset += len(carry)
                carry = b""
                cursor.skipping = True
            continue
        whole, carry = buf[: cut + 1], buf[cut + 1 :]
        parser.feed_bytes(whole, cursor.line_no + 1)
        cursor.line_no += whole.count(b"\n")
        cursor.offset += len(whole)
        if len(carry) > MAX_LINE_BYTES:  # the last line is already too long: drop it, count it once
            parser.counts.junk += 1
            cursor.offset += len(carry)
            carry = b""
            cursor.skipping = True
        if progress is not None:
            progress(cursor.offset)
        since_yield += len(whole)
        if since_yield >= chunk_bytes:
            since_yield = 0
            yield
    yield


def offset_info(parser: Parser) -> tuple[str | None, str]:
    """(offset, why) of the naive times a parser converted."""
    if isinstance(parser, ServerLogParser):
        return parser.offset_text, parser.offset_note()
    tz = parser.clock.tz
    if tz is None:
        return None, "this machine's zone (no offset given)"
    return str(tz), "given (--utc-offset / setting log_utc_offset)"


def _identity(cursor: FileCursor, handle: BinaryIO) -> None:
    cursor.inode = os.fstat(handle.fileno()).st_ino
    cursor.head = head_hash(handle, cursor.offset)


def _flush(store: LogStore, cursor: FileCursor, handle: BinaryIO, committer: Committer | None = None) -> None:
    """Write what the parser holds plus the cursor's offset; then expect that offset. With a
    committer the write runs in its thread while the caller reads on."""
    _identity(cursor, handle)
    size = os.fstat(handle.fileno()).st_size
    tables = take_tables(cursor.parser.rows, cursor.path)
    new = cursor.state(size)
    old = cursor.stored
    if not tables and old is not None and (old.inode, old.offset_bytes, old.head_hash) == (new.inode, new.offset_bytes, new.head_hash):
        return  # nothing new: no write at all
    if committer is None:
        store.commit(tables, cursor.path, old, new)
    else:
        committer.submit(store.commit, tables, cursor.path, old, new)
    cursor.stored = new


class Committer:
    """One commit at a time in a background thread, so DuckDB writes chunk N (it releases the
    GIL) while the parser reads chunk N+1. `submit` first waits for the previous commit and
    raises its error, so nothing is written after a failed chunk; `wait` at the end."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oasis-log-commit")
        self._pending: Future[None] | None = None

    def submit(self, fn: Any, *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Let a commit in flight finish (its error, if any, is the caller's to have seen)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - already failing: the first error is the one to report
                pass
        self._pool.shutdown(wait=True)


def commit_pending(store: LogStore, cursor: FileCursor) -> None:
    """Write the rows a parser still holds (after `finish()`), with the cursor's offset as it is."""
    tables = take_tables(cursor.parser.rows, cursor.path)
    if not tables:
        return
    size = cursor.stored.size if cursor.stored is not None and cursor.stored.size is not None else cursor.offset
    new = cursor.state(max(size, cursor.offset))
    store.commit(tables, cursor.path, cursor.stored, new)
    cursor.stored = new


def require_regular_file(abs_path: str, shown: str | os.PathLike[str]) -> None:
    """A log is a regular file: a FIFO would block the open for ever and /dev/zero never ends."""
    try:
        mode = os.stat(abs_path).st_mode
    except FileNotFoundError:
        raise DataError(f"log file not found: {shown}") from None
    except OSError as exc:
        raise DataError(f"cannot read log file {shown}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a device or socket"
        raise DataError(f"{shown} is {kind}, not a log file: give the path of Ollama's server.log (a regular file)")
    try:
        with open(abs_path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return  # the open that follows says why
    # Shapes that would otherwise be counted as junk line by line, without a word why.
    if head.startswith(b"\x1f\x8b"):
        raise DataError(f"{shown} is gzip-compressed: decompress it first (`gunzip -k {shown}`) and ingest the result")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{shown} is UTF-16 text (PowerShell's `>` writes it): convert it first "
                        f"(`iconv -f UTF-16 -t UTF-8 {shown} > server-utf8.log`)")  # fmt: skip


def ingest_file(
    store: LogStore,
    path: str | os.PathLike[str],
    kind: LogKind,
    clock: LocalClock,
    *,
    stored: dict[str, StoredOffset] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Ingest one file to its end (whole lines), in chunks of one transaction each;
    `progress(offset)` after every read (the CLI's progress bar)."""
    abs_path = str(Path(path).expanduser().resolve())
    stored = store.offsets() if stored is None else stored
    require_regular_file(abs_path, path)
    try:
        handle = open(abs_path, "rb")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        raise DataError(f"log file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read log file {path}: {exc.strerror or exc}") from None
    try:
        how, start, continued_from = plan_start(abs_path, handle, stored)
        cursor = FileCursor(abs_path, kind, make_parser(kind, clock, handle), offset=start, stored=stored.get(abs_path))
        cursor.line_no = count_lines(handle, start) if start else 0
        result = FileResult(abs_path, kind, how, start, continued_from=continued_from)
        committer = Committer()
        try:
            for _ in read_chunks(cursor, handle, chunk_bytes=chunk_bytes, progress=progress):
                _flush(store, cursor, handle, committer)
            cursor.parser.finish()
            if cursor.parser.rows.total():
                _flush(store, cursor, handle, committer)
            committer.wait()
        finally:
            committer.close()
        result.end_offset = cursor.offset
        result.counts = cursor.parser.counts
        result.utc_offset, result.utc_offset_source = offset_info(cursor.parser)
        return result
    finally:
        handle.close()


def ingest_logs(
    sidecar_path: str | os.PathLike[str],
    *,
    server_logs: Sequence[str | os.PathLike[str]] = (),
    runner_log: str | os.PathLike[str] | None = None,
    utc_offset: str | None = None,
    settings: Settings | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Ingest the given server logs (in the order given: oldest first, e.g. server-1.log then
    server.log) and the harness runner log into the sidecar. `utc_offset` ('+01:00') converts
    the naive local times of Gin, Go plain-logger and harness lines; empty or None: a server log
    uses the offset its own slog lines state (else this machine's zone), the harness log this
    machine's zone. Each FileResult says which offset was used. `progress(path, offset, size)`
    is called after every read (the CLI draws its bar from it)."""
    if not server_logs and runner_log is None:
        raise UsageError("nothing to ingest: give --server-log FILE and/or --runner-log FILE")
    clock = LocalClock(utc_offset or None)
    store = LogStore(Sidecar(sidecar_path, settings))
    # One snapshot of the offsets before any file moves: rotated files are recognised by it.
    stored = store.offsets()
    report = IngestReport()
    jobs: list[tuple[str | os.PathLike[str], LogKind]] = [(p, "server") for p in server_logs]
    if runner_log is not None:
        jobs.append((runner_log, "harness"))
    for path, kind in jobs:
        on_read = None
        if progress is not None:
            label, size = str(path), _size(path)
            on_read = functools.partial(_report, progress, label, size)
        report.files.append(ingest_file(store, path, kind, clock, stored=stored, chunk_bytes=chunk_bytes, progress=on_read))
    return report


def _size(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _report(progress: Callable[[str, int, int], None], label: str, size: int, offset: int) -> None:
    progress(label, offset, max(size, offset))
