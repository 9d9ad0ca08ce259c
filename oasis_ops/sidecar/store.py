"""The telemetry sidecar store (DESIGN.md Contract 2): short writes, short reads, many processes.

DuckDB allows one read-write process or many read-only ones per file, and a conflicting open
fails at once. Several of our processes write the same sidecar (the sampler every few seconds,
`oasis-ops evict` and the dashboard writing audit rows), so nobody holds it open between
batches: every write opens, inserts one batch in one transaction, and closes; every read opens
read-only, runs one named query, and closes. A conflicting open is retried with jittered
backoff for up to `lock_timeout_s` (default 5 s) before DatabaseLocked is raised. Within one
process a per-file lock serializes opens (one process cannot hold the file in two modes).

Measured here (2 cores, DuckDB 2.0.1; see the report): a 20-row write batch including
open/commit/close costs a few tens of ms, a read-only open + query + close ~15-25 ms, so brief
read-only opens are cheap enough and a snapshot copy is not needed for our own file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeAlias

import duckdb
import pandas as pd
import pyarrow as pa

from oasis_ops import __version__, duck
from oasis_ops.errors import (
    DatabaseLocked,
    DatabaseMissing,
    DataError,
    SchemaError,
    UsageError,
)
from oasis_ops.fmt import fmt_duration
from oasis_ops.settings import Settings
from oasis_ops.sidecar import schema
from oasis_ops.sqlfiles import sql

log = logging.getLogger(__name__)

Rows: TypeAlias = Sequence[Mapping[str, Any]] | pd.DataFrame | pa.Table

# The fixed allow-list of writable tables and the named INSERT of each (literal names: no SQL
# or statement name is ever built from caller input).
INSERT_STATEMENTS: dict[str, str] = {
    "host_samples": "sidecar_insert_host_samples",
    "model_samples": "sidecar_insert_model_samples",
    "events": "sidecar_insert_events",
    "actions": "sidecar_insert_actions",
    "sampler_status": "sidecar_insert_sampler_status",
    "log_requests": "sidecar_insert_log_requests",
    "log_events": "sidecar_insert_log_events",
    "log_timings": "sidecar_insert_log_timings",
    "harness_log": "sidecar_insert_harness_log",
    "log_offsets": "sidecar_insert_log_offsets",
    "runner_samples": "sidecar_insert_runner_samples",
    "warnings": "sidecar_insert_warnings",
    "gpu_samples": "sidecar_insert_gpu_samples",
}
# Upserted tables: rows of one batch are de-duplicated on this key (the last one wins).
UPSERT_KEYS: dict[str, str] = {"sampler_status": "sampler_id", "log_offsets": "path"}
# Tables with a `ts` column (table_stats()).
TS_TABLES = tuple(t for t in INSERT_STATEMENTS if t != "log_offsets")

_QUERY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_LOCK_TIMEOUT_S = 5.0
DEFAULT_MAX_ROWS = 100_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def sidecar_path_for(trial_db_path: str | os.PathLike[str] | None, settings: Settings | None = None) -> Path:
    """`settings.sidecar` when set, else `<stem>.ops.duckdb` beside the trial DB."""
    configured = getattr(settings, "sidecar", "") if settings is not None else ""
    if configured:
        path = Path(configured).expanduser()
    else:
        if not trial_db_path:
            raise UsageError("no trial database given, so no default sidecar path; set `sidecar` or `db`")
        trial = Path(trial_db_path).expanduser()
        path = trial.with_name(trial.stem + ".ops.duckdb")
    if trial_db_path and _same_file(path, Path(trial_db_path).expanduser()):
        raise UsageError(f"the sidecar must not be the trial DB itself ({path})")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


# One lock per sidecar file per process: DuckDB refuses to open one file in two modes (or two
# configurations) in one process, and the sampler thread and page threads share the process.
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    key = os.path.realpath(path)
    with _PROCESS_LOCKS_GUARD:
        lock = _PROCESS_LOCKS.get(key)
        if lock is None:
            lock = _PROCESS_LOCKS[key] = threading.RLock()
        return lock


# --- the schema as Arrow types ------------------------------------------------------------------
_ARROW_TYPES: dict[str, pa.DataType] = {
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BOOLEAN": pa.bool_(),
}


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[str, ...]
    duck_types: tuple[str, ...]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, _ARROW_TYPES[t]) for c, t in zip(self.columns, self.duck_types, strict=True)])


_TEMPLATE_LOCK = threading.Lock()


@cache
def _template() -> duckdb.DuckDBPyConnection:
    """An in-memory database at the latest schema: column types, and empty results for a
    sidecar that does not exist yet. Used under _TEMPLATE_LOCK only."""
    con = duck.connect(None, memory_limit="64MB", threads=1)
    schema.apply_migrations(con, ":memory:")
    return con


@cache
def table_schemas() -> dict[str, TableSchema]:
    """Columns and types of every writable table at the latest schema version."""
    with _TEMPLATE_LOCK:
        rows = _template().execute(sql("sidecar_columns")).fetchall()
    by_table: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        by_table.setdefault(table, []).append((column, data_type))
    return {
        t: TableSchema(t, tuple(c for c, _ in by_table[t]), tuple(d for _, d in by_table[t]))
        for t in INSERT_STATEMENTS
    }


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=str, separators=(",", ":"))


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value is not None and not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value


def prepare_rows(table: str, rows: Rows) -> pa.Table:
    """Validate and convert rows for `table` into an Arrow table holding every column.

    Rows are dicts (missing keys are NULL; unknown keys are an error), a DataFrame or an Arrow
    table. Timestamps are datetimes (naive = UTC). JSON columns take Python objects (dicts,
    lists, strings...), serialized here; in DataFrame/Arrow input they must already be JSON text.
    """
    if table not in INSERT_STATEMENTS:
        raise UsageError(f"unknown sidecar table {table!r}; expected one of {', '.join(INSERT_STATEMENTS)}")
    spec = table_schemas()[table]
    arrow_schema = spec.arrow_schema
    if isinstance(rows, pd.DataFrame):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, pa.Table):
        unknown = sorted(set(rows.column_names) - set(spec.columns))
        if unknown:
            raise SchemaError(f"unknown column(s) {', '.join(unknown)} for sidecar table {table}")
        arrays = []
        for field in arrow_schema:
            if field.name in rows.column_names:
                try:
                    arrays.append(rows.column(field.name).cast(field.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(f"{table}.{field.name}: cannot convert to {field.type}: {exc}") from None
            else:
                arrays.append(pa.nulls(rows.num_rows, field.type))
        return pa.Table.from_arrays(arrays, schema=arrow_schema)

    row_dicts: list[Mapping[str, Any]] = list(rows)
    key = UPSERT_KEYS.get(table)
    if key is not None:  # one upsert command may not touch the same key twice
        row_dicts = list({r.get(key): r for r in row_dicts}.values())
    known = set(spec.columns)
    unknown_keys = sorted({k for r in row_dicts for k in r} - known)
    if unknown_keys:
        raise SchemaError(f"unknown column(s) {', '.join(unknown_keys)} for sidecar table {table}")
    arrays = []
    for field, duck_type in zip(arrow_schema, spec.duck_types, strict=True):
        values = [r.get(field.name) for r in row_dicts]
        try:
            if duck_type == "JSON":
                values = [_json_text(v) for v in values]
            elif duck_type == "TIMESTAMP WITH TIME ZONE":
                values = [_utc(v) for v in values]
            arrays.append(pa.array(values, type=field.type))
        except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(f"{table}.{field.name}: bad value for {duck_type}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def _clean(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        return value.item()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as plain dicts: datetimes, ints, floats and None (never NaT/NaN)."""
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


@dataclass(frozen=True)
class SamplerHeartbeat:
    """The newest sampler_status row, and whether that sampler looks alive."""

    sampler_id: str
    pid: int | None
    host: str | None
    started_at: datetime | None
    last_tick_at: datetime | None
    ticks: int | None
    errors: int | None
    last_error: str | None
    interval_s: float | None
    stopped_at: datetime | None
    age_s: float | None  # seconds since last_tick_at
    running: bool

    def describe(self) -> str:
        age = "never ticked" if self.age_s is None else f"last tick {fmt_duration(self.age_s)} ago"
        if self.running:
            return f"sampler running (pid {self.pid}, {age}, {self.errors or 0} errors)"
        if self.stopped_at is not None:
            return f"sampler stopped (pid {self.pid}, {age})"
        return f"sampler is down (pid {self.pid}, {age})"


def make_sampler_id(pid: int, host: str, started_at: datetime) -> str:
    return f"{host}:{pid}:{started_at.astimezone(UTC).isoformat()}"


class Sidecar:
    """The telemetry sidecar at `path`. Cheap to create; holds no connection between calls."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: Settings | None = None,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout_s = lock_timeout_s
        self.clock = clock
        self.memory_limit = getattr(settings, "duckdb_memory_limit", None) or duck.DEFAULT_MEMORY_LIMIT
        self.threads = int(getattr(settings, "duckdb_threads", None) or duck.DEFAULT_THREADS)
        self._migrated = False
        self.lock_retries = 0  # conflicting opens retried so far (for measurements)

    @classmethod
    def for_trial_db(cls, trial_db_path: str | os.PathLike[str] | None, settings: Settings | None = None) -> Sidecar:
        return cls(sidecar_path_for(trial_db_path, settings), settings)

    def __repr__(self) -> str:
        return f"Sidecar({str(self.path)!r})"

    # --- connections ----------------------------------------------------------------------------
    @contextmanager
    def _connection(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + self.lock_timeout_s
        process_lock = _process_lock(self.path)
        if not process_lock.acquire(timeout=self.lock_timeout_s):
            raise DatabaseLocked(
                f"{self.path.name} stayed busy in this process for {self.lock_timeout_s:.0f} s",
                hint="another thread of this process holds it",
            )
        try:
            con = self._connect_with_retry(read_only, deadline)
            try:
                yield con
            finally:
                con.close()
        finally:
            process_lock.release()

    def _connect_with_retry(self, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        if not read_only and not self.path.parent.is_dir():
            raise DatabaseMissing(f"the sidecar's directory does not exist: {self.path.parent}")
        delay = 0.005
        while True:
            try:
                return duck.connect(
                    self.path,
                    read_only=read_only,
                    memory_limit=self.memory_limit,
                    threads=self.threads,
                    must_exist=read_only,
                )
            except DatabaseLocked as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DatabaseLocked(
                        f"{self.path} stayed locked for {self.lock_timeout_s:.0f} s: {exc.message}",
                        hint="oasis-ops only holds it for milliseconds; look for a long-lived "
                        "connection (DuckDB CLI, a notebook)",
                    ) from None
                self.lock_retries += 1
                # Jitter so two retrying writers do not collide in lock-step.
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.1)

    # --- schema ---------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The file's schema version (0 when it does not exist yet)."""
        schema.check_duckdb_header(self.path)
        if not self.path.exists():
            return 0
        with self._connection(read_only=True) as con:
            try:
                return schema.current_version(con, str(self.path))
            except duckdb.Error as exc:
                raise duck.translate(exc, str(self.path)) from None

    def migrate(self) -> list[int]:
        """Create the sidecar or bring it to the latest schema; returns the versions applied.

        Refuses, without modifying the file, a non-DuckDB file (DatabaseCorrupt), another
        program's database, or a schema newer than ours (SchemaError).
        """
        if self.path.exists():
            version = self.schema_version()  # read-only: header, ownership and version checks
            schema.refuse_newer(version, str(self.path))
            if version == schema.latest_version():
                self._migrated = True
                return []
        with self._connection(read_only=False) as con:
            applied = schema.apply_migrations(con, str(self.path), self.clock())
        if applied:
            log.info("sidecar %s migrated to v%d", self.path, applied[-1])
        self._migrated = True
        return applied

    def _ensure_migrated(self) -> None:
        if not self._migrated or not self.path.exists():
            self.migrate()

    # --- writes ---------------------------------------------------------------------------------
    def write_batch(self, rows_by_table: Mapping[str, Rows]) -> int:
        """Append rows to several tables in one open/transaction/close; returns rows written.

        All or nothing: on any error no row of the batch is stored.
        """
        prepared = {t: prepare_rows(t, rows) for t, rows in rows_by_table.items()}
        prepared = {t: tbl for t, tbl in prepared.items() if tbl.num_rows}
        if not prepared:
            return 0
        self._ensure_migrated()
        with self._connection(read_only=False) as con:
            try:
                con.begin()
                for table, arrow_rows in prepared.items():
                    con.register("batch_rows", arrow_rows)
                    try:
                        con.execute(sql(INSERT_STATEMENTS[table]))
                    finally:
                        con.unregister("batch_rows")
                con.commit()
            except duckdb.Error as exc:
                try:
                    con.rollback()
                except duckdb.Error:
                    pass
                raise duck.translate(exc, str(self.path)) from None
        return sum(tbl.num_rows for tbl in prepared.values())

    def record_event(
        self, kind: str, model: str | None = None, detail: Any = None, ts: datetime | None = None
    ) -> None:
        """One `events` row (a state transition), written at once."""
        self.write_batch({"events": [{"ts": ts or self.clock(), "kind": kind, "model": model, "detail": detail}]})

    def record_action(
        self,
        action: str,
        target: str | None = None,
        params: Any = None,
        requested_by: str = "unknown",
        outcome: str = "done",
        detail: Any = None,
        duration_ms: float | None = None,
        ts: datetime | None = None,
    ) -> None:
        """One `actions` audit row, written at once (raises if it cannot be stored)."""
        row = {
            "ts": ts or self.clock(),
            "action": action,
            "target": target,
            "params": params,
            "requested_by": requested_by,
            "outcome": outcome,
            "detail": detail,
            "duration_ms": duration_ms,
        }
        self.write_batch({"actions": [row]})

    # --- reads ----------------------------------------------------------------------------------
    def query(self, statement: str, **params: Any) -> pd.DataFrame:
        """Run the named read-only statement `sql/<statement>.sql` on the sidecar.

        A sidecar that does not exist yet gives the right columns and no rows.
        """
        text = sql(statement)
        params = {k: _utc(v) if isinstance(v, datetime) else v for k, v in params.items()}
        if not self.path.exists():
            with _TEMPLATE_LOCK:
                try:
                    return _template().execute(text, params).df()
                except duckdb.Error as exc:
                    raise duck.translate(exc, f"sql/{statement}.sql") from None
        schema.check_duckdb_header(self.path)
        with self._connection(read_only=True) as con:
            try:
                return con.execute(text, params).df()
            except (duckdb.CatalogException, duckdb.BinderException) as exc:
                version = schema.current_version(con, str(self.path))
                if version < schema.latest_version():
                    raise SchemaError(
                        f"sidecar {self.path} is at schema v{version}, this oasis-ops needs "
                        f"v{schema.latest_version()}",
                        hint="run `oasis-ops sample --once` (or Sidecar.migrate()) to upgrade it",
                    ) from None
                raise duck.translate(exc, f"sql/{statement}.sql") from None
            except duckdb.Error as exc:
                raise duck.translate(exc, str(self.path)) from None

    def read(self, query_name: str, **params: Any) -> pd.DataFrame:
        """Run `sql/sidecar_q_<query_name>.sql` read-only with named parameters."""
        if not _QUERY_NAME_RE.match(query_name):
            raise UsageError(f"bad sidecar query name {query_name!r}")
        try:
            return self.query("sidecar_q_" + query_name, **params)
        except KeyError:
            raise UsageError(f"no sidecar query named {query_name!r} (sql/sidecar_q_{query_name}.sql)") from None

    def _since(self, name: str, since: datetime, until: datetime | None, max_rows: int) -> pd.DataFrame:
        return self.read(name, since=since, until=until or _FAR_FUTURE, max_rows=int(max_rows))

    def warnings_since(self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> pd.DataFrame:
        """Early-warning changes (raised / cleared rows, oasis_ops.earlywarning) in [since, until)."""
        return self._since("warnings_since", since, until, max_rows)

    def host_samples_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        return self._since("host_samples_since", since, until, max_rows)

    def model_samples_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        return self._since("model_samples_since", since, until, max_rows)

    def events_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        return self._since("events_since", since, until, max_rows)

    def gpu_samples_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        """GPU reads (schema 8; see sql/migrations/008_gpu.sql)."""
        return self._since("gpu_samples_since", since, until, max_rows)

    def runner_samples_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        """llama-server runner reads (/slots, /metrics): see sql/migrations/004_runner_samples.sql."""
        return self.query("sampler_q_runner_samples_since", since=since, until=until or _FAR_FUTURE, max_rows=int(max_rows))

    def actions_since(
        self, since: datetime, until: datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> pd.DataFrame:
        return self._since("actions_since", since, until, max_rows)

    def latest_host_sample(self) -> dict[str, Any] | None:
        rows = records(self.read("latest_host_sample"))
        return rows[0] if rows else None

    def latest_model_states(self, since: datetime | None = None) -> pd.DataFrame:
        """The newest sample per model (seen since `since`, default: ever)."""
        return self.read("latest_model_states", since=since or _EPOCH)

    def sampler_heartbeat(
        self, now: datetime | None = None, stale_after_s: float | None = None
    ) -> SamplerHeartbeat | None:
        """The newest sampler run; `running` is False once its last tick is older than
        `stale_after_s` (default: 5 intervals, at least 30 s, since the sampler writes its
        heartbeat every 10 s) or it recorded a clean stop."""
        rows = records(self.read("sampler_heartbeat"))
        if not rows:
            return None
        row = rows[0]
        now = now or self.clock()
        last_tick = row.get("last_tick_at")
        age = (now - last_tick).total_seconds() if last_tick else None
        interval = row.get("interval_s")
        limit = stale_after_s if stale_after_s is not None else max(30.0, 5 * (interval or 1.0))
        running = row.get("stopped_at") is None and age is not None and age <= limit
        return SamplerHeartbeat(
            sampler_id=row["sampler_id"],
            pid=row.get("pid"),
            host=row.get("host"),
            started_at=row.get("started_at"),
            last_tick_at=last_tick,
            ticks=row.get("ticks"),
            errors=row.get("errors"),
            last_error=row.get("last_error"),
            interval_s=interval,
            stopped_at=row.get("stopped_at"),
            age_s=age,
            running=running,
        )

    def log_offsets(self) -> pd.DataFrame:
        """Ingestion offsets (path, inode, size, offset_bytes, head_hash, updated_at)."""
        return self.read("log_offsets")

    def table_stats(self) -> pd.DataFrame:
        """Row count and first/last ts of every table with a ts column (one read-only open)."""
        out = []
        if self.path.exists():
            schema.check_duckdb_header(self.path)
            with self._connection(read_only=True) as con:
                for table in TS_TABLES:
                    try:
                        count, first, last = con.execute(sql("sidecar_q_table_stats"), {"table": table}).fetchone() or (0, None, None)
                    except duckdb.CatalogException:
                        count, first, last = 0, None, None
                    except duckdb.Error as exc:
                        raise duck.translate(exc, str(self.path)) from None
                    out.append({"table": table, "row_count": count, "first_ts": first, "last_ts": last})
        else:
            out = [{"table": t, "row_count": 0, "first_ts": None, "last_ts": None} for t in TS_TABLES]
        return pd.DataFrame(out, columns=["table", "row_count", "first_ts", "last_ts"])


def heartbeat_row(
    *,
    pid: int | None = None,
    host: str | None = None,
    started_at: datetime,
    last_tick_at: datetime | None,
    ticks: int,
    errors: int,
    last_error: str | None = None,
    interval_s: float | None = None,
    stopped_at: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A `sampler_status` row for write_batch (the sampler upserts one per flush)."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname() if host is None else host
    return {
        "sampler_id": make_sampler_id(pid, host, started_at),
        "ts": now or utc_now(),
        "pid": pid,
        "host": host,
        "started_at": started_at,
        "last_tick_at": last_tick_at,
        "ticks": ticks,
        "errors": errors,
        "last_error": last_error,
        "interval_s": interval_s,
        "stopped_at": stopped_at,
        "version": __version__,
    }


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the same rows for (a lock, a missing directory, I/O)."""
    return isinstance(exc, DatabaseLocked | DatabaseMissing | OSError) or (
        isinstance(exc, DataError) and not isinstance(exc, SchemaError)
    )


__all__ = [
    "INSERT_STATEMENTS",
    "SamplerHeartbeat",
    "Sidecar",
    "heartbeat_row",
    "make_sampler_id",
    "prepare_rows",
    "records",
    "sidecar_path_for",
    "table_schemas",
]
