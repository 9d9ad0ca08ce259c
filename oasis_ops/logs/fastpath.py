"""Vectorised reading of server.log chunks (part of ServerLogParser): `feed_fast`.

The per-line loop of `ServerLogParser.feed_lines` costs ~2.5 µs a line, most of it Python
work on lines whose shape is fixed: Gin access lines, llama-server's `slot print_timing` /
`slot launch_slot_` lines, image times and repeated runner chatter. oasis_ops.logs.classify
splits a part of whole lines in Arrow and extracts those shapes' fields for all lines at once
(in a worker thread, while this module's ordered pass runs over the previous part); Gin rows
become one Arrow table. The ordered pass then goes through, in line order, only the lines
that carry state, with their fields already extracted:
- generation requests (Gin, status 200, a generation path) and timing / launch / image lines,
  because the pairing rules of oasis_ops.logs.timings need them in order; a task whose launch,
  image and timing lines come in a row is one step, and a run of (task, its request) pairs
  whose pairing is certain and leaves the state clean makes its log_timings rows in bulk;
- every other line (slog, prefixed, odd), through the ordinary per-line code.
Other Gin lines never enter the loop: their only effects on the state (the last timed line,
the first Gin line after a completed block, the time of events waiting for one) are applied
once per run of such lines, with the run's first and last time.

Exactness: a line is read in bulk only when it matches a strict form whose values the
per-line code reads the same way (Go durations summed in integer nanoseconds, valid clock
times); anything else (ANSI colours, odd spacing, leap seconds, invalid UTF-8, over-long
lines) takes the per-line code, so both paths produce the same rows and counts
(tests/test_log_fastpath.py compares them on every fixture and on the awkward cases).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from oasis_ops.logs.classify import (
    _GEN,
    _IMG_DEC,
    _IMG_ENC,
    _LAUNCHED,
    _P,
    _T_EVAL,
    _T_PROMPT,
    _T_TOTAL,
    PART_BYTES,
    Chunk,
    GinBlock,
    parts,
    pool,
    prepare,
)
from oasis_ops.logs.rows import MAX_LINE_CHARS, ParseCounts, Rows, split_chunk
from oasis_ops.logs.timefmt import LocalClock
from oasis_ops.logs.timings import LATENCY_SLACK_MS, MAX_TASKS

if TYPE_CHECKING:
    from oasis_ops.logs.timings import _Task

FAST_MIN_BYTES = 256 << 10  # smaller chunks (the follower's ticks) take the per-line path
_TASK = 8  # a task's launch, image and timing lines in a row, as one event


class FastPathMixin:
    """ServerLogParser's vectorised chunk reader (state shared with the other mixins)."""

    rows: Rows
    counts: ParseCounts
    last_ts: int | None
    _last_gin_ts: int | None
    _gin_clock: LocalClock
    _untimed: list[Any]
    _waiting: list[_Task]
    _tasks: dict[int, _Task]
    _launched: int | None
    _header: _Task | None
    _prefix_ts: int | None
    _orphan_image: list[float | None]
    _requests: Any

    if TYPE_CHECKING:

        def feed_lines(self, lines: Any, first_line_no: int, *, cr: bool = True) -> None: ...
        def _timed(self, ts: int) -> None: ...
        def _request(self, line_no: int, ts: int, latency_ms: float) -> None: ...
        def _complete(self, task: _Task) -> None: ...
        def _complete_overflow(self) -> None: ...
        def _total(self, task: _Task, task_id: int, total_ms: float) -> None: ...
        def _task(self, task_id: int, line_no: int) -> _Task: ...

    def feed_fast(self, data: bytes, first_line_no: int) -> bool:
        """Feed whole lines (`data` ends with a newline) through the vectorised path.

        The data is cut into parts of about PART_BYTES: while the ordered pass (Python, holding
        the GIL) runs over one part, the next part is split and classified in a worker thread
        (Arrow's kernels release the GIL), so two cores share the work. A part that is not valid
        UTF-8 takes the per-line path, which marks its bad lines."""
        pieces = parts(data, PART_BYTES)
        if len(pieces) == 1:
            self._feed_prepared(pieces[0], prepare(pieces[0], self._gin_clock), first_line_no)
            return True
        worker = pool()
        ahead = worker.submit(prepare, pieces[0], self._gin_clock)
        line_no = first_line_no
        for i, piece in enumerate(pieces):
            chunk = ahead.result()
            if i + 1 < len(pieces):
                ahead = worker.submit(prepare, pieces[i + 1], self._gin_clock)
            self._feed_prepared(piece, chunk, line_no)
            line_no += len(chunk.lines) if chunk is not None else piece.count(b"\n")
        return True

    def _feed_prepared(self, part: bytes, chunk: Chunk | None, first_line_no: int) -> None:
        if chunk is None:
            self.feed_lines(split_chunk(part), first_line_no, cr=b"\r" in part)
            return
        self.counts.add(chunk.counts)
        gin = chunk.gin
        if gin.clock is not self._gin_clock:  # prepared with the clock of before an offset was learned
            gin.reclock(self._gin_clock, -1)
        self._ordered_pass(chunk.lines, chunk.kind, chunk.a, chunk.b, chunk.c, gin, first_line_no)

    # -- the ordered pass
    def _ordered_pass(self, lines: pa.Array, kind: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                      gin: GinBlock, first_line_no: int) -> None:  # fmt: skip
        events = np.flatnonzero(kind >= 0)
        texts = iter(lines.take(pa.array(events[kind[events] == _P])).to_pylist())
        # Launch, image and timing lines of one task in a row become one event at its total line.
        tasks_at, task_list = _merge_tasks(events, kind, a)
        pos2, k2, b2, c2 = task_list(b, c)
        events = events[tasks_at >= -1]
        ev_kind = kind[events]
        starts = tasks_at[tasks_at >= -1]
        ev_kind[starts >= 0] = _TASK
        skipped = gin.skipped
        # the run of skipped Gin lines before each event: [lo, hi) in gin.skipped
        lo = np.searchsorted(skipped, np.concatenate(([-1], events[:-1])), side="right")
        hi = np.searchsorted(skipped, events, side="left")
        bulk = _Bulk(events, ev_kind, starts, a, b, hi > lo, pos2, k2, b2, c2)
        pos2l, k2l, b2l, c2l = pos2.tolist(), k2.tolist(), b2.tolist(), c2.tolist()
        gts = gin.ts.tolist()
        skipped_rows = gin.skipped_rows.tolist()
        counts = self.counts
        feed = self.feed_lines
        slog = self._slog  # type: ignore[attr-defined]
        tasks = self._tasks
        image = self._fast_image
        lines_before = counts.lines
        ev_pos, ev_k, ev_a, ev_b, ev_c = events.tolist(), ev_kind.tolist(), a[events].tolist(), b[events].tolist(), c[events].tolist()
        ev_start, ev_lo, ev_hi = starts.tolist(), lo.tolist(), hi.tolist()
        run_end = bulk.run_end
        i, n_events = 0, len(ev_pos)
        while i < n_events:
            pos, k, ta, mb, run_lo, run_hi = ev_pos[i], ev_k[i], ev_a[i], ev_b[i], ev_lo[i], ev_hi[i]
            end = run_end.get(i)
            if end is not None and self._bulk_ready(bulk, i, end):
                if run_hi > run_lo:
                    self._gin_run(gts[skipped_rows[run_lo]], gts[skipped_rows[run_hi - 1]])
                bulk.take(i, end)
                last = gts[ev_a[end - 1]]
                self.last_ts = self._last_gin_ts = last
                counts.timings += (end - i) // 2
                i = end
                continue
            i += 1
            if run_hi > run_lo:
                self._gin_run(gts[skipped_rows[run_lo]], gts[skipped_rows[run_hi - 1]])
            if k == _TASK:  # as _LAUNCHED, then each image, _T_PROMPT, _T_EVAL and _T_TOTAL below
                start = ev_start[i - 1]
                line_no = first_line_no + pos2l[start]
                self._launched = ta
                task = tasks.get(ta) or self._task(ta, line_no)
                if task.start_line is None:
                    task.start_line = line_no
                prompt = start + 1
                while k2l[prompt] != _T_PROMPT:
                    if k2l[prompt] == _IMG_ENC:
                        image(b2l[prompt], None)
                    else:
                        image(None, b2l[prompt])
                    prompt += 1
                task.prompt_eval_ms, task.prompt_tokens = b2l[prompt], c2l[prompt]
                task.eval_ms, task.eval_tokens = b2l[prompt + 1], c2l[prompt + 1]
                self._total(task, ta, mb)
                continue
            line_no = first_line_no + pos
            if k == _GEN:
                ts = gts[ta]
                self._gin_run(ts, ts)
                self._request(line_no, ts, mb)
            elif k == _P:
                clock = self._gin_clock
                text = next(texts)
                if text.startswith("time=") and len(text) <= MAX_LINE_CHARS:
                    slog(text, line_no)  # as feed_lines would, without its set-up per call
                else:
                    feed((text,), line_no, cr=False)
                if self._gin_clock is not clock:  # an offset learned here: later Gin lines take it
                    gin.reclock(self._gin_clock, pos)
                    gts = gin.ts.tolist()
            elif k <= _T_TOTAL:
                task = tasks.get(ta) or self._task(ta, line_no)
                if k == _T_PROMPT:
                    task.prompt_eval_ms, task.prompt_tokens = mb, ev_c[i - 1]
                elif k == _T_EVAL:
                    task.eval_ms, task.eval_tokens = mb, ev_c[i - 1]
                else:
                    self._total(task, ta, mb)
            elif k == _LAUNCHED:
                self._launched = ta
                task = tasks.get(ta) or self._task(ta, line_no)
                if task.start_line is None:
                    task.start_line = line_no
            else:
                image(mb if k == _IMG_ENC else None, mb if k == _IMG_DEC else None)
        counts.lines = lines_before  # feed_lines counted the per-line ones again
        tail = int(np.searchsorted(skipped, events[-1], side="right")) if len(events) else 0
        if tail < len(skipped):
            self._gin_run(gts[skipped_rows[tail]], gts[skipped_rows[-1]])
        if len(gin.positions):
            table = dict(gin.table)
            table["ts"] = pa.array(gin.ts, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
            table["line_no"] = pa.array(gin.positions + first_line_no, pa.int64())
            self.rows.add_piece("log_requests", table)
        timings = bulk.table(gin.ts, first_line_no)
        if timings is not None:
            self.rows.add_piece("log_timings", timings)

    def _bulk_ready(self, bulk: _Bulk, i: int, end: int) -> bool:
        """Whether the run of (task, its request) pairs at events [i, end) leaves the state as it
        found it, so its rows can be made in bulk: nothing waits to be paired, no task of the same
        id is open, no image is waiting for a task, no event for a time; room for one more task."""
        if self._waiting or self._requests or self._untimed or self._orphan_image != [None, None]:
            return False
        if len(self._tasks) >= MAX_TASKS or self._prefix_ts is not None:
            return False
        return not self._tasks or not bulk.reuses(i, end, self._tasks)

    def _gin_run(self, first_ts: int, last_ts: int) -> None:
        """The effects of a run of Gin lines on the state, as ServerLogParser._gin has them."""
        self.last_ts = self._last_gin_ts = first_ts
        if self._untimed:
            self._timed(first_ts)
        waiting = self._waiting
        if waiting and waiting[-1].after_gin_ts is None:
            for task in reversed(waiting):
                if task.after_gin_ts is not None:
                    break
                task.after_gin_ts = first_ts
        self.last_ts = self._last_gin_ts = last_ts

    def _fast_image(self, encode_ms: float | None, decode_ms: float | None) -> None:
        owner = self._tasks.get(self._launched) if self._launched is not None else None
        if owner is not None:
            owner.add_image(encode_ms, decode_ms)
            return
        pending = self._orphan_image
        if encode_ms is not None:
            pending[0] = (pending[0] or 0.0) + encode_ms
        if decode_ms is not None:
            pending[1] = (pending[1] or 0.0) + decode_ms


class _Bulk:
    """Runs of (task, its generation request) event pairs whose pairing is certain: the task's
    total line is followed by its request's Gin line with no other Gin line between, and the
    request took at least the task's total time minus LATENCY_SLACK_MS. When the state is clean
    at a run's start (_bulk_ready), ServerLogParser would pair each task with the next request,
    so the run's log_timings rows are made here in bulk."""

    MAX_IMAGES = 8  # a task with more image lines takes the ordered pass

    def __init__(self, events: np.ndarray, ev_kind: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray,
                 gin_before: np.ndarray, pos2: np.ndarray, k2: np.ndarray, b2: np.ndarray, c2: np.ndarray) -> None:  # fmt: skip
        self.events, self.a, self.starts = events, a, starts
        self.pos2, self.k2, self.b2, self.c2 = pos2, k2, b2, c2
        self.taken: list[tuple[int, int]] = []
        self.run_end: dict[int, int] = {}
        n = len(events)
        if n < 2:
            return
        pair = (ev_kind[:-1] == _TASK) & (ev_kind[1:] == _GEN) & ~gin_before[1:]
        pair &= b[events[:-1]] <= b[events[1:]] + LATENCY_SLACK_MS
        first = np.flatnonzero(pair)
        if not len(first):
            return
        # the task list index of each pair's prompt line: images are between launch and prompt
        total2 = np.searchsorted(pos2, events[first])
        images = total2 - 2 - starts[first] - 1
        first = first[images <= self.MAX_IMAGES]
        if not len(first):
            return
        breaks = np.flatnonzero(np.diff(first) != 2)
        run_starts = np.concatenate(([first[0]], first[breaks + 1]))
        run_ends = np.concatenate((first[breaks], [first[-1]])) + 2
        self.run_end = dict(zip(run_starts.tolist(), run_ends.tolist(), strict=True))

    def reuses(self, i: int, end: int, tasks: dict[int, Any]) -> bool:
        ids = self.a[self.events[i:end:2]]
        return bool(np.isin(ids, np.fromiter(tasks.keys(), np.int64, len(tasks))).any())

    def take(self, i: int, end: int) -> None:
        self.taken.append((i, end))

    def table(self, gin_ts: np.ndarray, first_line_no: int) -> dict[str, Any] | None:
        if not self.taken:
            return None
        task_ev = np.concatenate([np.arange(i, end, 2) for i, end in self.taken])
        task_pos, gen_pos = self.events[task_ev], self.events[task_ev + 1]
        launch = self.starts[task_ev]
        prompt = np.searchsorted(self.pos2, task_pos) - 2
        enc = np.full(len(task_ev), np.nan)
        dec = np.full(len(task_ev), np.nan)
        for j in range(1, self.MAX_IMAGES + 1):  # summed in line order, as _Task.add_image does
            at = launch + j
            has = at < prompt
            if not has.any():
                break
            at = np.where(has, at, 0)
            kind, ms = self.k2[at], self.b2[at]
            enc = np.where(has & (kind == _IMG_ENC), np.where(np.isnan(enc), 0.0, enc) + ms, enc)
            dec = np.where(has & (kind == _IMG_DEC), np.where(np.isnan(dec), 0.0, dec) + ms, dec)
        ts = gin_ts[self.a[gen_pos]]
        return {
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "task_id": pa.array(self.a[task_pos], pa.int64()),
            "prompt_eval_ms": pa.array(self.b2[prompt], pa.float64()),
            "prompt_tokens": pa.array(self.c2[prompt], pa.int64()),
            "eval_ms": pa.array(self.b2[prompt + 1], pa.float64()),
            "eval_tokens": pa.array(self.c2[prompt + 1], pa.int64()),
            "total_ms": pa.array(self.b2[prompt + 2], pa.float64()),
            "image_encode_ms": pa.array(enc, pa.float64(), from_pandas=True),
            "image_decode_ms": pa.array(dec, pa.float64(), from_pandas=True),
            "line_no": pa.array(self.pos2[launch] + first_line_no, pa.int64()),
            "request_line_no": pa.array(gen_pos + first_line_no, pa.int64()),
        }


def _merge_tasks(events: np.ndarray, kind: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, Any]:
    """Find each task whose lines come in a row among the ordered events (generation Gin lines
    aside: they touch no task): launch, images, prompt eval, eval, total of one task id.

    Returns, per event, -2 when it is absorbed into a task event, the index of the task's
    launch line in the task list when it is a task's total line, else -1; and a function
    giving the task list (positions, kinds, ms, tokens of the non-Gin events)."""
    ek = kind[events]
    ng = np.flatnonzero(ek != _GEN)  # event indices of the task list
    k2, a2 = ek[ng], a[events[ng]]
    out = np.full(len(events), -1, dtype=np.int64)
    tot = np.flatnonzero(k2 == _T_TOTAL)
    tot = tot[tot >= 3]
    if len(tot):
        tot = tot[(k2[tot - 1] == _T_EVAL) & (k2[tot - 2] == _T_PROMPT) & (a2[tot - 1] == a2[tot]) & (a2[tot - 2] == a2[tot])]
    if len(tot):
        is_image = (k2 == _IMG_ENC) | (k2 == _IMG_DEC)
        before = np.maximum.accumulate(np.where(is_image, -1, np.arange(len(k2))))  # last non-image at or before
        launch = before[tot - 3]
        ok = launch >= 0
        ok[ok] &= (k2[launch[ok]] == _LAUNCHED) & (a2[launch[ok]] == a2[tot[ok]])
        tot, launch = tot[ok], launch[ok]
        span = np.zeros(len(k2) + 1, dtype=np.int64)
        np.add.at(span, launch, 1)
        np.add.at(span, tot, -1)
        absorbed = np.cumsum(span[:-1]) > 0  # launch .. the line before total
        out[ng[absorbed]] = -2
        out[ng[tot]] = launch

    def task_lines(b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
        pos = events[ng]
        return pos, k2, b[pos], c[pos]

    return out, task_lines

