"""Column mapping (Contract 1): which table and columns hold the trials, from settings.

Canonical names are found automatically (case-insensitively, plus a few common aliases when a
setting is left at its default); optional columns may be absent. Anything required that is
missing raises SchemaError naming what is missing and what exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from oasis_ops.errors import SchemaError
from oasis_ops.settings import Settings, setting
from oasis_ops.sqlfiles import sql
from oasis_ops.trials.timeparse import as_utc

# Typed NULL columns the SQL adds next to the table's own (see sql/trials_rollup.sql), so an
# absent optional column maps to a placeholder of the right type instead of a different query.
NO_LATENCY = "__oasis_no_latency"
NO_TIME = "__oasis_no_time"
NO_TEXT = "__oasis_no_text"

# Aliases tried only when the setting is left at its default (auto-detection).
_ALIASES: dict[str, tuple[str, ...]] = {
    "time_column": ("started_at", "start_time", "started", "start_ts", "ts", "timestamp", "created_at"),
    "finished_column": ("finished_at", "end_time", "ended_at", "finished", "completed_at"),
    "latency_column": ("latency_ms", "duration_ms", "elapsed_ms", "wall_ms"),
    "status_column": ("status", "outcome", "result", "state"),
    "run_id_column": ("run_id", "run", "run_name"),
    "model_column": ("model", "model_name"),
    "trial_id_column": ("trial_id", "id"),
    "error_column": ("error", "error_message", "err"),
}


@dataclass(frozen=True)
class TrialMapping:
    """Where each canonical trial field lives in the user's table (None: column absent)."""

    table: str
    time_column: str
    time_type: str
    status_column: str
    latency_column: str | None
    finished_column: str | None
    run_id_column: str | None
    model_column: str | None
    trial_id_column: str | None
    error_column: str | None
    ok_words: tuple[str, ...]
    timeout_words: tuple[str, ...]
    error_words: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def time_is_tz(self) -> bool:
        return "TIME ZONE" in self.time_type.upper() or self.time_type.upper() == "TIMESTAMPTZ"

    @property
    def has_run_id(self) -> bool:
        return self.run_id_column is not None

    @property
    def has_model(self) -> bool:
        return self.model_column is not None

    def time_value(self, value: datetime) -> datetime:
        """A bound for the time column in its own type (naive UTC for TIMESTAMP) so zone maps prune."""
        aware = as_utc(value)
        return aware if self.time_is_tz else aware.astimezone(UTC).replace(tzinfo=None)

    def params(self) -> dict[str, Any]:
        """The mapping parameters every trials_*.sql statement takes."""
        return {
            "table": self.table,
            "time_col": self.time_column,
            "latency_col": self.latency_column or NO_LATENCY,
            "finished_col": self.finished_column or NO_TIME,
            "status_col": self.status_column,
            "run_id_col": self.run_id_column or NO_TEXT,
            "model_col": self.model_column or NO_TEXT,
            "has_latency": self.latency_column is not None,
            "ok_words": list(self.ok_words),
            "timeout_words": list(self.timeout_words),
        }

    @classmethod
    def resolve(cls, con: duckdb.DuckDBPyConnection, settings: Settings, *, where: str) -> TrialMapping:
        """Map `settings` onto the table in `con`; SchemaError names what is missing and what exists."""
        tables = [row[0] for row in con.execute(sql("trials_tables")).fetchall()]
        table = _pick_table(settings, tables, where)
        column_rows = con.execute(sql("trials_columns"), {"table": table}).fetchall()
        types = {str(name): str(dtype) for name, dtype in column_rows}
        names = tuple(types)

        def find(key: str, *, required: bool) -> str | None:
            configured = str(getattr(settings, key))
            found = _match(configured, names)
            if found is None and _is_default(settings, key):
                for alias in _ALIASES.get(key, ()):
                    found = _match(alias, names)
                    if found is not None:
                        break
            if found is None and required:
                raise SchemaError(
                    f"table {table!r} in {where} has no {key.removesuffix('_column')} column "
                    f"{configured!r} (setting {key}); columns: {', '.join(names)}"
                )
            return found

        time_column = find("time_column", required=True)
        status_column = find("status_column", required=True)
        assert time_column is not None and status_column is not None
        time_type = types[time_column]
        if not time_type.upper().startswith("TIMESTAMP"):
            raise SchemaError(
                f"time column {time_column!r} of table {table!r} in {where} is {time_type}, "
                "not TIMESTAMP or TIMESTAMPTZ (setting time_column)"
            )
        latency_column = find("latency_column", required=False)
        finished_column = find("finished_column", required=False)
        if latency_column is None and finished_column is None:
            raise SchemaError(
                f"table {table!r} in {where} has neither a latency column {settings.latency_column!r} "
                f"nor a finished column {settings.finished_column!r} (settings latency_column, "
                f"finished_column); columns: {', '.join(names)}"
            )
        if latency_column is None and finished_column is not None and not types[finished_column].upper().startswith("TIMESTAMP"):
            raise SchemaError(f"finished column {finished_column!r} of table {table!r} in {where} is {types[finished_column]}, not a timestamp")
        return cls(
            table=table,
            time_column=time_column,
            time_type=time_type,
            status_column=status_column,
            latency_column=latency_column,
            finished_column=finished_column,
            run_id_column=find("run_id_column", required=False),
            model_column=find("model_column", required=False),
            trial_id_column=find("trial_id_column", required=False),
            error_column=find("error_column", required=False),
            ok_words=_words(settings.ok_words),
            timeout_words=_words(settings.timeout_words),
            error_words=_words(settings.error_words),
            columns=names,
        )


def _words(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _is_default(settings: Settings, key: str) -> bool:
    """The setting has its default value, wherever it came from: a name given explicitly but
    equal to the default still lets the aliases find the table's own column."""
    return bool(getattr(settings, key) == setting(key).default)


def _match(name: str, candidates: Sequence[str]) -> str | None:
    if name in candidates:
        return name
    lowered = [c for c in candidates if c.lower() == name.lower()]
    return lowered[0] if len(lowered) == 1 else None


def _pick_table(settings: Settings, tables: list[str], where: str) -> str:
    found = _match(str(settings.table), tables)
    if found is not None:
        return found
    if _is_default(settings, "table"):
        # the default name in another schema (`evals.trials`): the one table of that name
        elsewhere = [t for t in tables if t.rsplit(".", 1)[-1].lower() == str(settings.table).lower()]
        if len(elsewhere) == 1:
            return elsewhere[0]
    listing = ", ".join(tables) if tables else "none (the database is empty)"
    raise SchemaError(f"no table {settings.table!r} in {where} (setting table); tables: {listing}")
