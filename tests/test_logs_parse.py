"""Line parsers: every line shape in the fixtures, timing assembly, and junk that never raises."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers_logs import gin_line, go_duration, slog_line, timing_block

from oasis_ops.errors import ConfigError
from oasis_ops.logs.parse import (
    MAX_LINE_CHARS,
    HarnessLogParser,
    LocalClock,
    ServerLogParser,
    classify_slog,
    env_flag,
    epoch_us_to_datetime,
    go_duration_ms,
    parse_go_struct,
    parse_slog_fields,
    parse_utc_offset,
)

OLLAMA = Path(__file__).resolve().parent / "fixtures" / "ollama"
PLUS1 = LocalClock("+01:00")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def parse_server(text: str | bytes, clock: LocalClock = PLUS1, finish: bool = True) -> ServerLogParser:
    parser = ServerLogParser(clock)
    parser.feed_bytes(text.encode() if isinstance(text, str) else text, 1)
    if finish:
        parser.finish()
    return parser


def rows(parser: ServerLogParser | HarnessLogParser, table: str) -> list[dict]:
    cols = parser.rows.columns[table]
    out = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    for row in out:
        if row.get("ts") is not None:
            row["ts"] = epoch_us_to_datetime(row["ts"])
    return out


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("4m8.239102s", 248239.102),
        ("312.417µs", 0.312417),
        ("312.417μs", 0.312417),  # Greek mu
        ("312.417us", 0.312417),
        ("1m0s", 60000.0),
        ("5h31m9s", 19_869_000.0),
        ("1h0m0.5s", 3_600_500.0),
        ("1m27s", 87_000.0),
        ("7.812337104s", 7812.337104),
        ("666.375868ms", 666.375868),
        ("88ns", 0.000088),
        ("0s", 0.0),
    ],
)
def test_go_durations_in_every_unit(text: str, ms: float) -> None:
    assert go_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "s", "1", "1.5", "1m0", "abc", "1x", "m1s", "inf", "nan", "1e5s", "1 s"])
def test_go_duration_rejects_non_durations(text: str) -> None:
    assert go_duration_ms(text) is None


def test_go_duration_round_trips_the_test_formatter() -> None:
    for ms in (0.0005, 0.312417, 12.5, 999.999, 4101.734558, 60000.0, 248239.102, 19_869_000.0):
        assert go_duration_ms(go_duration(ms)) == pytest.approx(ms)


def test_utc_offsets() -> None:
    assert parse_utc_offset("+01:00") == timezone(timedelta(hours=1))
    assert parse_utc_offset("-0530") == timezone(-timedelta(hours=5, minutes=30))
    assert parse_utc_offset("Z") == UTC
    assert parse_utc_offset("") is None
    for bad in ("+25:00", "one", "+1:75"):
        with pytest.raises(ConfigError):
            parse_utc_offset(bad)


def test_local_clock_uses_the_machine_zone_without_an_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        value = LocalClock(None).epoch_us(2025, 11, 20, 17, 58, 1)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert epoch_us_to_datetime(value) == utc(2025, 11, 20, 12, 28, 1)


def test_gin_lines_of_the_fixture() -> None:
    p = parse_server((OLLAMA / "server.log").read_text())
    reqs = rows(p, "log_requests")
    assert len(reqs) == 14 and p.counts.junk == 0 and p.counts.unrecognized == 0
    first = reqs[0]
    assert first == {
        "ts": utc(2025, 11, 20, 8, 0, 5),  # 09:00:05 at +01:00
        "status": 200,
        "latency_ms": 7812.337104,
        "client": "127.0.0.1",
        "method": "POST",
        "path": "/api/chat",
        "line_no": 6,
    }
    by_line = {r["line_no"]: r for r in reqs}
    assert by_line[8]["latency_ms"] == 0.312417 and by_line[8]["method"] == "GET" and by_line[8]["path"] == "/api/ps"
    assert by_line[12]["status"] == 499 and by_line[12]["latency_ms"] == 60000.0
    assert by_line[17]["latency_ms"] == 248239.102 and by_line[17]["ts"] == utc(2025, 11, 20, 17, 4, 12)
    assert by_line[18]["latency_ms"] == 0.088112 and by_line[18]["path"] == "/api/generate"


def test_gin_offset_is_a_parameter() -> None:
    line = "[GIN] 2026/04/17 - 11:17:40 | 200 |  666.375868ms |       127.0.0.1 | POST     \"/api/show\"\n"
    assert rows(parse_server(line, LocalClock("-05:00")), "log_requests")[0]["ts"] == utc(2026, 4, 17, 16, 17, 40)
    assert rows(parse_server(line, LocalClock("Z")), "log_requests")[0]["ts"] == utc(2026, 4, 17, 11, 17, 40)


def test_slog_generic_fields_with_escapes_and_maps() -> None:
    line = (
        'time=2025-11-20T08:58:12.004+01:00 level=WARN source=a.go:1 msg="said \\"hi\\" twice" '
        'n=3 empty="" env="map[A:1 B: C:[x y]]" path=/tmp/x'
    )
    fields = parse_slog_fields(line)
    assert fields == {
        "time": "2025-11-20T08:58:12.004+01:00",
        "level": "WARN",
        "source": "a.go:1",
        "msg": 'said "hi" twice',
        "n": "3",
        "empty": "",
        "env": "map[A:1 B: C:[x y]]",
        "path": "/tmp/x",
    }
    assert parse_go_struct(fields["env"]) == {"A": "1", "B": "", "C": "[x y]"}
    assert parse_slog_fields('time=2025-11-20T08:58:12.004+01:00 level=INFO msg="cut in the mid') is None


def test_every_slog_kind_of_the_fixtures() -> None:
    p = parse_server((OLLAMA / "server.log").read_text())
    events = rows(p, "log_events")
    kinds = {e["line_no"]: e["kind"] for e in events}
    assert kinds == {1: "server_config", 2: "other", 3: "runner_start", 4: "load_request", 5: "runner_started",
                     13: "client_abort", 20: "runner_gone", 21: "runner_start", 22: "runner_started"}  # fmt: skip
    by_line = {e["line_no"]: e for e in events}
    config = json.loads(by_line[1]["detail"])
    assert by_line[1]["ts"] == utc(2025, 11, 20, 7, 58, 12, 4000)
    assert config["flash_attention"] is True and config["env"]["OLLAMA_FLASH_ATTENTION"] == "true"
    assert config["env"]["OLLAMA_NUM_PARALLEL"] == "1" and config["env"]["OLLAMA_KEEP_ALIVE"] == "5m0s"
    assert config["env"]["OLLAMA_ORIGINS"] == "[http://localhost https://localhost]"
    load = json.loads(by_line[4]["detail"])
    assert load["flash_attention"] is True and load["request"]["FlashAttention"] == "Enabled"
    assert load["request"]["GPULayers"] == "35[ID:0 Layers:35(0..34)]"
    start = json.loads(by_line[21]["detail"])
    assert start["model"].endswith("sha256-4e30e2665218745ef463f722c0bf86be0cab6ee676320f1cfadf91e989107448")
    assert start["port"] == 54107 and start["runner"] == "ollama runner"
    assert json.loads(by_line[22]["detail"])["seconds"] == 3.55
    gone = json.loads(by_line[20]["detail"])
    assert by_line[20]["level"] == "WARN" and gone["signal"] == "killed" and gone["string"] == "signal: killed"

    p2 = parse_server((OLLAMA / "server_llama_server.log").read_text(), LocalClock("Z"))
    start2 = json.loads(rows(p2, "log_events")[1]["detail"])
    assert start2["runner"] == "llama-server" and start2["port"] == 44067
    assert start2["flash_attn"] == "on" and start2["flash_attention"] is True
    assert json.loads(rows(p2, "log_events")[2]["detail"])["seconds"] == 3.51


@pytest.mark.parametrize(
    ("msg_and_fields", "kind", "derived"),
    [
        ('msg="error loading llama server" error="llama runner process has terminated: signal: killed"', "signal_killed", {"signal": "killed"}),
        ('msg="error loading llama server" error="timed out waiting for llama runner to start"', "other", {}),
        ('msg="llama-server process no longer running" sys=9 string="signal: killed"', "runner_gone", {"signal": "killed"}),
        ('msg="runtime OOM detected" model=gemma4', "oom", {"model": "gemma4"}),
        ('msg="starting llama server" cmd="/x/ollama_llama_server --model /b/sha256-ab --port 1234 --flash_attn"', "runner_start", {"port": 1234, "flash_attention": True}),
        ('msg="llama-server started in 12.04 seconds"', "runner_started", {"seconds": 12.04}),
        ('msg=load request="{Operation:fit FlashAttention:Disabled KvSize:8192}"', "load_request", {"flash_attention": False}),
        ('msg="server config" env="map[OLLAMA_FLASH_ATTENTION:0 OLLAMA_HOST:http://127.0.0.1:11434]"', "server_config", {"flash_attention": False}),
        ('msg="server config" env="map[OLLAMA_FLASH_ATTENTION: OLLAMA_HOST:]"', "server_config", {"flash_attention": None}),
    ],
)
def test_slog_classification(msg_and_fields: str, kind: str, derived: dict) -> None:
    fields = parse_slog_fields(f"time=2026-09-02T16:52:34.597Z level=INFO source=s.go:1 {msg_and_fields}")
    assert fields is not None
    got_kind, detail = classify_slog(fields)
    assert got_kind == kind
    for key, value in derived.items():
        assert detail[key] == value


def test_env_flag_follows_ollama() -> None:
    assert env_flag(None) is None and env_flag("") is None
    assert env_flag("0") is False and env_flag("false") is False and env_flag("FALSE") is False
    assert env_flag("1") is True and env_flag("true") is True and env_flag("yes please") is True


def test_timing_lines_are_tied_to_their_gin_line() -> None:
    p = parse_server((OLLAMA / "server_llama_server.log").read_text(), LocalClock("Z"))
    timings = rows(p, "log_timings")
    assert timings == [
        {"ts": utc(2026, 9, 2, 16, 52, 42), "task_id": 0, "prompt_eval_ms": 402.16, "prompt_tokens": 312,
         "eval_ms": 3671.90, "eval_tokens": 148, "total_ms": 4074.06, "image_encode_ms": 17.0,
         "image_decode_ms": 41.0, "line_no": 5, "request_line_no": 14},
        {"ts": utc(2026, 9, 2, 16, 53, 41), "task_id": 2, "prompt_eval_ms": 398.02, "prompt_tokens": 310,
         "eval_ms": 58107.44, "eval_tokens": 151, "total_ms": 58505.46, "image_encode_ms": 17.0,
         "image_decode_ms": 44.0, "line_no": 15, "request_line_no": 23},
    ]  # fmt: skip
    assert p.counts.unrecognized == 6  # srv/update_slots/encoding/decoding chatter, not junk
    assert p.counts.junk == 0


def test_timing_fallback_and_interleaved_tasks() -> None:
    """Blocks pair with their own request by order of completion; a block whose request never
    comes (task 8: its client went away) waits, then takes the last timed line before it."""
    t0 = datetime(2025, 11, 20, 17, 58, 0)
    lines = [
        gin_line(t0, 200, 5.0, "/api/ps", "GET"),
        # two parallel slots: task 7 launched, then task 8; image lines follow task 8's launch
        "slot launch_slot_: id  0 | task 7 | processing task",
        "slot launch_slot_: id  1 | task 8 | processing task",
        "image slice encoded in 900 ms",
        *timing_block(7, 400, 300, 3000, 100)[1:],  # task 7's timing lines (no relaunch)
        gin_line(t0 + timedelta(seconds=4), 200, 4000.0),
        *timing_block(8, 410, 310, 58000, 150)[1:],
        slog_line(t0 + timedelta(seconds=70), "aborting completion request due to client closing the connection"),
        *timing_block(9, 420, 320, 1000, 50, encode_ms=18),
    ]
    p = parse_server("\n".join(lines) + "\n", LocalClock("+01:00"), finish=False)
    assert [t["task_id"] for t in rows(p, "log_timings")] == [7]
    assert p.pending == 2  # tasks 8 and 9 wait for their requests
    p.finish()
    by_task = {t["task_id"]: t for t in rows(p, "log_timings")}
    assert by_task[7]["ts"] == utc(2025, 11, 20, 16, 58, 4) and by_task[7]["image_encode_ms"] is None
    assert by_task[7]["request_line_no"] == 8
    assert by_task[8]["ts"] == utc(2025, 11, 20, 16, 58, 4) and by_task[8]["image_encode_ms"] == 900.0
    assert by_task[9]["ts"] == utc(2025, 11, 20, 16, 59, 10)  # fallback: the previous timed line
    assert by_task[9]["image_encode_ms"] == 18.0 and by_task[9]["total_ms"] == 1420.0
    assert by_task[8]["request_line_no"] is None and by_task[9]["request_line_no"] is None


def test_unfinished_task_is_emitted_partially_at_the_end() -> None:
    t0 = datetime(2025, 11, 20, 17, 58, 0)
    text = gin_line(t0, 200, 5.0) + "\n" + "\n".join(timing_block(3, 400, 300, 3000, 100)[:2]) + "\n"
    p = parse_server(text)
    (row,) = rows(p, "log_timings")
    assert row["task_id"] == 3 and row["prompt_eval_ms"] == 400.0 and row["total_ms"] is None
    assert row["ts"] == utc(2025, 11, 20, 16, 58, 0)


def test_harness_lines() -> None:
    h = HarnessLogParser(PLUS1)
    h.feed_bytes((OLLAMA / "runner.log").read_bytes() + b"2025-11-20 18:05:00 trial 12730 failed: boom\nhello\n", 1)
    got = rows(h, "harness_log")
    assert [r["kind"] for r in got] == ["ok", "ok", "timeout", "timeout", "timeout", "timeout", "ok", "evict", "error"]
    assert got[0]["trial"] == "12453" and got[0]["latency_ms"] == 6090.0
    assert got[0]["ts"] == utc(2025, 11, 20, 16, 41, 58)
    assert got[2]["trial"] == "12455" and got[2]["latency_ms"] == 60000.0 and "litellm.Timeout" in got[2]["detail"]
    assert got[6]["latency_ms"] == pytest.approx(248240.0)
    assert got[7]["trial"] is None and "gemma4:e4b" in got[7]["detail"]
    assert h.counts.unrecognized == 1 and h.counts.harness == {"ok": 3, "timeout": 4, "evict": 1, "error": 1}


def make_junk_log(seed: int, good: int = 3000) -> tuple[bytes, dict[str, int]]:
    """Good Gin lines interleaved with every kind of junk; returns (bytes, expected counts)."""
    rng = random.Random(seed)
    t0 = datetime(2025, 11, 20, 9, 0, 0)
    expected = {"requests": 0, "junk": 0, "unrecognized": 0}
    out: list[bytes] = []
    for i in range(good):
        line = gin_line(t0 + timedelta(seconds=i), 200, rng.uniform(1, 9000))
        out.append(line.encode())
        expected["requests"] += 1
        roll = rng.random()
        if roll < 0.15:  # random bytes, never valid UTF-8 (0xff), never a newline
            raw = bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(rng.randint(1, 200)))
            out.append(raw + b"\xff")
            expected["junk"] += 1
        elif roll < 0.25:  # truncated Gin line (cut before the closing quote)
            out.append(line.encode()[: rng.randint(6, len(line) - 1)])
            expected["junk"] += 1
        elif roll < 0.30:  # partial UTF-8 sequence at the end
            out.append("[GIN] 2025/11/20 - 09:00 €".encode()[:-1])
            expected["junk"] += 1
        elif roll < 0.40:  # random printable text
            words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(8)]
            out.append(("X " + " ".join(words)).encode())
            expected["unrecognized"] += 1
        elif roll < 0.42:  # malformed slog (unterminated quote) and time= garbage
            out.append(b'time=2025-11-20T09:00:00.000+01:00 level=INFO msg="unterminated')
            out.append(b"time=not-a-time level=INFO msg=x")
            expected["junk"] += 2
        elif roll < 0.43:  # binary text with control characters
            out.append(b"\x00\x01\x02 valid utf8 but binary \x1b[0m")
            expected["junk"] += 1
    out.append(b"A" * (MAX_LINE_CHARS + 10))  # a very long line
    expected["junk"] += 1
    return b"\n".join(out) + b"\n", expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_junk_fuzz_never_raises_and_is_counted(seed: int) -> None:
    data, expected = make_junk_log(seed)
    p = parse_server(data)
    assert p.counts.requests == expected["requests"]
    assert p.counts.junk == expected["junk"]
    assert p.counts.unrecognized == expected["unrecognized"]
    assert p.counts.lines == data.count(b"\n")


def test_random_lines_of_every_prefix_never_raise() -> None:
    rng = random.Random(42)
    prefixes = ["[GIN] ", "time=", "slot print_timing: ", "slot launch_slot_: ", "image ", "", "2025-11-20 "]
    alphabet = "0123456789 |/:=\"'\\.-abcdefmsµhnu[]{}()\t"
    lines = [rng.choice(prefixes) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(5000)]
    text = "\n".join(lines) + "\n"
    p = parse_server(text)
    h = HarnessLogParser(PLUS1)
    h.feed_bytes(text.encode(), 1)
    assert p.counts.lines == 5000 and h.counts.lines == 5000
    stored = p.counts.requests + sum(p.counts.events.values())
    assert stored + p.counts.junk + p.counts.unrecognized + p.counts.timings <= 5000 + p.counts.timings
    assert p.counts.junk > 1000
