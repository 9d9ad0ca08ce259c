"""TrialSource: the one way the library reads a trial database (Contract 1).

It reads lock-free snapshots (see snapshot.py), maps the user's columns from settings (see
mapping.py), keeps the per-(run, model) groups (saved between processes: groupcache.py) and
answers rollups, summaries and counts (the query half: queries.py) from an incrementally
refreshed cache (see rollup.py). All public methods are thread-safe (one lock; DuckDB work
happens on the snapshot connection).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from oasis_ops import duck
from oasis_ops.errors import DatabaseCorrupt, DatabaseMissing, DataError
from oasis_ops.settings import Settings, load_settings
from oasis_ops.sqlfiles import sql
from oasis_ops.trials import groupcache
from oasis_ops.trials.groups import Groups
from oasis_ops.trials.mapping import TrialMapping
from oasis_ops.trials.queries import TrialQueries, _from_us, _one, execute
from oasis_ops.trials.rollup import RollupCache
from oasis_ops.trials.snapshot import (
    LIVE_WINDOW_S,
    Freshness,
    Snapshotter,
    connect_read_only,
    snapshot_dir_for,
)
from oasis_ops.trials.span import RunSpan

if TYPE_CHECKING:
    import pandas as pd

# More appended rows than this in one refresh: drop the rollup cache instead of folding them in.
MAX_DELTA_ROWS = 200_000

@dataclass(frozen=True)
class SnapshotState:
    """What validating one snapshot found."""

    mapping: TrialMapping
    trials: int
    last_row: tuple[Any, ...] | None  # fingerprint of the row at position trials - 1


class TrialSource(TrialQueries):
    """Read-only, lock-free view of a (possibly live) trial database."""

    def __init__(
        self,
        path: str | Path,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.path = Path(path).expanduser()
        self._clock = clock
        self._lock = threading.RLock()
        if not self.path.exists():
            raise DatabaseMissing(f"trial database not found: {self.path}")
        if not self.path.is_file():
            raise DatabaseCorrupt(f"{self.path} is not a file")
        self._snapshots: Snapshotter[SnapshotState] = Snapshotter(
            self.path,
            snapshot_dir_for(self.path, self.settings.snapshot_dir),
            open_snapshot=self._open,
            validate=self._validate,
            min_interval_s=float(self.settings.snapshot_min_interval_s),
            max_interval_s=max(float(self.settings.max_staleness_s) / 2.0, 0.5),
            clock=clock,
        )
        self._cache = RollupCache(self._compute)
        self._groups = Groups()
        self._summaries: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._closed = False
        with self._lock:
            self._snapshots.refresh(force=True)
            self._rebuild_groups(skip_rows=0)

    # --- snapshot lifecycle -------------------------------------------------------------------
    def _open(self, copy: Path) -> duckdb.DuckDBPyConnection:
        con = connect_read_only(copy, memory_limit=self.settings.duckdb_memory_limit, threads=int(self.settings.duckdb_threads))
        try:
            con.execute(sql("trials_mapped_macro"))  # the column mapping every trials_*.sql reads through
        except duckdb.Error as exc:
            con.close()
            raise duck.translate(exc, str(self.path)) from None
        return con

    def _validate(self, con: duckdb.DuckDBPyConnection) -> SnapshotState:
        mapping = TrialMapping.resolve(con, self.settings, where=str(self.path))
        (trials,) = _one(con, "trials_count", {"table": mapping.table})
        last_row = self._row_at(con, mapping, int(trials) - 1) if trials else None
        return SnapshotState(mapping, int(trials), last_row)

    @staticmethod
    def _row_at(con: duckdb.DuckDBPyConnection, mapping: TrialMapping, position: int) -> tuple[Any, ...] | None:
        params = {"table": mapping.table, "position": position}
        rows = execute(con, "trials_row_at", params).fetchall()  # fetch all: DuckDB 2 refuses work on a half-read result
        return tuple(rows[0]) if rows else None

    def refresh(self) -> Freshness:
        """Take a new snapshot if the source changed (and the copy interval passed); fold new rows in."""
        with self._lock:
            self._check_open()
            previous = self._snapshots.current
            assert previous is not None
            if self._snapshots.refresh():
                self._after_new_snapshot(previous.state)
            return self._freshness()

    def _after_new_snapshot(self, old: SnapshotState) -> None:
        new = self._state
        self._summaries.clear()
        grew = (
            new.mapping == old.mapping
            and new.trials >= old.trials
            and (old.trials == 0 or self._row_at(self._con, new.mapping, old.trials - 1) == old.last_row)
        )
        if not grew:
            self._cache.clear()
            self._rebuild_groups(skip_rows=0)
            return
        appended = new.trials - old.trials
        if appended == 0:
            return
        if appended > MAX_DELTA_ROWS:
            self._cache.clear()
        # The groups first: _compute() reads only where trials are, by the groups' extent.
        self._merge_groups(self._group_rows(skip_rows=old.trials))
        if appended <= MAX_DELTA_ROWS and len(self._cache):
            params = {**self._base_params(), "skip_rows": old.trials, "max_rows": appended}
            rows = execute(self._con, "trials_new_rows", params).fetchnumpy()
            self._cache.apply_new_rows(
                np.asarray(rows["started_us"], dtype="int64"),
                np.asarray(rows["run_id"], dtype=object),
                np.asarray(rows["model"], dtype=object),
            )

    def freshness(self) -> Freshness:
        with self._lock:
            self._check_open()
            return self._freshness()

    def _freshness(self) -> Freshness:
        snap = self._snapshots.current
        assert snap is not None
        now = self._clock()
        source_mtime = snap.sig.mtime
        try:
            source_mtime = self._snapshots.source_sig().mtime
        except DatabaseMissing:
            pass
        note = self._snapshots.note
        newest = self._newest_trial_at()
        return Freshness(
            source_path=str(self.path),
            snapshot_taken_at=datetime.fromtimestamp(self._snapshots.verified_at, UTC),
            source_mtime=datetime.fromtimestamp(source_mtime, UTC),
            newest_trial_at=newest,
            stale_s=max(0.0, now - self._snapshots.verified_at),
            live=now - source_mtime < LIVE_WINDOW_S,
            note=note,
            trials=self._state.trials,
            copy_ms=snap.copy_ms,
        )

    @property
    def _state(self) -> SnapshotState:
        snap = self._snapshots.current
        assert snap is not None
        return snap.state

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        snap = self._snapshots.current
        assert snap is not None
        return snap.con

    @property
    def mapping(self) -> TrialMapping:
        with self._lock:
            self._check_open()
            return self._state.mapping

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._snapshots.close()
                self._closed = True

    def __enter__(self) -> TrialSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DataError(f"trial source {self.path} is closed")

    # --- runs, models, bounds (a small per-(run, model) table, merged incrementally) -----------
    def _group_rows(self, skip_rows: int) -> Groups:
        params = {**self._base_params(), "skip_rows": skip_rows}
        try:
            rows = execute(self._con, "trials_groups", params).fetchall()
        except duckdb.Error as exc:
            raise duck.translate(exc, str(self.path)) from None
        return Groups(rows)

    def _rebuild_groups(self, skip_rows: int) -> None:
        state = self._state
        if skip_rows == 0:
            cached = groupcache.load(self._snapshots.directory, state.mapping)
            if cached is not None:
                groups, covered, last_row = cached
                same_start = covered == 0 or (
                    covered <= state.trials and groupcache.fingerprint(self._row_at(self._con, state.mapping, covered - 1)) == last_row
                )
                if same_start:
                    self._groups = groups
                    if covered < state.trials:  # the table grew since: group only the new rows
                        self._merge_groups(self._group_rows(skip_rows=covered))
                        groupcache.save(self._snapshots.directory, state.mapping, self._groups, state.trials, state.last_row)
                    return
        self._groups = self._group_rows(skip_rows)
        if skip_rows == 0:
            groupcache.save(self._snapshots.directory, state.mapping, self._groups, state.trials, state.last_row)
            duck.trim(self._con, self.settings.duckdb_memory_limit)  # a scan of every row: give its blocks back

    def _merge_groups(self, fresh: Groups) -> None:
        self._groups = self._groups.merged(fresh)

    def _newest_trial_at(self) -> datetime | None:
        last = self._groups.last_us()
        return None if last is None else _from_us(last)

    def runs(self) -> pd.DataFrame:
        """run_id, models (comma-separated), first_at, last_at (newest start), ended_at, duration_s,
        trials, failures; newest first. first_at / ended_at / duration_s are run_spans()'s."""
        import pandas as pd  # a DataFrame for the pages; the CLI asks run_spans() (no pandas)

        spans = self.run_spans()
        if not spans:
            return pd.DataFrame({
                "run_id": pd.Series(dtype="object"),
                "models": pd.Series(dtype="object"),
                "first_at": pd.Series(dtype="datetime64[us, UTC]"),
                "last_at": pd.Series(dtype="datetime64[us, UTC]"),
                "ended_at": pd.Series(dtype="datetime64[us, UTC]"),
                "duration_s": pd.Series(dtype="float64"),
                "trials": pd.Series(dtype="int64"),
                "failures": pd.Series(dtype="int64"),
            })  # fmt: skip
        rows = [
            {
                "run_id": span.run_id,
                "models": ", ".join(span.models),
                "first_at": pd.Timestamp(span.start),
                "last_at": pd.Timestamp(span.last_started),
                "ended_at": pd.Timestamp(span.end),
                "duration_s": span.duration.total_seconds(),
                "trials": span.trials,
                "failures": span.failures,
            }
            for span in spans
        ]
        return pd.DataFrame(rows).reset_index(drop=True)

    def run_spans(self, model: str | None = None) -> list[RunSpan]:
        """Every run's span (see oasis_ops.trials.span), newest first (by newest trial start)."""
        with self._lock:
            self._check_open()
            return self._groups.matching(model=model).spans()

    def run_span(self, run_id: str | None = None, model: str | None = None) -> RunSpan | None:
        """The span of one run (None: every trial, e.g. a table without a run_id column), of one
        model when given: the one definition of a run's start, end and duration every surface
        uses (oasis_ops.trials.span). None when no trial matches."""
        with self._lock:
            self._check_open()
            return self._groups.matching(run_id, model).span(run_id)

    def models(self) -> list[str]:
        with self._lock:
            self._check_open()
            return self._groups.models()

    def trial_counts(self, run_id: str | None = None, model: str | None = None) -> tuple[int, int]:
        """(trials, those without a start time) matching the filters: untimed trials are counted
        but on no time axis, so every surface says how many it leaves out."""
        with self._lock:
            self._check_open()
            part = self._groups.matching(run_id, model)
            return part.trials(), part.untimed()

    def time_bounds(self, run_id: str | None = None, model: str | None = None) -> tuple[datetime, datetime] | None:
        """First and last trial start time (UTC) matching the filters; None when there is none."""
        span = self.run_span(run_id, model)
        return None if span is None else (span.start, span.last_started)

    def latest_run(self) -> str | None:
        """run_id of the run with the newest trial (None when the table has no run_id column)."""
        spans = self.run_spans()
        return spans[0].run_id if spans else None


__all__ = ["Freshness", "SnapshotState", "TrialSource"]
