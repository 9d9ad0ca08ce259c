"""BatchWriter: buffer telemetry rows in memory, write them in batches, never lose them silently.

The sampler adds rows every tick; a flush happens when `flush_interval_s` has passed or
`max_rows` rows are waiting (checked on every add and by `maybe_flush()`), and on close. When a
write fails for a transient reason (the sidecar locked for longer than the retry window, a
missing directory, I/O) the rows stay buffered for the next flush. The buffer is bounded: past
`max_buffered_rows` the oldest rows are dropped and counted in `dropped_rows`. Rows that can
never be written (unknown column, wrong type) are rejected at once and counted in
`rejected_rows`. `error_count` and `last_error` say what went wrong, for the sampler heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pyarrow as pa

from oasis_ops.errors import DataError, OasisOpsError, SchemaError, UsageError
from oasis_ops.sidecar.store import Sidecar, prepare_rows

log = logging.getLogger(__name__)


class BatchWriter:
    def __init__(
        self,
        sidecar: Sidecar,
        *,
        flush_interval_s: float = 2.0,
        max_rows: int = 500,
        max_buffered_rows: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sidecar = sidecar
        self.flush_interval_s = flush_interval_s
        self.max_rows = max_rows
        self.max_buffered_rows = max_buffered_rows
        self.clock = clock
        self._buffer: dict[str, list[Mapping[str, Any]]] = {}
        self._lock = threading.Lock()  # guards the buffer and counters
        self._flush_lock = threading.Lock()  # one flush at a time keeps rows in order
        self._last_flush = clock()
        self.written_rows = 0
        self.dropped_rows = 0
        self.rejected_rows = 0
        self.error_count = 0
        self.last_error: str | None = None
        self._drop_logged = False  # log the first drop of an outage, not every one

    @property
    def pending_rows(self) -> int:
        with self._lock:
            return sum(len(rows) for rows in self._buffer.values())

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        self.add_rows(table, [row])

    def add_rows(self, table: str, rows: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._buffer.setdefault(table, []).extend(rows)
            self._enforce_bound()
        self.maybe_flush()

    def maybe_flush(self) -> int:
        """Flush when the interval has passed or enough rows wait; returns rows written."""
        due = self.clock() - self._last_flush >= self.flush_interval_s or self.pending_rows >= self.max_rows
        return self.flush() if due else 0

    def flush(self) -> int:
        """Write everything buffered in one batch; on failure keep it (see the module doc)."""
        with self._flush_lock:
            with self._lock:
                taken, self._buffer = self._buffer, {}
                self._last_flush = self.clock()
            taken = {t: rows for t, rows in taken.items() if rows}
            if not taken:
                return 0
            prepared: dict[str, pa.Table] = {}
            kept: dict[str, list[Mapping[str, Any]]] = {}
            for table, rows in taken.items():
                try:
                    prepared[table] = prepare_rows(table, rows)
                    kept[table] = rows
                except (SchemaError, UsageError) as exc:  # can never be written: say so, count them
                    self._note_error(exc)
                    with self._lock:
                        self.rejected_rows += len(rows)
                    log.error("rejected %d %s rows: %s", len(rows), table, exc)
            if not prepared:
                return 0
            try:
                written = self.sidecar.write_batch(prepared)
            except (DataError, OSError) as exc:
                self._note_error(exc)
                with self._lock:  # put them back in front of anything added meanwhile
                    for table, rows in kept.items():
                        self._buffer[table] = list(rows) + self._buffer.get(table, [])
                    self._enforce_bound()
                log.warning("sidecar write failed, %d rows kept for retry: %s", self.pending_rows, exc)
                return 0
            with self._lock:
                self.written_rows += written
                self._drop_logged = False
            return written

    def close(self) -> None:
        """Flush; raises DataError when rows are still unwritten (they are never dropped quietly)."""
        self.flush()
        left = self.pending_rows
        if left:
            raise DataError(
                f"{left} telemetry rows could not be written to {self.sidecar.path}: {self.last_error}"
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pending_rows": sum(len(r) for r in self._buffer.values()),
                "written_rows": self.written_rows,
                "dropped_rows": self.dropped_rows,
                "rejected_rows": self.rejected_rows,
                "error_count": self.error_count,
                "last_error": self.last_error,
            }

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.error_count += 1
            self.last_error = str(exc) if isinstance(exc, OasisOpsError) else f"{type(exc).__name__}: {exc}"

    def _enforce_bound(self) -> None:
        """Drop the oldest rows past max_buffered_rows (caller holds _lock); counted, logged."""
        excess = sum(len(r) for r in self._buffer.values()) - self.max_buffered_rows
        while excess > 0:
            table = max(self._buffer, key=lambda t: len(self._buffer[t]))
            cut = min(excess, len(self._buffer[table]))
            del self._buffer[table][:cut]
            self.dropped_rows += cut
            excess -= cut
            if not self._drop_logged:
                log.error("telemetry buffer full (%d rows): dropping the oldest %s rows", self.max_buffered_rows, table)
                self._drop_logged = True
