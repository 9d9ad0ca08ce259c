"""The parser of Ollama's server.log: `ServerLogParser`.

No I/O: it takes decoded lines (or whole-line byte chunks) and fills column lists (see
oasis_ops.logs.rows). Built for speed on 100 MB logs: dispatch on a cheap prefix test,
precompiled regexes, a cache for Gin's whole-second timestamps, columns kept as plain lists.
Lines in the plain server.log shapes (Gin, slog, raw llama-server output) take the fast path;
every other shape goes through `_other`, which strips a collector's prefix and dispatches the
rest again (oasis_ops.logs.prefixes).

Shapes of the server.log itself (tests/fixtures/real/README.md names a public source for each):
Gin access lines (plain or ANSI-coloured), slog `time=... level=...` lines and Go's
plain-logger lines of versions before mid-2025 (oasis_ops.logs.golines), raw runner output
(llama-server, the 2024 C++ server's text and JSON logs, llama.cpp's `llama_print_timings:`
lines, the MLX runner's slog lines; oasis_ops.logs.timings).

The parser is assembled from one mixin per concern, sharing its state: timing blocks paired
with their requests (TimingsMixin, oasis_ops.logs.timings), model loads and flash-attention
statements (LoadsMixin, oasis_ops.logs.loads), collector prefixes (PrefixesMixin,
oasis_ops.logs.prefixes). This module holds the feeding loop, the server's own line shapes
(Gin, slog, plain logger), events, and the UTC offset.

Times. slog lines carry an RFC 3339 offset. Gin access lines and Go plain-logger lines are
naive local time: unless an offset is given (`--utc-offset` / setting `log_utc_offset`, which
always wins), they take the offset that the same file's slog lines state: the first slog line
of the file (`prime_offset`, read from the file's head before parsing) and from then on the
latest slog line seen (so a DST change follows the log); a file without any slog offset falls
back to this machine's zone rules. `offset_text` / `offset_source` say what was used. Lines
without a time of their own take a collector prefix's absolute time (see
oasis_ops.logs.prefixes). Timestamps are stored as epoch microseconds (UTC).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from oasis_ops.errors import ConfigError
from oasis_ops.logs.fastpath import FAST_MIN_BYTES, FastPathMixin
from oasis_ops.logs.golines import (
    PLAIN_ATTR,
    PLAIN_LEVEL,
    SLOG_TIME_OFFSET,
    classify_slog,
    parse_slog_fields,
)
from oasis_ops.logs.loads import LoadsMixin
from oasis_ops.logs.prefixes import ANSI, GATE, PrefixesMixin
from oasis_ops.logs.rows import (
    COLUMNS,
    CONTROL,
    MAX_LINE_CHARS,
    ParseCounts,
    Rows,
    split_chunk,
    to_json,
)
from oasis_ops.logs.timefmt import (
    LocalClock,
    go_duration_ms,
    offset_of,
    rfc3339_us,
    single_unit_ns,
    tz_text,
)
from oasis_ops.logs.timings import GEN_PATHS, TimingsMixin

MAX_CHATTER = 4096  # distinct chatter lines remembered (a cache: cleared when full)
MAX_SLOG_CACHE = 4096  # parsed slog lines remembered by their text after the time (cleared when full)
SLOG_CACHE_KEY_CHARS = 2048  # longer slog lines are parsed every time
# kinds LoadsMixin._attribute adds to (load_id, model, repeat): their detail is made per line
_LOAD_KINDS = frozenset({"runner_start", "runner_started", "load_request", "flash_attention", "runner_discovery"})

OFFSET_GIVEN = "given (--utc-offset / setting log_utc_offset)"
OFFSET_FROM_SLOG = "stated by this file's slog lines"
OFFSET_MACHINE = "this machine's zone (the file states no slog offset)"


class ServerLogParser(FastPathMixin, PrefixesMixin, TimingsMixin, LoadsMixin):
    """Stateful parser of one server.log stream (state: timing blocks and requests waiting for
    each other, the current model load, the learned UTC offset).

    Feed lines in order with their 1-based line numbers; rows accumulate in `rows` until
    taken. Call `finish()` at the end of the input to emit rows still waiting.
    """

    def __init__(self, clock: LocalClock, *, auto_offset: bool | None = None, fast_min_bytes: int = FAST_MIN_BYTES) -> None:
        self.clock = clock
        self.fast_min_bytes = fast_min_bytes  # chunks at least this big take the vectorised path
        # No offset given: learn it from the slog lines (LocalClock(None) is "not given").
        self.auto_offset = clock.tz is None if auto_offset is None else auto_offset
        self._gin_clock = clock
        self._clocks: dict[str, LocalClock] = {}
        self.offset_text: str | None = tz_text(clock.tz) if clock.tz is not None else None
        self.offset_source = OFFSET_MACHINE if self.auto_offset else OFFSET_GIVEN
        self.offsets_seen: list[tuple[str, int | None]] = []  # (offset, line) as learned, in order
        self.rows = Rows()
        self.counts = ParseCounts()
        self.last_ts: int | None = None  # epoch µs of the last timed line
        self._last_gin_ts: int | None = None
        self._init_timings()
        self._init_prefixes()
        self._untimed: list[tuple[str | None, str, str, dict[str, Any], int]] = []  # events waiting for a time
        self._init_loads()
        self._chatter: set[str] = set()  # lines known to be unrecognised chatter
        self._slog_cache: dict[str, tuple[str | None, str | None, str, dict[str, Any], str | None]] = {}
        self._req_cols: dict[str, list[Any]] | None = None  # the lists `_req_add` appends to
        self._req_add: tuple[Any, ...] = ()

    # -- offsets
    def prime_offset(self, head: str | bytes) -> None:
        """Learn the offset of the file's first slog line from its head (before parsing), so
        Gin and plain-logger lines before that line use it too. No-op when an offset is given."""
        if not self.auto_offset or self.offsets_seen:
            return
        text = head.decode("utf-8", errors="replace") if isinstance(head, bytes) else head
        m = SLOG_TIME_OFFSET.search(text)
        if m:
            self._learn(m.group(1), None)

    def _learn(self, offset: str, line_no: int | None) -> None:
        clock = self._clocks.get(offset)
        if clock is None:
            try:
                clock = self._clocks[offset] = LocalClock(offset)
            except ConfigError:
                return
        self._gin_clock = clock
        self.offset_text = offset
        self.offset_source = OFFSET_FROM_SLOG
        if not self.offsets_seen or self.offsets_seen[-1][0] != offset:
            self.offsets_seen.append((offset, line_no))

    def offset_note(self) -> str:
        """Which offset converted the naive (Gin, plain-logger) times, and why."""
        if not self.auto_offset:
            return f"{self.offset_text}: {OFFSET_GIVEN}"
        if not self.offsets_seen:
            return OFFSET_MACHINE
        first = self.offsets_seen[0][0]
        changes = [f"{off} from line {line}" for off, line in self.offsets_seen[1:]]
        more = f"; then {', '.join(changes)}" if changes else ""
        return f"{first}: {OFFSET_FROM_SLOG}{more}"

    # -- feeding
    def feed_bytes(self, data: bytes, first_line_no: int) -> None:
        """`data` holds whole lines (ending with a newline)."""
        if len(data) >= self.fast_min_bytes and self.feed_fast(data, first_line_no):
            return
        self.feed_lines(split_chunk(data), first_line_no, cr=b"\r" in data)

    def feed_lines(self, lines: Iterable[str | None], first_line_no: int, *, cr: bool = True) -> None:
        """`cr=False` promises that no line holds a carriage return (feed_bytes checks)."""
        gin = self._gin
        slog = self._slog
        raw = self._raw
        image = self._image
        other = self._other
        gate = GATE.match
        control = CONTROL.search
        chatter = self._chatter
        counts = self.counts
        line_no = first_line_no - 1
        for line in lines:
            line_no += 1
            if line is None or len(line) > MAX_LINE_CHARS:
                counts.junk += 1
                continue
            if cr and line.endswith("\r"):
                line = line[:-1]
            first = line[:1]  # dispatch on the first character, then confirm the prefix
            if first == "s" and line.startswith("slot "):
                raw(line, line_no)
            elif first == "[" and line.startswith("[GIN] "):
                gin(line, line_no)
            elif first == "t" and line.startswith("time="):
                slog(line, line_no)
            elif first == "i" and line.startswith("image "):
                image(line, line_no)
            elif not first or line.isspace():
                continue
            else:
                if line in chatter:  # runner chatter repeats verbatim ("encoding image slice...")
                    counts.unrecognized += 1
                    continue
                m = gate(line)
                if m is not None:
                    other(line, line_no, m)
                elif control(line):
                    counts.junk += 1
                else:
                    counts.unrecognized += 1  # runner chatter, stray text
                    if len(line) < 200:
                        if len(chatter) >= MAX_CHATTER:
                            chatter.clear()
                        chatter.add(line)
        counts.lines += line_no - first_line_no + 1

    # -- timed lines
    def _timed(self, ts: int) -> None:
        self.last_ts = ts
        if self._untimed:
            pending, self._untimed = self._untimed, []
            for level, msg, kind, detail, line_no in pending:
                self._event(ts, level, msg, kind, detail, line_no, noted=True)

    def _gin(self, line: str, line_no: int) -> None:
        parts = line.split("|", 4)
        try:
            if len(parts) != 5:
                raise ValueError(line)
            ts = self._gin_clock.gin_epoch_us(parts[0][6:].rstrip())
            status = int(parts[1])
            text = parts[2].strip()
            ns = single_unit_ns(text)
            latency_ms = ns / 1_000_000 if ns is not None else go_duration_ms(text)
            method, _, path = parts[4].strip().partition(" ")
            path = path.strip()
            if latency_ms is None or not method or len(path) < 2 or path[0] != '"' or path[-1] != '"':
                raise ValueError(line)
        except (ValueError, IndexError):
            if "\x1b" in line:  # Gin colours status and method on a terminal
                plain = ANSI.sub("", line)
                if plain != line and "\x1b" not in plain:
                    self._bump_prefix("ansi")
                    self._gin(plain, line_no)
                    return
            self.counts.junk += 1
            return
        self.last_ts = self._last_gin_ts = ts
        if self._untimed:
            self._timed(ts)
        waiting = self._waiting
        if waiting and waiting[-1].after_gin_ts is None:  # blocks completed since the last Gin line
            for task in reversed(waiting):
                if task.after_gin_ts is not None:
                    break
                task.after_gin_ts = ts
        cols = self.rows.columns["log_requests"]
        if cols is not self._req_cols:  # rows were taken: bind the new lists' appends
            self._req_cols = cols
            self._req_add = tuple(cols[c].append for c in COLUMNS["log_requests"])
        add = self._req_add
        path = path[1:-1]
        add[0](ts)
        add[1](status)
        add[2](latency_ms)
        add[3](parts[3].strip())
        add[4](method)
        add[5](path)
        add[6](line_no)
        self.counts.requests += 1
        if status == 200 and path in GEN_PATHS:
            self._request(line_no, ts, latency_ms)

    def _slog(self, line: str, line_no: int) -> None:
        # slog lines repeat but for their time ("aborting completion request...", "load
        # request"): what the rest of the line parses to is cached by its text
        cut = line.find(" ", 5)
        key = line[cut + 1 :] if 5 < cut and line[5] != '"' and len(line) - cut < SLOG_CACHE_KEY_CHARS else None
        cached = self._slog_cache.get(key) if key is not None else None
        if cached is not None:
            stamp = line[5:cut]
            level, msg, kind, detail, encoded = cached
            detail = dict(detail)  # _event adds keys to it (load_id, repeat)
        else:
            fields = parse_slog_fields(line)
            if fields is None or "time" not in fields:
                self.counts.junk += 1
                return
            stamp = fields["time"]
            kind, detail = classify_slog(fields)
            level, msg = fields.get("level"), fields.get("msg")
            encoded = None
            if key is not None and stamp == line[5:cut]:
                if len(self._slog_cache) >= MAX_SLOG_CACHE:
                    self._slog_cache.clear()
                plain = kind not in _LOAD_KINDS and "flash_evidence" not in detail
                self._slog_cache[key] = (level, msg, kind, dict(detail), to_json(detail) if plain else None)
        try:
            ts = rfc3339_us(stamp, self._gin_clock)
        except (ValueError, OverflowError, IndexError):
            self.counts.junk += 1
            return
        if self.auto_offset:
            offset = offset_of(stamp)
            if offset is not None and offset != self.offset_text:
                self._learn(offset, line_no)
        self._timed(ts)
        if encoded is None:
            self._event(ts, level, msg, kind, detail, line_no)
            return
        # a kind no load owns and no flash statement: _event would add nothing; the row as cached
        cols = self.rows.columns["log_events"]
        for column, value in (("ts", ts), ("level", level), ("msg", msg), ("kind", kind), ("detail", encoded), ("line_no", line_no)):
            cols[column].append(value)
        events = self.counts.events
        events[kind] = events.get(kind, 0) + 1

    def _plain(self, m: re.Match[str], line_no: int) -> None:
        """Go's standard logger: `2025/02/16 20:51:57 routes.go:1186: INFO server config env=...`."""
        g = m.groups()
        try:
            ts = self._gin_clock.epoch_us(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]))
        except (ValueError, OverflowError):
            self.counts.junk += 1
            return
        if g[6]:
            ts += int(g[6].ljust(6, "0"))
        text = g[8]
        level = "INFO"
        lm = PLAIN_LEVEL.match(text)
        if lm:
            level, text = lm.group(1), lm.group(2)
        fields: dict[str, str] = {}
        msg = text
        for attempt, am in enumerate(PLAIN_ATTR.finditer(text)):
            if attempt >= 8:  # bounded: a long line full of '=' must stay linear
                break
            attrs = parse_slog_fields(text[am.end() :])
            if attrs is not None:
                msg, fields = text[: am.start()], attrs
                break
        fields = {"level": level, "msg": msg, **({"source": g[7]} if g[7] else {}), **fields}
        self._timed(ts)
        kind, detail = classify_slog(fields)
        self._event(ts, level, msg, kind, detail, line_no)

    def _event(self, ts: int | None, level: str | None, msg: str | None, kind: str, detail: dict[str, Any], line_no: int,
               noted: bool = False) -> None:  # fmt: skip
        """Append one log_events row (after load attribution); an untimed one waits for a time
        (its flash statement, if any, is noted at once, without a time: `noted`)."""
        if ts is None:
            if "flash_evidence" in detail:
                self._flash_statement(detail, None, line_no)
            self._untimed.append((level, msg or "", kind, detail, line_no))
            return
        if kind != "other":
            self._attribute(kind, detail, ts, line_no)
        cols = self.rows.columns["log_events"]
        cols["ts"].append(ts)
        cols["level"].append(level)
        cols["msg"].append(msg)
        cols["kind"].append(kind)
        cols["detail"].append(to_json(detail))
        cols["line_no"].append(line_no)
        events = self.counts.events
        events[kind] = events.get(kind, 0) + 1
        if "flash_evidence" in detail:
            statement = None if noted else self._flash_statement(detail, ts, line_no)
            if detail.get("flash_source") in ("enabling flash attention", "flash attention not supported") and "load_id" not in detail:
                # Ollama says this BEFORE it spawns the runner: it belongs to the next load.
                self._pre_load.append((cols["detail"], len(cols["detail"]) - 1, detail, statement, ts))

    # -- the end
    def finish(self) -> None:
        """End of input: emit blocks still waiting for a request with their fallback time (their
        own absolute time, else the first timed line after them, else the last before them),
        and unfinished tasks (no `total time` line yet) as partial rows, in line order."""
        waiting = {id(t) for t in self._waiting}
        unfinished = [t for t in self._tasks.values() if t.has_values()]
        if self._legacy is not None and self._legacy.has_values():
            unfinished.append(self._legacy)
        leftovers = sorted([*self._waiting, *unfinished], key=lambda t: t.line_no)
        for task in leftovers:
            ts = task.fallback_ts() if id(task) in waiting else (task.own_ts or self.last_ts)
            self._emit_timing(task, ts if ts is not None else self.last_ts)
        if self._untimed and self.last_ts is not None:
            pending, self._untimed = self._untimed, []
            for level, msg, kind, detail, line_no in pending:
                self._event(self.last_ts, level, msg, kind, detail, line_no, noted=True)
        self._waiting.clear()
        self._tasks.clear()
        self._requests.clear()
        self._launched = None
        self._header = None
        self._legacy = None
