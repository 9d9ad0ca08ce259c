"""The per-(run, model) groups of a trial table, in memory: a few plain rows, no pandas.

Every TrialSource keeps them (sql/trials_groups.sql: first and last start, the latest end,
trials and ok per run and model) and answers the latest run, each run's span, the models and
where trials are at all from them. They are a handful of rows (one per run and model), read
on every start of a short-lived command (`timeline --last 6h`), which therefore needs no
pandas (0.25 s of import) to answer.

A NULL in a time column (a trial table with missing start times) is left out of that column's
min/max; a run with no start time at all has no span.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from oasis_ops.trials.span import RunSpan
from oasis_ops.trials.timeparse import from_epoch_us


class Group(NamedTuple):
    run_id: str | None
    model: str | None
    first_us: int | None
    last_us: int | None
    last_end_us: int | None
    trials: int
    ok: int
    untimed: int = 0  # trials without a start time (NULL): counted, on no time axis


COLUMNS = Group._fields


def _min(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and value != value):  # NULL, or NaN from a float column
        return None
    return int(value)


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


class Groups:
    """An immutable list of Group rows with the few questions TrialSource asks of them."""

    __slots__ = ("rows",)

    def __init__(self, rows: Iterable[Sequence[Any]] = ()) -> None:
        self.rows: tuple[Group, ...] = tuple(
            Group(_text_or_none(r[0]), _text_or_none(r[1]), _int_or_none(r[2]), _int_or_none(r[3]), _int_or_none(r[4]),
                  int(r[5] or 0), int(r[6] or 0), int(r[7] or 0) if len(r) > 7 else 0)  # fmt: skip
            for r in rows
        )

    @classmethod
    def from_columns(cls, columns: dict[str, Sequence[Any]]) -> Groups:
        return cls(zip(*(columns[c] for c in COLUMNS), strict=True))

    def columns(self) -> dict[str, list[Any]]:
        return {c: [getattr(r, c) for r in self.rows] for c in COLUMNS}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.rows

    def first_us(self) -> int | None:
        return _min(r.first_us for r in self.rows)

    def last_us(self) -> int | None:
        return _max(r.last_us for r in self.rows)

    def merged(self, fresh: Groups) -> Groups:
        """These groups and `fresh` (the same query over rows appended since) as one."""
        if fresh.empty:
            return self
        by_key: dict[tuple[str | None, str | None], Group] = {}
        for row in (*self.rows, *fresh.rows):
            key = (row.run_id, row.model)
            old = by_key.get(key)
            if old is None:
                by_key[key] = row
                continue
            by_key[key] = Group(row.run_id, row.model, _min((old.first_us, row.first_us)), _max((old.last_us, row.last_us)),
                                _max((old.last_end_us, row.last_end_us)), old.trials + row.trials, old.ok + row.ok,
                                old.untimed + row.untimed)  # fmt: skip
        return Groups(by_key.values())

    def matching(self, run_id: str | None = None, model: str | None = None) -> Groups:
        """The groups of one run and/or one model (None: any)."""
        if run_id is None and model is None:
            return self
        return Groups(r for r in self.rows if (run_id is None or r.run_id == run_id) and (model is None or r.model == model))

    def trials(self) -> int:
        return sum(r.trials for r in self.rows)

    def untimed(self) -> int:
        return sum(r.untimed for r in self.rows)

    def models(self) -> list[str]:
        return sorted({r.model for r in self.rows if r.model is not None})

    def span(self, run_id: str | None) -> RunSpan | None:
        """The span of all these groups as run `run_id` (oasis_ops.trials.span): start = first
        start, end = latest end, last_started = newest start; None without any start time."""
        first, last = self.first_us(), self.last_us()
        if first is None or last is None:
            return None
        end = _max(r.last_end_us for r in self.rows)
        trials = sum(r.trials for r in self.rows)
        return RunSpan(
            run_id=run_id,
            start=from_epoch_us(first),
            end=from_epoch_us(end if end is not None else last),
            last_started=from_epoch_us(last),
            trials=trials,
            failures=trials - sum(r.ok for r in self.rows),
            models=tuple(self.models()),
        )

    def spans(self) -> list[RunSpan]:
        """Every run's span, newest first (by newest trial start)."""
        by_run: dict[str | None, list[Group]] = {}
        for row in self.rows:
            by_run.setdefault(row.run_id, []).append(row)
        spans = [span for run_id, rows in by_run.items() if (span := Groups(rows).span(run_id)) is not None]
        return sorted(spans, key=lambda span: span.last_started, reverse=True)


__all__ = ["COLUMNS", "Group", "Groups"]
