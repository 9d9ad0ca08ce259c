"""Parser of the harness's runner.log (`YYYY-MM-DD HH:MM:SS message`, naive local time): one
harness_log row per line, its kind one of HARNESS_KINDS (oasis_ops.logs.rows)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from oasis_ops.logs.rows import CONTROL, MAX_LINE_CHARS, ParseCounts, Rows, split_chunk
from oasis_ops.logs.timefmt import LocalClock, go_duration_ms

_HARNESS_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,6}))? (.+)")
_H_OK = re.compile(r"trial (\S+) ok in (\S+)")
_H_TIMEOUT = re.compile(r"trial (\S+) timed out after (\S+)(?: \((.*)\))?")
_H_ERROR = re.compile(r"trial (\S+) (?:failed|error(?:ed)?)\b:?\s*(.*)")
_H_EVICT = re.compile(r"evicting (\S+) after (\d+) consecutive stalls?")


def _duration_or_seconds_ms(text: str) -> float | None:
    """'6.09s', '1m0s', '248.24' (seconds) -> ms."""
    ms = go_duration_ms(text)
    if ms is not None:
        return ms
    try:
        value = float(text)
    except ValueError:
        return None
    return value * 1000.0 if value == value and abs(value) != float("inf") else None


class HarnessLogParser:
    """Parser of the harness's runner.log (`YYYY-MM-DD HH:MM:SS message`, naive local time)."""

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self.rows = Rows()
        self.counts = ParseCounts()

    def feed_bytes(self, data: bytes, first_line_no: int) -> None:
        self.feed_lines(split_chunk(data), first_line_no)

    def feed_lines(self, lines: Iterable[str | None], first_line_no: int) -> None:
        counts = self.counts
        cols = self.rows.columns["harness_log"]
        line_no = first_line_no - 1
        for line in lines:
            line_no += 1
            if line is None or len(line) > MAX_LINE_CHARS:
                counts.junk += 1
                continue
            line = line.rstrip("\r")
            m = _HARNESS_RE.match(line)
            if m is None:
                if line and not line.isspace():
                    if CONTROL.search(line):
                        counts.junk += 1
                    else:
                        counts.unrecognized += 1
                continue
            try:
                g = m.groups()
                ts = self.clock.epoch_us(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]))
            except (ValueError, OverflowError):
                counts.junk += 1
                continue
            if g[6]:
                ts += int(g[6].ljust(6, "0"))
            trial, kind, latency, detail = self._classify(g[7])
            cols["ts"].append(ts)
            cols["trial"].append(trial)
            cols["kind"].append(kind)
            cols["latency_ms"].append(latency)
            cols["detail"].append(detail)
            cols["line_no"].append(line_no)
            counts.harness[kind] = counts.harness.get(kind, 0) + 1
        counts.lines += line_no - first_line_no + 1

    @staticmethod
    def _classify(message: str) -> tuple[str | None, str, float | None, str]:
        m = _H_OK.match(message)
        if m:
            return m.group(1), "ok", _duration_or_seconds_ms(m.group(2)), message
        m = _H_TIMEOUT.match(message)
        if m:
            return m.group(1), "timeout", _duration_or_seconds_ms(m.group(2)), message
        m = _H_ERROR.match(message)
        if m:
            return m.group(1), "error", None, message
        if _H_EVICT.match(message):
            return None, "evict", None, message
        return None, "other", None, message

    def finish(self) -> None:
        """Nothing waits in a harness log."""
