"""What a log says about flash attention: the statements ServerLogParser collects (the rules
are in oasis_ops.logs.loads), for any iterable of lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from oasis_ops.logs.server import ServerLogParser
from oasis_ops.logs.timefmt import LocalClock


def flash_attention_statements(lines: Iterable[str]) -> list[dict[str, Any]]:
    """What a log says about flash attention, in order: one dict per statement with `line_no`
    (1-based in `lines`), `ts` (epoch µs, or None when the line has no time and none came before
    it), `value` (True/False; None for auto), `source` ("server config" | "load request" |
    "runner cmd" | "llama.cpp context" | "enabling flash attention" | "flash attention not
    supported"), `model` (the weights blob path of the load it belongs to; None for the server
    config or when unknown) and `evidence` (the fragment that says it). Accepts every shape the
    server.log parser does (journald, docker, k8s JSON, ...). Never raises on junk."""
    parser = ServerLogParser(LocalClock(None))
    parser.flash = []
    cleaned: list[str | None] = []
    for line in lines:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                cleaned.append(None)
                continue
        cleaned.append(line.rstrip("\r\n") if isinstance(line, str) else None)
    parser.feed_lines(cleaned, 1)
    parser.finish()
    return sorted(parser.flash, key=lambda s: s["line_no"])
