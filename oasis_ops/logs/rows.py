"""What every log parser produces and shares: the tables' column lists, the counts of a parse,
and the line-level rules (what is junk, how a chunk of bytes becomes lines).

Columns are kept as plain lists (fast to append to) and become one DataFrame per sidecar table
when taken (oasis_ops.logs.ingest).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_CHARS = 1 << 20  # a longer line is junk (a real one is a few KB at most)

EVENT_KINDS = (
    "server_config",
    "runner_start",
    "runner_discovery",
    "runner_started",
    "runner_gone",
    "signal_killed",
    "oom",
    "load_request",
    "flash_attention",
    "client_abort",
    "other",
)
HARNESS_KINDS = ("ok", "timeout", "error", "evict", "other")

# Column order of each table's rows (source_file is added when the frame is built).
COLUMNS: dict[str, tuple[str, ...]] = {
    "log_requests": ("ts", "status", "latency_ms", "client", "method", "path", "line_no"),
    "log_events": ("ts", "level", "msg", "kind", "detail", "line_no"),
    "log_timings": (
        "ts",
        "task_id",
        "prompt_eval_ms",
        "prompt_tokens",
        "eval_ms",
        "eval_tokens",
        "total_ms",
        "image_encode_ms",
        "image_decode_ms",
        "line_no",
        "request_line_no",
    ),
    "harness_log": ("ts", "trial", "kind", "latency_ms", "detail", "line_no"),
}

# a line holding one of these (outside the shapes we parse) is junk, not chatter
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
to_json = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(..., ensure_ascii=False), built once


def split_chunk(data: bytes) -> list[str | None]:
    """Whole-line bytes -> str lines; None marks a line that is not valid UTF-8."""
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8").split("\n")  # type: ignore[return-value]
    except UnicodeDecodeError:
        out: list[str | None] = []
        for raw in data.split(b"\n"):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out


@dataclass
class ParseCounts:
    """What a parse saw, by table and kind, plus what it skipped."""

    requests: int = 0
    timings: int = 0
    events: dict[str, int] = field(default_factory=dict)
    harness: dict[str, int] = field(default_factory=dict)
    junk: int = 0  # undecodable, binary, over-long or truncated/malformed known shapes
    unrecognized: int = 0  # readable text we do not store (runner chatter, stray text)
    lines: int = 0
    prefixes: dict[str, int] = field(default_factory=dict)  # collector prefixes stripped, by shape

    def add(self, other: ParseCounts) -> None:
        self.requests += other.requests
        self.timings += other.timings
        self.junk += other.junk
        self.unrecognized += other.unrecognized
        self.lines += other.lines
        for mine, theirs in ((self.events, other.events), (self.harness, other.harness), (self.prefixes, other.prefixes)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "requests": self.requests,
            "timings": self.timings,
            "events": dict(sorted(self.events.items())),
            "harness": dict(sorted(self.harness.items())),
            "junk": self.junk,
            "unrecognized": self.unrecognized,
            "prefixes": dict(sorted(self.prefixes.items())),
        }


class Rows:
    """Column lists per table; `take()` hands them over and starts empty ones."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[str, list[Any]]] = {
            table: {c: [] for c in cols} for table, cols in COLUMNS.items()
        }
        # rows made in bulk (oasis_ops.logs.fastpath): column name -> Arrow array, per table
        self.pieces: dict[str, list[dict[str, Any]]] = {table: [] for table in COLUMNS}

    def add_piece(self, table: str, columns: dict[str, Any]) -> None:
        self.pieces[table].append(columns)

    def take_pieces(self) -> dict[str, list[dict[str, Any]]]:
        taken = self.pieces
        self.pieces = {table: [] for table in COLUMNS}
        return taken

    def count(self, table: str) -> int:
        return len(self.columns[table]["line_no"]) + sum(len(p["line_no"]) for p in self.pieces[table])

    def total(self) -> int:
        return sum(self.count(t) for t in self.columns)

    def take(self) -> dict[str, dict[str, list[Any]]]:
        taken = self.columns
        self.columns = {table: {c: [] for c in cols} for table, cols in COLUMNS.items()}
        return taken
