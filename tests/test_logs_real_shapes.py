"""Line shapes beyond the fixture files (prefix variants, pairing edge cases), the ingest
result's offset note, and the cold-start check counting only the window's model's loads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers_logs import gin_line, timing_block

from oasis_ops.diagnosis.findings import (
    Telemetry,
    WindowContext,
    _cold_start_loads,
    check_cold_start,
)
from oasis_ops.diagnosis.windows import IncidentWindow
from oasis_ops.logs.ingest import ingest_logs
from oasis_ops.logs.parse import LocalClock, ServerLogParser, epoch_us_to_datetime, parse_runner_cmd
from oasis_ops.settings import load_settings

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
GIN = '[GIN] 2025/06/05 - 12:36:11 | 200 |  7.102s |       127.0.0.1 | POST     "/api/chat"'
SLOG = 'time=2025-06-05T12:36:11.123-06:00 level=INFO source=server.go:1301 msg="llama runner started in 3.71 seconds"'


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def run(lines: list[str], offset: str = "") -> ServerLogParser:
    parser = ServerLogParser(LocalClock(offset or None))
    text = "\n".join(lines) + "\n"
    parser.prime_offset(text)
    parser.feed_bytes(text.encode(), 1)
    parser.finish()
    return parser


def col(parser: ServerLogParser, table: str, name: str) -> list[Any]:
    values = parser.rows.columns[table][name]
    return [epoch_us_to_datetime(v) if name == "ts" and v is not None else v for v in values]


@pytest.mark.parametrize(
    "prefix",
    [
        "Jun 05 12:36:11 myhost ollama[1234]: ",  # journalctl -u ollama
        "Dez 05 12:36:11 myhost ollama[1234]: ",  # de_DE
        "déc. 05 12:36:11 myhost ollama[1234]: ",  # fr_FR
        "mars 05 12:36:11 myhost ollama[1234]: ",
        "дек 05 12:36:11 myhost ollama[1234]: ",  # ru_RU
        "Jun  5 12:36:11 myhost ollama[1234]: ",  # syslog's space-padded day
        "Jun 05 12:36:11.123456 myhost ollama[1234]: ",  # -o short-precise
        "Thu 2025-06-05 12:36:11 CST myhost ollama[1234]: ",  # -o short-full
        "2025-06-05T12:36:11-0600 myhost ollama[1234]: ",  # -o short-iso
        "2025-06-05T18:36:11.123456789Z ",  # docker logs -t
        "2025-06-05T18:36:11.123456789Z stderr F ",  # CRI file
        "2025-06-05 19:36:11 ",  # Docker Desktop's export (naive, ignored)
        "ollama-1  | ",  # docker compose
        "ollama-1  | 2025-06-05T18:36:11.123456789Z ",  # compose --timestamps: nested
        "[pod/ollama-0/ollama] ",  # kubectl logs --prefix
    ],
)
def test_every_prefix_is_stripped_and_the_lines_own_time_wins(prefix: str) -> None:
    p = run([prefix + SLOG, prefix + GIN])
    assert col(p, "log_events", "ts") == [utc(2025, 6, 5, 18, 36, 11, 123000)]
    assert col(p, "log_requests", "ts") == [utc(2025, 6, 5, 18, 36, 11)]  # Gin at the file's -06:00
    assert p.counts.junk == 0 and p.counts.unrecognized == 0


def test_absolute_prefix_times_reach_untimed_lines_and_naive_ones_do_not() -> None:
    block = ["slot launch_slot_: id  0 | task 5 | processing task", *timing_block(5, 400, 300, 3000, 100)[1:]]
    docker = run([f"2025-06-05T18:36:{10 + i:02d}.5Z {line}" for i, line in enumerate(block)])
    assert col(docker, "log_timings", "ts") == [utc(2025, 6, 5, 18, 36, 13, 500000)]  # its total line's prefix
    journal = run([SLOG] + [f"Jun 05 12:36:{20 + i} h ollama[1]: {line}" for i, line in enumerate(block)])
    assert col(journal, "log_timings", "ts") == [utc(2025, 6, 5, 18, 36, 11, 123000)]  # naive: the last timed line


def test_crlf_and_ansi_in_every_position() -> None:
    coloured = '[GIN] 2025/06/05 - 12:36:11 |\x1b[97;42m 200 \x1b[0m|  7.102s |  127.0.0.1 |\x1b[97;46m POST    \x1b[0m "/api/chat"'
    p = run([SLOG + "\r", coloured + "\r", "Jun 05 12:36:12 h ollama[1]: " + coloured + "\r", "\x1b[2m" + SLOG + "\x1b[0m"])
    assert col(p, "log_requests", "status") == [200, 200] and col(p, "log_requests", "method") == ["POST", "POST"]
    assert len(col(p, "log_events", "ts")) == 2 and p.counts.junk == 0


def test_runner_cmd_variants() -> None:
    win = parse_runner_cmd(r"C:\Program Files\Ollama\ollama.exe runner --ollama-engine --model D:\m\blobs\sha256-ab --port 5")
    assert win["runner"] == "ollama runner" and win["model"] == r"D:\m\blobs\sha256-ab" and win["port"] == 5
    old = parse_runner_cmd("/usr/local/lib/ollama/runners/cuda_v12_avx/ollama_llama_server runner --model /b/sha256-cd --port 9")
    assert old["runner"] == "ollama_llama_server" and old["model"] == "/b/sha256-cd"
    discovery = parse_runner_cmd("/usr/bin/ollama runner --ollama-engine --port 36221")
    assert "model" not in discovery and discovery["runner"] == "ollama runner"
    server = parse_runner_cmd("/usr/lib/ollama/llama-server --model /b/sha256-ef --embedding --flash-attn off")
    assert server["embedding"] is True and server["flash_attention"] is False and server["flash_evidence"] == "--flash-attn off"


def test_a_stale_request_without_a_block_does_not_shift_the_pairing() -> None:
    t0 = datetime(2025, 6, 5, 12, 0, 0)
    lines = [
        gin_line(t0, 200, 8000.0),  # a chat served by the Go engine: no block ever
        gin_line(t0 + timedelta(seconds=1), 200, 0.1, "/api/generate"),  # an unload call
    ]
    t = t0 + timedelta(seconds=30)
    for task in range(3):  # then llama-server, each Gin line BEFORE its block
        lines += [f"slot launch_slot_: id  0 | task {task} | processing task",
                  gin_line(t + timedelta(seconds=10 * task), 200, 4000.0 + task),
                  *timing_block(task, 300, 200, 3000, 90)[1:]]  # fmt: skip
    p = run(lines, "Z")
    assert col(p, "log_timings", "request_line_no") == [4, 9, 14]
    assert col(p, "log_timings", "ts") == [utc(2025, 6, 5, 12, 0, 30 + 10 * k) for k in range(3)]


def test_requests_and_blocks_far_apart_are_not_paired() -> None:
    t0 = datetime(2025, 6, 5, 12, 0, 0)
    lines = [
        gin_line(t0, 200, 1.0, "/api/ps", "GET"),
        *timing_block(1, 300, 200, 3000, 90),
        gin_line(t0 + timedelta(seconds=1), 200, 1.0, "/api/ps", "GET"),  # the block was done by 12:00:01
        gin_line(t0 + timedelta(seconds=40), 200, 5000.0),  # started 12:00:35: not its request
    ]
    p = run(lines, "Z")
    assert col(p, "log_timings", "request_line_no") == [None]
    assert col(p, "log_timings", "ts") == [utc(2025, 6, 5, 12, 0, 1)]  # fallback: the first Gin line after it


def test_ingest_result_says_which_offset_and_why(tmp_path: Path) -> None:
    sidecar = tmp_path / "s.ops.duckdb"
    report = ingest_logs(sidecar, server_logs=[REAL / "go_plain_logger_0.5.log", REAL / "journald_0.1.x_linux.log"])
    first, second = report.as_dict()["files"]
    assert first["utc_offset"] == "-06:00" and first["utc_offset_source"] == "-06:00: stated by this file's slog lines"
    assert second["utc_offset"] is None and second["utc_offset_source"].startswith("this machine's zone")
    given = ingest_logs(tmp_path / "t.ops.duckdb", server_logs=[REAL / "go_plain_logger_0.5.log"], utc_offset="+01:00")
    assert given.files[0].utc_offset == "+01:00" and "given" in given.files[0].utc_offset_source
    import duckdb

    con = duckdb.connect(str(sidecar), read_only=True)
    try:
        (ts,) = con.execute("SELECT ts FROM log_events WHERE kind = 'server_config'").fetchone()  # type: ignore[misc]
        rows = con.execute("SELECT task_id, request_line_no FROM log_timings ORDER BY line_no").fetchall()
    finally:
        con.close()
    assert ts == utc(2025, 2, 17, 2, 51, 57)
    assert rows == [(None, 18), (None, 25)]


# --- cold start: only the window's model's distinct loads -----------------------------------------
START = utc(2026, 1, 9, 14, 15, 30)


def context(log: str, model: str | None, models_dir: Path, *, start: datetime = START, minutes: int = 2,
            gone_at: datetime | None = None) -> WindowContext:  # fmt: skip
    parser = ServerLogParser(LocalClock(None))
    data = (REAL / log).read_bytes()
    parser.prime_offset(data)
    parser.feed_bytes(data, 1)
    parser.finish()
    ev = parser.rows.columns["log_events"]
    rq = parser.rows.columns["log_requests"]
    requests = pd.DataFrame({"ts": pd.to_datetime(rq["ts"], unit="us", utc=True), "status": rq["status"],
                             "latency_ms": rq["latency_ms"], "method": rq["method"], "path": rq["path"]})  # fmt: skip
    log_events = pd.DataFrame({"ts": pd.to_datetime(ev["ts"], unit="us", utc=True), "level": ev["level"],
                               "msg": ev["msg"], "kind": ev["kind"], "detail": ev["detail"]})  # fmt: skip
    empty = pd.DataFrame()
    events = empty
    if gone_at is not None:  # the sampler saw the model leave /api/ps
        events = pd.DataFrame({"ts": [pd.Timestamp(gone_at)], "kind": ["gone"], "model": [model], "detail": ["{}"]})
    telemetry = Telemetry(host=empty, models=empty, events=events, actions=empty, requests=requests, timings=empty,
                          log_events=log_events, harness=empty, config=empty)  # fmt: skip
    end = start + timedelta(minutes=minutes)
    window = IncidentWindow(start=start, end=end, trials=10, failures=3, timeouts=3, failure_rate=0.3, p50_ms_during=None,
                            p95_ms_during=None, max_ms_during=None, before_start=start - timedelta(hours=1), trials_before=50,
                            failure_rate_before=0.0, p50_ms_before=None, p95_ms_before=None, departing_minutes=1)  # fmt: skip
    settings = load_settings(env={}, flags={"ollama_models": str(models_dir)})
    return WindowContext(window=window, telemetry=telemetry, settings=settings, model=model)


def manifest(models_dir: Path, name: str, tag: str, digest: str) -> None:
    path = models_dir / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True)
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + digest, "size": 1}]
    path.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))


GEMMA_DIGEST = "2396aa560c4f42dfd9ff14be9862f7a6146a40f6062ab1738b8d915dac68bcdf"


def test_cold_start_counts_one_load_of_the_chat_model_not_six_lines(tmp_path: Path) -> None:
    # window 14:15:30-14:17:30 UTC: the chat model's load (spawn, 3 load requests, started twice)
    # and, 20 s later, the embedding model's load; the discovery runner came before
    for with_manifest in (False, True):
        if with_manifest:
            manifest(tmp_path, "gemma4", "e4b", GEMMA_DIGEST)
        ctx = context("macos_app_0.20.log", "gemma4:e4b", tmp_path)
        loads, info = _cold_start_loads(ctx, START - timedelta(minutes=2), START + timedelta(minutes=2))
        assert [x["model"][-12:] for x in loads] == ["915dac68bcdf"]
        assert loads[0]["seconds"] == 3.41  # the repeated "started in" line is not a second load
        assert info == {"load_lines": 6, "other_model_loads": 1,
                        "attribution": "manifest" if with_manifest else "most frequent blob"}  # fmt: skip


def test_cold_start_finding_names_the_loads_of_the_model(tmp_path: Path) -> None:
    manifest(tmp_path, "gemma4", "e4b", GEMMA_DIGEST)
    finding = check_cold_start(context("macos_app_0.20.log", "gemma4:e4b", tmp_path, gone_at=START + timedelta(seconds=5)))
    assert finding is not None and finding.status == "confirmed"
    assert finding.values["loads"] == 1 and finding.values["other_model_loads"] == 1 and finding.values["load_lines"] == 6
    assert "server.log: 1 load(s) of gemma4:e4b in the window (6 load lines); load took up to 3.4 s; " \
           "1 load(s) of other models ignored" in finding.evidence  # fmt: skip
    # the embedding model's window: only its own load counts
    nomic = check_cold_start(context("macos_app_0.20.log", "nomic-embed-text", tmp_path, gone_at=START + timedelta(seconds=5)))
    assert nomic is not None and nomic.values["loads"] == 1 and nomic.values["other_model_loads"] == 1
    loads, _ = _cold_start_loads(context("macos_app_0.20.log", "nomic-embed-text", tmp_path), START, START + timedelta(minutes=2))
    assert [x["model"][-12:] for x in loads] == ["ea87e7e7aabd"]  # its first request afterwards was /api/embed


def test_cold_start_ignores_an_embedding_runner_without_a_manifest(tmp_path: Path) -> None:
    start = utc(2026, 8, 18, 8, 3, 0)  # llama_server fixture: chat load 08:03:40, embedding load 08:07:30
    ctx = context("llama_server_0.32.log", "gemma4:e4b", tmp_path, start=start, minutes=6)
    loads, info = _cold_start_loads(ctx, start, start + timedelta(minutes=6))
    assert [x["model"][-12:] for x in loads] == ["915dac68bcdf"] and info["other_model_loads"] == 1
    assert info["attribution"] == "most frequent blob" and loads[0]["seconds"] == 4.02


def test_cold_start_discovery_runners_are_not_loads_and_mlx_names_match(tmp_path: Path) -> None:
    start = utc(2025, 10, 14, 16, 20, 0)
    ctx = context("docker_json_k8s.log", "qwen3:8b", tmp_path, start=start, minutes=3)
    loads, info = _cold_start_loads(ctx, start, start + timedelta(minutes=3))
    assert len(loads) == 1 and info["load_lines"] == 6  # spawn + fit/alloc/commit + 2 started; no discovery
    mlx_start = utc(2026, 4, 10, 8, 1, 0)
    ctx = context("mlx_runner.log", "gemma4:e4b-mlx", tmp_path, start=mlx_start, minutes=15)
    loads, info = _cold_start_loads(ctx, mlx_start, mlx_start + timedelta(minutes=15))
    assert [x["model"] for x in loads] == ["gemma4:e4b-mlx"] and info["other_model_loads"] == 1
