"""Every DuckDB connection we open goes through `connect()`: small explicit limits, UTC.

The dashboard must not be a cause of the memory pressure it reports, so DuckDB's analytics
defaults (memory_limit = 80% of RAM, one thread per core) are never used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from oasis_ops.errors import DatabaseCorrupt, DatabaseLocked, DatabaseMissing, DataError

DEFAULT_MEMORY_LIMIT = "64MB"
DEFAULT_THREADS = 2

_LOCK_RE = re.compile(r"Could not set lock|Conflicting lock", re.I)


def connect(
    path: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int = DEFAULT_THREADS,
    must_exist: bool = True,
) -> duckdb.DuckDBPyConnection:
    """Open `path` (None: in-memory) with our limits; DuckDB errors become ours."""
    target = ":memory:" if path is None else str(path)
    if path is not None and must_exist and not Path(path).exists():
        raise DatabaseMissing(f"database not found: {path}")
    if path is not None:
        refuse_foreign_file(Path(path), empty_ok=not read_only)
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        "threads": str(int(threads)),
        # offline by construction: DuckDB would otherwise download an extension to read a SQLite
        # or Parquet file (11.7 s, then "Failed to download extension") and load it at will
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    try:
        con = duckdb.connect(target, read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise translate(exc, target) from None
    # TimeZone cannot go in the connect config (ICU is applied after it); naive = UTC.
    con.execute("SET TimeZone = 'UTC'")
    return con


# What a file that is not a DuckDB database usually is, by its first bytes.
_FOREIGN_MAGIC = (
    (b"SQLite format 3\x00", "a SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
DUCKDB_MAGIC = b"DUCK"  # at offset 8 of every DuckDB database file


def refuse_foreign_file(path: Path, *, empty_ok: bool = False) -> None:
    """DatabaseCorrupt, naming what the file is, when an existing file is not a DuckDB database
    (a SQLite or Parquet file given as the trial DB, say, or an empty one unless `empty_ok`);
    nothing for a DuckDB file or a missing one (DuckDB's own open decides that)."""
    try:
        if not path.is_file():
            return
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return
    if (not head and empty_ok) or (len(head) >= 12 and head[8:12] == DUCKDB_MAGIC):
        return
    what = next((name for magic, name in _FOREIGN_MAGIC if head.startswith(magic)), None)
    if not head:
        what = "empty (0 bytes)"
    elif what is None:
        what = "a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "binary data of another kind"
    hint = {
        "a SQLite database": "export the table to DuckDB, e.g. `duckdb trials.duckdb \"ATTACH '" + str(path) + "' AS s (TYPE sqlite); "
                             "CREATE TABLE trials AS FROM s.trials\"` (DuckDB's sqlite extension, installed by you)",
        "a Parquet file": "load it into DuckDB first: `duckdb trials.duckdb \"CREATE TABLE trials AS FROM '" + str(path) + "'\"`",
    }.get(what, "the trial database must be a DuckDB file (Contract 1 in the README)")
    raise DatabaseCorrupt(f"{path} is {what}, not a DuckDB database", hint=hint)


def trim(con: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Give back the blocks DuckDB keeps cached after a big scan (up to memory_limit, held for
    as long as the connection lives): lowering the limit evicts them, then it is restored. The
    console's RSS then stays near its working set (measured: -54 MB after grouping 10M trials)."""
    from oasis_ops.sqlfiles import sql

    try:
        con.execute(sql("duck_memory_limit"), {"limit": "1MB"})
        con.execute(sql("duck_memory_limit"), {"limit": memory_limit})
    except duckdb.Error:
        pass


_OS_REASONS = ("Read-only file system", "Permission denied", "No space left on device", "Disk quota exceeded")


def os_refusal(text: str) -> str | None:
    """The file system's reason in an error's text ("No space left on device", ...), or None."""
    return next((reason for reason in _OS_REASONS if reason in text), None)


def translate(exc: BaseException, where: str) -> DataError:
    """Map a DuckDB error on `where` to our exception tree, keeping the first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _LOCK_RE.search(str(exc)):
        return DatabaseLocked(f"{where} is locked by another process: {text}")
    reason = os_refusal(str(exc))
    if reason is not None:  # the file system said no: nothing is wrong with the file itself
        return DataError(f"{where}: {reason}", hint=text if text != reason else None)
    if isinstance(exc, duckdb.IOException | duckdb.SerializationException) or "not a valid DuckDB" in str(exc):
        return DatabaseCorrupt(f"{where} cannot be read as a DuckDB database: {text}")
    return DataError(f"{where}: {text}")
