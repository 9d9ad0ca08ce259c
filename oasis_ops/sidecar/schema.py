"""The sidecar's public, versioned schema: numbered migrations under `sql/migrations/`.

`sql/migrations/NNN_name.sql` files are applied in order; each one, together with its
`schema_version` row, runs in one transaction, so a crash leaves either the old or the new
schema. Applying is idempotent (the current version is re-read inside the transaction, so two
processes migrating at once apply each migration exactly once).

Files we do not understand are never modified: a schema newer than ours raises SchemaError,
a DuckDB file holding other tables but no `schema_version` (e.g. the trial DB given by mistake)
raises SchemaError, and a file that is not DuckDB at all raises DatabaseCorrupt before DuckDB
is asked to open it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import duckdb

from oasis_ops import duck
from oasis_ops.errors import DatabaseCorrupt, SchemaError
from oasis_ops.sqlfiles import SQL_DIR, sql

MIGRATIONS_DIR = SQL_DIR / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# DuckDB's main header starts at byte 8 with this magic (a 4096-byte block precedes the rest).
_DUCKDB_MAGIC = b"DUCK"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in version order; the versions must be 1..n with no gaps."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if not match:
            raise SchemaError(f"badly named migration {path.name} (expected NNN_name.sql)")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"sidecar migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)


def latest_version() -> int:
    """The newest schema version this oasis-ops knows."""
    return len(migrations())


def check_duckdb_header(path: Path) -> None:
    """Raise DatabaseCorrupt when an existing file is not a DuckDB database (without opening it)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DatabaseCorrupt(f"cannot read sidecar {path}: {exc.strerror or exc}") from None
    if head[8:12] != _DUCKDB_MAGIC:  # an empty file too: DuckDB itself refuses it
        raise DatabaseCorrupt(
            f"{path} is not a DuckDB database; refusing to use it as the telemetry sidecar",
            hint="point `sidecar` elsewhere or move the file away; it was left untouched",
        )


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute(sql("sidecar_tables")).fetchall()]


def current_version(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """The schema version of an open sidecar; 0 for an empty database.

    Raises SchemaError for a database that holds tables but no schema_version: not ours.
    """
    tables = table_names(con)
    if "schema_version" not in tables:
        if tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise SchemaError(
                f"{where} is not an oasis-ops sidecar (it has tables {shown} but no schema_version)",
                hint="the sidecar must be its own file, never the trial DB; it was left untouched",
            )
        return 0
    row = con.execute(sql("sidecar_schema_version")).fetchone()
    return int(row[0]) if row else 0


def refuse_newer(version: int, where: str) -> None:
    known = latest_version()
    if version > known:
        raise SchemaError(
            f"sidecar schema v{version} is newer than this oasis-ops (v{known}); upgrade oasis-ops",
            hint=f"{where} was left untouched",
        )


def apply_migrations(con: duckdb.DuckDBPyConnection, where: str, now: datetime | None = None) -> list[int]:
    """Bring an open read-write sidecar to the latest schema; returns the versions applied."""
    applied: list[int] = []
    try:
        con.begin()
        version = current_version(con, where)
        refuse_newer(version, where)
        if version < latest_version():
            con.execute(sql("sidecar_create_schema_version"))
            stamp = now or datetime.now(UTC)
            for migration in migrations()[version:]:
                for statement in con.extract_statements(migration.text):
                    con.execute(statement)
                con.execute(
                    sql("sidecar_insert_schema_version"),
                    {"version": migration.version, "applied_at": stamp, "name": migration.name},
                )
                applied.append(migration.version)
        con.commit()
    except BaseException as exc:
        try:
            con.rollback()
        except duckdb.Error:
            pass
        if isinstance(exc, duckdb.Error):
            raise duck.translate(exc, where) from None
        raise
    return applied
