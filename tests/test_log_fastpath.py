"""The vectorised path (oasis_ops.logs.fastpath) reads every log exactly as the per-line path.

Each input is parsed twice: once with every chunk forced through the vectorised path (and cut
into small parts, so the two-thread pipeline runs), once with the vectorised path off. Rows
(all tables, every column) and counts must be identical. Inputs: every server.log fixture
(real shapes from tests/fixtures/real, named in its README) and a generated log with awkward
lines: some read in bulk (compound Go durations such as 1m1.5s and 3h2m1.5s, CRLF ends), some
that must fall back (invalid UTF-8, a leap second, an impossible date, ANSI Gin lines, over-long
lines, junk numbers), an offset change halfway, a task id reused, polls over the pairing window.
"""

from __future__ import annotations

import os
import random
import signal
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from helpers_logs import gin_line, server_log_lines, slog_line, timing_block

import oasis_ops.logs.fastpath as fastpath
from oasis_ops.logs.ingest import FileCursor, read_chunks, take_tables
from oasis_ops.logs.parse import LocalClock, ServerLogParser

FIXTURES = Path(__file__).parent / "fixtures"
SERVER_LOGS = sorted(
    [p for p in (FIXTURES / "real").glob("*.log")]
    + [FIXTURES / "ollama" / "server.log", FIXTURES / "ollama" / "server_llama_server.log"]
)


def _parse(path: Path, *, fast: bool, utc_offset: str | None, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    monkeypatch.setattr(fastpath, "PART_BYTES", 4096)  # many parts: the pipeline's thread runs
    parser = ServerLogParser(LocalClock(utc_offset), fast_min_bytes=1 if fast else 1 << 62)
    cursor = FileCursor(str(path), "server", parser)
    parts: dict[str, list[pa.Table]] = {}
    with open(path, "rb") as handle:
        for _ in read_chunks(cursor, handle, chunk_bytes=16 << 10):
            for table, arrow in take_tables(parser.rows, str(path)).items():
                parts.setdefault(table, []).append(arrow)
    parser.finish()
    for table, arrow in take_tables(parser.rows, str(path)).items():
        parts.setdefault(table, []).append(arrow)
    tables = {t: pa.concat_tables(v).sort_by([("line_no", "ascending"), ("ts", "ascending")]).to_pylist() for t, v in parts.items()}
    return parser.counts.as_dict(), tables


def _same(path: Path, monkeypatch: pytest.MonkeyPatch, utc_offset: str | None = None) -> dict:
    slow_counts, slow = _parse(path, fast=False, utc_offset=utc_offset, monkeypatch=monkeypatch)
    fast_counts, fast = _parse(path, fast=True, utc_offset=utc_offset, monkeypatch=monkeypatch)
    assert fast_counts == slow_counts
    assert set(fast) == set(slow)
    for table in slow:
        assert len(fast[table]) == len(slow[table]), table
        for a, b in zip(fast[table], slow[table], strict=True):
            assert a == b, (table, a, b)
    return slow_counts


@pytest.mark.parametrize("path", SERVER_LOGS, ids=lambda p: p.name)
def test_every_fixture_reads_the_same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _same(path, monkeypatch)
    assert counts["lines"] > 0


def _awkward_log(path: Path) -> None:
    rng = random.Random(3)
    lines = []
    gen = server_log_lines(rng, datetime(2025, 3, 30, 0, 40, 0))  # crosses no DST with +01:00 given
    for i in range(3000):
        lines.append(next(gen))
        if i == 700:
            lines.append(gin_line(datetime(2025, 3, 30, 0, 59, 0), 200, 61_500.25))  # 1m1.50025s
            lines.append("[GIN] 2025/03/30 - 00:59:60 | 200 |    1.000000001s |       127.0.0.1 | POST     \"/api/chat\"")
            lines.append("\x1b[97;42m[GIN] 2025/03/30 - 00:59:59 | 200 |  2.1s |  127.0.0.1 | POST \"/api/chat\"\x1b[0m")
            lines.append("[GIN] 2025/03/30 - 01:00:01 | 200 |    3h2m1.5s |       127.0.0.1 | POST     \"/api/chat\"")
            lines.append("[GIN] 2025/02/30 - 01:00:01 | 200 |    1.5s |       127.0.0.1 | POST     \"/api/chat\"")
        if i == 1200:  # the same task id again while an unfinished one is open
            lines.extend(timing_block(5, 300.0, 100, 2000.0, 50)[:2])
            lines.extend(timing_block(5, 310.0, 110, 2100.0, 60, encode_ms=17.5))
            lines.append(gin_line(datetime(2025, 3, 30, 1, 2, 0), 200, 2500.0))
        if i == 1500:  # the server now states another offset: later Gin lines take it
            lines.append(slog_line(datetime(2025, 3, 30, 3, 0, 0), "server config", offset="+02:00"))
        if i == 2500:  # a block, then polls over more than the pairing window, then a request
            lines.extend(timing_block(900, 300.0, 100, 2000.0, 50))
            for second in (0, 2, 5, 7):
                lines.append(gin_line(datetime(2025, 3, 30, 5, 0, second), 200, 0.4, "/api/ps", "GET"))
            lines.append(gin_line(datetime(2025, 3, 30, 5, 0, 9), 200, 2500.0))
        if i == 2000:
            lines.append("x" * 70_000)
            lines.append("x" * ((1 << 20) + 1))  # over MAX_LINE_CHARS: junk either way
            lines.append("é" * 600_000)  # over MAX_LINE_CHARS in bytes, not in characters: not junk
            lines.append("image slice encoded in 1.2.3 ms")
            lines.append("slot print_timing: id  0 | task 9 |       total time =     12.5 ms /    3 tokens")
    data = "\n".join(lines).encode()
    cut = len(data) // 3
    cut = data.index(b"\n", cut)
    data = data[:cut] + b"\n\xff\xfe broken bytes\n" + data[cut + 1 :]  # one part is not UTF-8
    data = data.replace(b"\n", b"\r\n", 400)  # CRLF at the start
    path.write_bytes(data + b"\n")


@pytest.mark.parametrize("utc_offset", [None, "+01:00"])
def test_awkward_lines_fall_back_and_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, utc_offset: str | None) -> None:
    path = tmp_path / "server.log"
    _awkward_log(path)
    counts = _same(path, monkeypatch, utc_offset)
    assert counts["junk"] >= 2 and counts["timings"] > 100 and counts["requests"] > 500


def test_the_vectorised_path_is_taken(tmp_path: Path) -> None:
    """Not vacuous: a big chunk goes through feed_fast (and fills bulk pieces), a small one not."""
    lines = server_log_lines(random.Random(5), datetime(2025, 11, 20, 9, 0, 0))
    data = ("\n".join(next(lines) for _ in range(20_000)) + "\n").encode()
    parser = ServerLogParser(LocalClock("+01:00"))
    parser.feed_bytes(data, 1)
    assert parser.rows.pieces["log_requests"] and parser.rows.pieces["log_timings"]
    small = ServerLogParser(LocalClock("+01:00"))
    small.feed_bytes(data[: data.index(b"\n", 10_000) + 1], 1)
    assert not small.rows.pieces["log_requests"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_reads_through_the_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that forks after reading a log (mutmut's runner does; so may a harness) must
    not hand the child's parts to the parent's worker thread, which the child does not have:
    that waited forever."""
    monkeypatch.setattr(fastpath, "PART_BYTES", 64 << 10)  # several parts: the worker is used
    lines = server_log_lines(random.Random(7), datetime(2025, 11, 20, 9, 0, 0))
    data = ("\n".join(next(lines) for _ in range(6_000)) + "\n").encode()
    ServerLogParser(LocalClock("+01:00")).feed_bytes(data, 1)  # the parent's worker thread now exists
    pid = os.fork()
    if pid == 0:  # the child: read again, through the pool; die loudly if it hangs
        code = 3
        try:
            signal.alarm(20)
            parser = ServerLogParser(LocalClock("+01:00"))
            parser.feed_bytes(data, 1)
            code = 0 if parser.rows.pieces["log_requests"] else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_progress_bar_draws_throttled_and_clears() -> None:
    import io

    from oasis_ops.commands.progress import ProgressBar

    now = [0.0]
    out = io.StringIO()
    bar = ProgressBar(out, min_bytes=1000, interval=0.1, clock=lambda: now[0])
    bar("small.log", 10, 999)  # under min_bytes: nothing
    assert out.getvalue() == ""
    for step in range(10):
        now[0] = step * 0.05
        bar("/var/log/ollama/server.log", step * 1000, 10_000)
    bar("/var/log/ollama/server.log", 10_000, 10_000)  # the end is always drawn
    assert bar.lines_drawn == 6  # every 0.1 s of 0.45 s, plus the end
    assert "server.log [" in out.getvalue() and "100%" in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_ingest_cli_shows_progress_for_a_big_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers_logs import write_server_log

    from oasis_ops.cli import main

    log = tmp_path / "server.log"
    write_server_log(log, 5 << 20)
    db = tmp_path / "trials.duckdb"
    assert main(["ingest-logs", "--db", str(db), "--server-log", str(log), "--utc-offset", "+01:00", "--progress", "always"]) == 0
    captured = capsys.readouterr()
    assert "server.log [" in captured.err and "100%" in captured.err
    assert "log_requests" in captured.out and "[" not in captured.out.splitlines()[0]
    assert main(["ingest-logs", "--db", str(db), "--server-log", str(log), "--progress", "auto"]) == 0
    assert "server.log [" not in capsys.readouterr().err  # not a terminal: no bar
