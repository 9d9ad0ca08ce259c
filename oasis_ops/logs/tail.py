"""Follow a growing server.log: the sampler calls `LogFollower.poll()` once per tick.

Each poll reads the whole lines appended since the stored offset (at most `max_bytes`, so one
tick stays short on a large backlog) and writes them with the offset in one transaction; with
nothing new it touches neither the sidecar nor the parser. Unlike `ingest-logs`, the follower
keeps the parser between ticks, so a llama-server timing block waits in memory for its own
request's Gin line (either may come first; see oasis_ops.logs.timings) and gets that line's time.
With no offset given, the parser reads the offset of the file's first slog line from its head
when it (re)opens the file, and follows the slog lines from then on. A rotation (new inode or head) first finishes the old file when it
can still be found beside the new one with its old inode (server-1.log), then starts the new
file at byte 0; a truncation starts over at byte 0. Rows waiting in memory are flushed by
`close()`; a crash loses at most those (the offset on disk is always consistent with the rows).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oasis_ops.logs.ingest import (
    DEFAULT_CHUNK_BYTES,
    ConcurrentIngest,
    FileCursor,
    FileResult,
    LogKind,
    LogStore,
    _flush,
    commit_pending,
    count_lines,
    head_hash,
    make_parser,
    offset_info,
    plan_start,
    read_chunks,
)
from oasis_ops.logs.rows import ParseCounts
from oasis_ops.logs.timefmt import LocalClock


class LogFollower:
    """Incremental reader of one log file into the sidecar, driven by the caller's clock."""

    def __init__(
        self,
        store: LogStore,
        path: str | os.PathLike[str],
        *,
        kind: LogKind = "server",
        clock: LocalClock | None = None,
        max_bytes: int = 32 << 20,
    ) -> None:
        self.store = store
        self.path = str(Path(path).expanduser().resolve())
        self.kind: LogKind = kind
        self.clock = clock or LocalClock(None)
        self.max_bytes = max_bytes
        self.counts = ParseCounts()  # everything this follower has parsed, all files
        self._cursor: FileCursor | None = None
        self._counted = ParseCounts()  # the cursor's parser counts already added to self.counts

    def _open_cursor(self, handle: object) -> tuple[FileCursor, str]:
        stored = self.store.offsets()
        how, start, _ = plan_start(self.path, handle, stored)  # type: ignore[arg-type]
        cursor = FileCursor(
            self.path, self.kind, make_parser(self.kind, self.clock, handle), offset=start, stored=stored.get(self.path)  # type: ignore[arg-type]
        )
        cursor.line_no = count_lines(handle, start) if start else 0  # type: ignore[arg-type]
        return cursor, how

    def poll(self) -> FileResult | None:
        """Ingest what was appended since the last poll; None when the file does not exist."""
        try:
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                return None  # a FIFO or a device: never opened (it could block or never end)
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return None
        try:
            st = os.fstat(handle.fileno())
            cursor = self._cursor
            if cursor is not None and (
                cursor.inode != st.st_ino
                or st.st_size < cursor.offset
                or (cursor.head is not None and head_hash(handle, cursor.offset) != cursor.head)
            ):
                # Same inode: truncated (perhaps already written again past our offset).
                self._finish_rotated(cursor, truncated=cursor.inode == st.st_ino)
                cursor = self._cursor = None
            how = "resume"
            if cursor is None:
                cursor, how = self._open_cursor(handle)
                self._cursor = cursor
                self._counted = ParseCounts()
            elif st.st_size == cursor.offset:
                return FileResult(self.path, self.kind, "resume", cursor.offset, cursor.offset)
            result = FileResult(self.path, self.kind, how, cursor.offset)  # type: ignore[arg-type]
            try:
                for _ in read_chunks(cursor, handle, chunk_bytes=DEFAULT_CHUNK_BYTES, max_bytes=self.max_bytes):
                    _flush(self.store, cursor, handle)
            except ConcurrentIngest:
                self._cursor = None  # someone else ingested: re-plan from the stored offset next tick
                raise
            result.end_offset = cursor.offset
            result.counts = _delta(cursor.parser.counts, self._counted)
            result.utc_offset, result.utc_offset_source = offset_info(cursor.parser)
            self.counts.add(result.counts)
            self._counted = _snapshot(cursor.parser.counts)
            return result
        finally:
            handle.close()

    def _finish_rotated(self, cursor: FileCursor, *, truncated: bool) -> None:
        """The file at our path changed: read the rest of the old one if we can find it."""
        if not truncated:
            directory = Path(self.path).parent
            for sibling in sorted(directory.glob(Path(self.path).stem + "*")):
                try:
                    if str(sibling) == self.path or sibling.stat().st_ino != cursor.inode:
                        continue
                    with open(sibling, "rb") as old:
                        for _ in read_chunks(cursor, old):
                            pass
                except OSError:
                    continue
                break
        cursor.parser.finish()
        # The old file's final offset stays under our path until the new file's first write.
        commit_pending(self.store, cursor)
        self.counts.add(_delta(cursor.parser.counts, self._counted))

    def close(self) -> None:
        """Flush timing rows still waiting in memory (with the previous timed line's time)."""
        cursor, self._cursor = self._cursor, None
        if cursor is None:
            return
        cursor.parser.finish()
        commit_pending(self.store, cursor)


def _snapshot(counts: ParseCounts) -> ParseCounts:
    copy = ParseCounts()
    copy.add(counts)
    return copy


def _delta(now: ParseCounts, before: ParseCounts) -> ParseCounts:
    out = ParseCounts(
        requests=now.requests - before.requests,
        timings=now.timings - before.timings,
        junk=now.junk - before.junk,
        unrecognized=now.unrecognized - before.unrecognized,
        lines=now.lines - before.lines,
    )
    out.events = {k: v - before.events.get(k, 0) for k, v in now.events.items() if v - before.events.get(k, 0)}
    out.harness = {k: v - before.harness.get(k, 0) for k, v in now.harness.items() if v - before.harness.get(k, 0)}
    out.prefixes = {k: v - before.prefixes.get(k, 0) for k, v in now.prefixes.items() if v - before.prefixes.get(k, 0)}
    return out
