"""Vectorised classification of server.log lines (the first half of oasis_ops.logs.fastpath).

`prepare(data, clock)` splits whole lines in Arrow and, with strict regular expressions run on
all lines at once, extracts the fields of the fixed shapes: Gin access lines (a `GinBlock`:
positions, times, row values), llama-server timing / launch lines and image times. Lines no
strict form took are left to the per-line path, except repeated chatter, classified once per
distinct text. Holds no parser state, so it runs in a worker thread while the parser's
ordered pass (oasis_ops.logs.fastpath) handles the previous part.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oasis_ops.logs.prefixes import GATE
from oasis_ops.logs.rows import CONTROL, MAX_LINE_CHARS, ParseCounts
from oasis_ops.logs.timefmt import LocalClock
from oasis_ops.logs.timings import GEN_PATHS

_GIN = (
    r'^\[GIN\] (?P<stamp>\d{4}/\d\d/\d\d - \d\d):(?P<mm>\d\d):(?P<ss>\d\d) \| +(?P<status>\d{3}) \| +'
    r"(?:(?P<hours>\d{1,6})h)?(?:(?P<minutes>\d{1,6})m)?"  # Go prints 1m0s, 1h2m3.5s: the unit is s then
    r"(?P<whole>\d{1,12})(?:\.(?P<frac>\d{1,9}))?(?P<unit>ns|µs|μs|us|ms|s) \| +(?P<client>[^|\s]+) \| "
    r'(?P<method>[A-Z]+) +"(?P<path>[^"]*)"$'
)
_TIMING = (
    r"^slot print_timing: id +\d+ \| task (?P<task>\d{1,15}) \| +(?P<which>prompt eval|eval|total) time = +"
    r"(?P<ms>\d{1,15}(?:\.\d{1,15})?) ms / +(?P<tokens>\d{1,15}) tokens"
)
_LAUNCH = r"^slot launch_slot_: id +\d+ \| task (?P<task>\d{1,15}) \|"
_IMAGE = (
    r"^image (?:slice encoded in (?P<enc>\d{1,15}(?:\.\d{1,15})?) ms"
    r"|decoded \(batch \d+/\d+\) in (?P<dec>\d{1,15}(?:\.\d{1,15})?) ms)"
)
_UNIT_NS = {"ns": 1, "µs": 1_000, "μs": 1_000, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_EXACT_NS = 1 << 53  # below this a nanosecond count is an exact float64: ns / 1e6 rounds as Python's
_FAST_PREFIXES = ("[GIN] ", "slot ", "time=", "image ")

# event kinds of the ordered Python pass
_P, _T_PROMPT, _T_EVAL, _T_TOTAL, _LAUNCHED, _IMG_ENC, _IMG_DEC, _GEN = range(8)
_BULK = -2  # a Gin line read in bulk, outside the ordered pass

PART_BYTES = 2 << 20  # the unit of the two-thread pipeline


class Chunk:
    """One part, split and classified (no parser state: made in the worker thread)."""

    def __init__(self, lines: pa.Array) -> None:
        n = len(lines)
        self.lines = lines
        self.counts = ParseCounts(lines=n)
        self.kind = np.full(n, -1, dtype=np.int8)  # -1: not taken yet; then chatter or blank
        self.a = np.zeros(n, dtype=np.int64)  # task id; Gin row index
        self.b = np.zeros(n, dtype=np.float64)  # milliseconds
        self.c = np.zeros(n, dtype=np.int64)  # tokens
        self.too_long = _too_long(lines)
        self.gin: GinBlock


def _too_long(lines: pa.Array) -> np.ndarray:
    """Lines over MAX_LINE_CHARS bytes, read from the offsets (no pass over the text). Only a
    route: they go to the per-line path, which counts characters (a line of multi-byte text can
    be over the limit in bytes and not in characters)."""
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return np.diff(offsets) > MAX_LINE_CHARS


def prepare(data: bytes, clock: LocalClock) -> Chunk | None:
    """Split and classify whole lines; None when they are not valid UTF-8."""
    lines = split_lines(data)
    try:
        lines = lines.cast(pa.large_string())  # one UTF-8 check for the whole part
    except pa.ArrowInvalid:
        return None
    if b"\r" in data:
        lines = pc.replace_substring_regex(lines, pattern="\r$", replacement="", max_replacements=1)
    chunk = Chunk(lines)
    chunk.gin = _fast_gin(chunk, clock)
    _fast_runner_lines(chunk)
    _fast_rest(chunk)
    return chunk


def split_lines(data: bytes) -> pa.Array:
    """The lines of `data` (which ends with a newline) as one binary array, without the newlines.

    The offsets come from numpy's newline positions over the bytes with the newlines removed:
    line i starts i newlines earlier there (a quarter of the cost of Arrow's split_pattern)."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    n = len(ends)
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = ends - np.arange(n)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets),
                                            pa.py_buffer(data.replace(b"\n", b""))])  # fmt: skip


def parts(data: bytes, size: int) -> list[bytes]:
    """`data` cut after a newline about every `size` bytes."""
    if len(data) <= size * 3 // 2:
        return [data]
    parts, start = [], 0
    while start < len(data):
        cut = data.find(b"\n", start + size - 1) if start + size < len(data) else -1
        end = len(data) if cut < 0 else cut + 1
        parts.append(data[start:end])
        start = end
    return parts


_POOL: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oasis-log-prepare")
    return _POOL


def _forget_pool() -> None:
    # A forked child has the pool object but not its thread: work sent to it would wait forever.
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_pool)


def _fast_gin(chunk: Chunk, clock: LocalClock) -> GinBlock:
    lines, too_long, kind, a, b = chunk.lines, chunk.too_long, chunk.kind, chunk.a, chunk.b
    cand = np.flatnonzero(_mask(pc.starts_with(lines, "[GIN] ")) & ~too_long)
    block = GinBlock(clock)
    if not len(cand):
        return block
    m = pc.extract_regex(lines.take(pa.array(cand)), _GIN)
    ok = _mask(pc.is_valid(m))
    cand, m = cand[ok], m.filter(pa.array(ok))
    if not len(cand):
        return block
    f = {name: m.field(name) for name in ("stamp", "mm", "ss", "status", "hours", "minutes", "whole", "frac", "unit",
                                          "client", "method", "path")}  # fmt: skip
    whole = _ints(f["whole"])
    frac_text = pc.fill_null(f["frac"], pa.scalar("", pa.large_string()))
    frac_len_array = pc.utf8_length(frac_text)
    frac_len = _ints(frac_len_array)
    frac = _ints(pc.if_else(pc.equal(frac_len_array, 0), pa.scalar("0", pa.large_string()), frac_text))
    units = pc.dictionary_encode(f["unit"])
    scale = np.array([_UNIT_NS[u] for u in units.dictionary.to_pylist()], np.int64)[
        units.indices.to_numpy(zero_copy_only=False)
    ]
    hours, minutes = _ints_or_zero(f["hours"]), _ints_or_zero(f["minutes"])
    compound = (hours > 0) | (minutes > 0) | _mask(pc.greater(pc.utf8_length(f["hours"]), 0)) | _mask(
        pc.greater(pc.utf8_length(f["minutes"]), 0)
    )
    in_range = (whole < _EXACT_NS // scale) & (~compound | (scale == 1_000_000_000))  # before multiplying: no wrap
    whole = np.where(in_range, whole, 0)
    # as Go and go_duration_ms: summed in integer nanoseconds
    ns = hours * 3_600_000_000_000 + minutes * 60_000_000_000 + whole * scale + (frac * scale) // (10**frac_len)
    minute, second = _ints(f["mm"]), _ints(f["ss"])
    ok = in_range & (ns < _EXACT_NS) & (minute <= 59) & (second <= 59)
    base = block.hour_bases(f["stamp"], ok)  # epoch µs of each line's hour; ok cleared where invalid
    keep = np.flatnonzero(ok)
    cand = cand[keep]
    block.positions = cand
    block.naive = (minute * 60 + second)[keep] * 1_000_000
    block.stamp_hours = f["stamp"].take(pa.array(keep))
    block.ts = base[keep] + block.naive
    status = _ints(f["status"])[keep]
    latency_ms = ns[keep] / 1_000_000
    paths = f["path"].take(pa.array(keep))
    block.table = {
        "status": pa.array(status, pa.int64()),
        "latency_ms": pa.array(latency_ms, pa.float64()),
        "client": f["client"].take(pa.array(keep)).cast(pa.string()),
        "method": f["method"].take(pa.array(keep)).cast(pa.string()),
        "path": paths.cast(pa.string()),
    }
    gen = (status == 200) & _mask(pc.is_in(paths, value_set=pa.array(sorted(GEN_PATHS), pa.large_string())))
    kind[cand[gen]] = _GEN
    kind[cand[~gen]] = _BULK
    rows_idx = np.arange(len(cand))
    a[cand] = rows_idx
    b[cand] = latency_ms
    block.skipped = cand[~gen]  # positions of Gin lines outside the ordered pass
    block.skipped_rows = rows_idx[~gen]
    chunk.counts.requests += len(cand)
    return block

def _fast_runner_lines(chunk: Chunk) -> None:
    lines, too_long, kind, a, b, c = chunk.lines, chunk.too_long, chunk.kind, chunk.a, chunk.b, chunk.c
    slot = np.flatnonzero(_mask(pc.starts_with(lines, "slot ")) & ~too_long)
    if len(slot):
        sub = lines.take(pa.array(slot))
        m = pc.extract_regex(sub, _TIMING)
        ok = _mask(pc.is_valid(m))
        if ok.any():
            pos, m = slot[ok], m.filter(pa.array(ok))
            which = m.field("which")
            is_total, is_eval = _mask(pc.equal(which, "total")), _mask(pc.equal(which, "eval"))
            kind[pos] = np.where(is_total, _T_TOTAL, np.where(is_eval, _T_EVAL, _T_PROMPT)).astype(np.int8)
            a[pos] = _ints(m.field("task"))
            b[pos] = _floats(m.field("ms"))
            c[pos] = _ints(m.field("tokens"))
        rest = slot[~ok]
        if len(rest):
            m = pc.extract_regex(lines.take(pa.array(rest)), _LAUNCH)
            ok = _mask(pc.is_valid(m))
            pos = rest[ok]
            kind[pos] = _LAUNCHED
            a[pos] = _ints(m.filter(pa.array(ok)).field("task"))
    image = np.flatnonzero(_mask(pc.starts_with(lines, "image ")) & ~too_long)
    if len(image):
        m = pc.extract_regex(lines.take(pa.array(image)), _IMAGE)
        ok = _mask(pc.is_valid(m))
        pos, m = image[ok], m.filter(pa.array(ok))
        # RE2 gives an alternative that did not take part as "", not null
        enc, dec = m.field("enc"), m.field("dec")
        is_enc = _mask(pc.greater(pc.utf8_length(enc), 0))
        kind[pos] = np.where(is_enc, _IMG_ENC, _IMG_DEC).astype(np.int8)
        zero = pa.scalar("0", pa.large_string())
        b[pos] = np.where(is_enc, _floats(pc.if_else(is_enc, enc, zero)), _floats(pc.if_else(is_enc, zero, dec)))

def _fast_rest(chunk: Chunk) -> None:
    """Lines no strict form took: a known prefix or an over-long line goes to the per-line
    path; the others (mostly repeated chatter) are classified once per distinct text."""
    lines, too_long, kind = chunk.lines, chunk.too_long, chunk.kind
    prefixed = np.zeros(len(lines), dtype=bool)
    for prefix in _FAST_PREFIXES:
        prefixed |= _mask(pc.starts_with(lines, prefix))
    free = kind == -1
    kind[free & (prefixed | too_long)] = _P
    other = np.flatnonzero(free & ~prefixed & ~too_long)
    if not len(other):
        return
    texts = lines.take(pa.array(other))
    encoded = pc.dictionary_encode(texts)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    verdict = np.zeros(len(encoded.dictionary), dtype=np.int8)  # 0 skip, 1 chatter, 2 junk, 3 per-line
    for i, line in enumerate(encoded.dictionary.to_pylist()):
        if not line or line.isspace():
            continue
        if GATE.match(line) is not None:
            verdict[i] = 3
        else:
            verdict[i] = 2 if CONTROL.search(line) else 1
    per_line = verdict[codes]
    chunk.counts.unrecognized += int(np.count_nonzero(per_line == 1))
    chunk.counts.junk += int(np.count_nonzero(per_line == 2))
    kind[other[per_line == 3]] = _P


class GinBlock:
    """The strict Gin lines of one chunk: positions, times (per clock segment) and row values."""

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self.positions = np.zeros(0, np.int64)
        self.naive = np.zeros(0, np.int64)  # minutes and seconds past the hour, µs
        self.stamp_hours: pa.Array = pa.array([], pa.large_string())
        self.ts = np.zeros(0, np.int64)
        self.table: dict[str, pa.Array] = {}
        self.skipped = np.zeros(0, np.int64)
        self.skipped_rows = np.zeros(0, np.int64)

    def hour_bases(self, stamps: pa.Array, ok: np.ndarray, clock: LocalClock | None = None) -> np.ndarray:
        """Epoch µs of each stamp's hour through the clock (once per distinct hour); clears `ok`
        where the clock rejects the date."""
        clock = clock or self.clock
        encoded = pc.dictionary_encode(stamps)
        bases = np.zeros(len(encoded.dictionary), np.int64)
        bad = np.zeros(len(encoded.dictionary), bool)
        for i, hour in enumerate(encoded.dictionary.to_pylist()):
            try:
                bases[i] = clock.gin_epoch_us(hour + ":00:00")
            except (ValueError, OverflowError):
                bad[i] = True
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        ok &= ~bad[codes]
        return bases[codes]

    def reclock(self, clock: LocalClock, after_pos: int) -> None:
        """Convert the Gin lines after `after_pos` with a new clock (a UTC offset learned)."""
        self.clock = clock
        start = int(np.searchsorted(self.positions, after_pos, side="right"))
        if start >= len(self.positions):
            return
        ok = np.ones(len(self.positions) - start, bool)
        base = self.hour_bases(self.stamp_hours.slice(start), ok, clock)
        self.ts = self.ts.copy()
        self.ts[start:] = np.where(ok, base + self.naive[start:], self.ts[start:])


def _mask(array: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ints(array: Any) -> np.ndarray:
    return np.asarray(pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _ints_or_zero(array: Any) -> np.ndarray:
    """An optional group's digits as int64; RE2 gives "" where the group did not take part."""
    return _ints(pc.if_else(pc.equal(array, ""), pa.scalar("0", array.type), array))


def _floats(array: Any) -> np.ndarray:
    return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
