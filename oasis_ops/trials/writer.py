"""Runner-side safe writer (Contract 1): what a harness should use to record trials.

DuckDB lets one process write a file or many read it, never both, and the lock error is
immediate. A runner that holds the file open all run blocks every reader; one that opens per
trial without retrying loses a trial whenever anything else has the file open. TrialWriter
does neither: it buffers trials and flushes them in batches (open, insert, close), retrying on
a lock with backoff, and never drops a row: rows it could not write stay buffered, and on
close they are saved next to the database as JSON lines.

    from oasis_ops.trials.writer import TrialWriter
    with TrialWriter("trials.duckdb") as writer:
        writer.add(trial_id=1, run_id="run-7", model="gemma4:e4b", started_at=t0,
                   finished_at=t1, latency_ms=4100.0, status="ok")
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from oasis_ops.errors import DatabaseLocked, DataError
from oasis_ops.sqlfiles import sql
from oasis_ops.trials.snapshot import connect_with_limits

FIELDS = ("trial_id", "run_id", "model", "started_at", "finished_at", "latency_ms", "status", "error",
          # optional, beyond Contract 1's columns: token counts and time held in the proxy's queue
          "prompt_tokens", "completion_tokens", "queued_ms")
CORE_FIELDS = FIELDS[:8]


def default_run_id(prefix: str, now: datetime | None = None) -> str:
    """`<prefix>-<UTC time>`: the run_id of trials recorded by the proxy or the litellm callback
    when none was set."""
    return f"{prefix}-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}"


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class TrialWriter:
    """Batching writer: flushes every `batch_size` trials or `flush_interval_s`, retrying locks."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "trials",
        batch_size: int = 50,
        flush_interval_s: float = 2.0,
        retry_for_s: float = 30.0,
        background: bool = True,
        memory_limit: str = "128MB",
        threads: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.table = table
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_for_s = retry_for_s
        self.memory_limit = memory_limit
        self.threads = threads
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending
        self._flush_lock = threading.Lock()  # one flush at a time
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self.written = 0
        self.lock_retries = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="oasis-trial-writer", daemon=True)
            self._thread.start()

    def add(self, **trial: Any) -> None:
        """Buffer one trial (canonical field names; naive datetimes are UTC)."""
        self.write(trial)

    def write(self, trial: Mapping[str, Any]) -> None:
        unknown = set(trial) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown trial fields: {sorted(unknown)}; expected some of {FIELDS}")
        row = {field: _naive_utc(trial.get(field)) for field in FIELDS}
        with self._lock:
            self._pending.append(row)
            full = len(self._pending) >= self.batch_size
        if full and self._thread is None:
            self.flush()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write everything buffered; retries a lock for `retry_for_s`, then raises DatabaseLocked
        with the rows still buffered (nothing is lost). Returns the rows written."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
            if not batch:
                return 0
            self._insert(batch)
            with self._lock:
                del self._pending[: len(batch)]
            self.written += len(batch)
            self._last_flush = time.monotonic()
            return len(batch)

    def close(self) -> None:
        """Stop the background flusher and write the rest; rows that still cannot be written are
        saved to `<db>.pending-<pid>.jsonl` and the error is raised."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_for_s + 5)
        try:
            self.flush()
        except DataError:
            self._spill()
            raise

    def __enter__(self) -> TrialWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.flush_if_due()

    def flush_if_due(self) -> bool:
        """Flush when a batch is full or flush_interval_s has passed with trials waiting (the
        background flusher's round); True if rows were written. A failed write keeps them."""
        due = time.monotonic() - self._last_flush >= self.flush_interval_s
        if not (self.pending >= self.batch_size or (due and self.pending)):
            return False
        try:
            return self.flush() > 0
        except DataError:
            return False  # still buffered; the next round retries

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.02
        while True:
            try:
                con = connect_with_limits(self.path, read_only=False, memory_limit=self.memory_limit, threads=self.threads)
            except DatabaseLocked:
                if time.monotonic() >= deadline:
                    raise
                self.lock_retries += 1
                self._sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                self._insert_with(con, batch)
                return
            finally:
                con.close()

    def _insert_with(self, con: duckdb.DuckDBPyConnection, batch: list[dict[str, Any]]) -> None:
        frame = pd.DataFrame(batch, columns=list(FIELDS))
        for column in ("latency_ms", "queued_ms"):
            frame[column] = frame[column].astype("float64")
        for column in ("prompt_tokens", "completion_tokens"):
            frame[column] = frame[column].astype("Int64")
        for column in ("started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column])
        try:
            tables = {row[0] for row in con.execute(sql("trials_tables")).fetchall()}
            if self.table not in tables:
                con.sql(sql("trials_writer_schema")).create(self.table)
            columns = [row[0] for row in con.execute(sql("trials_columns"), {"table": self.table}).fetchall()]
            rows = con.from_df(frame)
            present = [c for c in columns if c in FIELDS]
            expressions = [duckdb.ColumnExpression(c) if c in present else duckdb.ConstantExpression(None).alias(c) for c in columns]
            if not any(c in CORE_FIELDS for c in present):
                raise DataError(f"table {self.table!r} in {self.path} has none of the trial columns {CORE_FIELDS}")
            con.begin()
            rows.select(*expressions).insert_into(self.table)
            con.commit()
        except duckdb.Error as exc:
            raise DataError(f"cannot write trials to {self.path}: {str(exc).splitlines()[0]}") from None

    def _spill(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        spill = self.path.with_name(f"{self.path.name}.pending-{os.getpid()}.jsonl")
        try:
            with spill.open("a", encoding="utf-8") as f:
                for row in batch:
                    f.write(json.dumps(row, default=str) + "\n")
        except OSError as exc:
            with self._lock:  # nothing is lost: the rows stay pending in memory
                self._pending[:0] = batch
            raise DataError(f"cannot write trials to {self.path} and cannot save them to {spill}: "
                            f"{exc.strerror or exc}") from None
