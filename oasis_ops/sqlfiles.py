"""Named SQL statements: one file per statement under `sql/`, always parameterised.

Identifiers from a user's column mapping are passed as parameters too (DuckDB's
`query_table($table)` and `COLUMNS(lambda c: c = $column)`), so no SQL text is ever built
with string formatting.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def sql_names() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql"))


@cache
def sql(name: str) -> str:
    """The text of `sql/<name>.sql`; KeyError names the missing statement."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"no SQL statement named {name!r} in {SQL_DIR}")
    return path.read_text(encoding="utf-8")
