"""Pure parsers for Ollama's server.log and the harness's runner.log: where each part lives.

No I/O in any of them: the parsers take decoded lines (or whole-line byte chunks) and fill
column lists that become one DataFrame per sidecar table. This module re-exports their public
names; the code, and the rules each part follows, are in:
- oasis_ops.logs.server   ServerLogParser: the feeding loop (fast path), Gin / slog /
                          plain-logger lines, events, the UTC offset of naive times;
- oasis_ops.logs.timings  timing blocks assembled per task and paired with their request,
                          image times, raw runner output (llama-server, C++ server, llama.cpp);
- oasis_ops.logs.loads    model loads (load_id, model) and flash-attention statements;
- oasis_ops.logs.prefixes collector prefixes stripped (journald, docker, CRI, k8s, compose,
                          ANSI, JSON lines), the gate for lines outside the fast path;
- oasis_ops.logs.golines  Go's text formats: slog key=value, `%+v` structs, OLLAMA_* flags,
                          runner command lines, event kinds (classify_slog);
- oasis_ops.logs.timefmt  UTC offsets, LocalClock, RFC 3339 / ISO stamps, Go durations;
- oasis_ops.logs.rows     tables and columns, ParseCounts, Rows, junk rules, chunk splitting;
- oasis_ops.logs.flashlog flash_attention_statements();
- oasis_ops.logs.harness  HarnessLogParser (runner.log).
"""

from __future__ import annotations

from oasis_ops.logs.flashlog import flash_attention_statements
from oasis_ops.logs.golines import (
    classify_slog,
    env_flag,
    flash_attention_state,
    parse_go_struct,
    parse_runner_cmd,
    parse_slog_fields,
)
from oasis_ops.logs.harness import HarnessLogParser
from oasis_ops.logs.loads import PRE_LOAD_US
from oasis_ops.logs.rows import (
    COLUMNS,
    EVENT_KINDS,
    HARNESS_KINDS,
    MAX_LINE_CHARS,
    ParseCounts,
    Rows,
)
from oasis_ops.logs.server import (
    MAX_CHATTER,
    OFFSET_FROM_SLOG,
    OFFSET_GIVEN,
    OFFSET_MACHINE,
    ServerLogParser,
)
from oasis_ops.logs.timefmt import (
    LocalClock,
    epoch_us_to_datetime,
    go_duration_ms,
    parse_utc_offset,
)
from oasis_ops.logs.timings import (
    LATENCY_SLACK_MS,
    MAX_REQUESTS,
    MAX_TASKS,
    MAX_WAITING,
    PAIR_WINDOW_US,
)

__all__ = [
    "COLUMNS",
    "EVENT_KINDS",
    "HARNESS_KINDS",
    "LATENCY_SLACK_MS",
    "MAX_CHATTER",
    "MAX_LINE_CHARS",
    "MAX_REQUESTS",
    "MAX_TASKS",
    "MAX_WAITING",
    "OFFSET_FROM_SLOG",
    "OFFSET_GIVEN",
    "OFFSET_MACHINE",
    "PAIR_WINDOW_US",
    "PRE_LOAD_US",
    "HarnessLogParser",
    "LocalClock",
    "ParseCounts",
    "Rows",
    "ServerLogParser",
    "classify_slog",
    "env_flag",
    "epoch_us_to_datetime",
    "flash_attention_state",
    "flash_attention_statements",
    "go_duration_ms",
    "parse_go_struct",
    "parse_runner_cmd",
    "parse_slog_fields",
    "parse_utc_offset",
]
