"""Every fixture under tests/fixtures/real/ (line shapes of logs people posted; see its README)
parsed and checked against what a person reading it extracts: requests, statuses, latencies,
timing rows with token counts and their own request, loads per model, flash-attention
statements, timestamps in UTC."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from oasis_ops.logs.parse import (
    LocalClock,
    ServerLogParser,
    epoch_us_to_datetime,
    flash_attention_statements,
)

REAL = Path(__file__).resolve().parent / "fixtures" / "real"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def parse(name: str, offset: str = "") -> ServerLogParser:
    data = (REAL / name).read_bytes()
    parser = ServerLogParser(LocalClock(offset or None))
    parser.prime_offset(data[: 1 << 20])
    parser.feed_bytes(data, 1)
    parser.finish()
    return parser


def table(parser: ServerLogParser, name: str) -> list[dict[str, Any]]:
    cols = parser.rows.columns[name]
    out = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    for row in out:
        if row.get("ts") is not None:
            row["ts"] = epoch_us_to_datetime(row["ts"])
        if "detail" in row:
            row["detail"] = json.loads(row["detail"])
    return out


def requests(parser: ServerLogParser) -> list[tuple[int, datetime, int, float, str]]:
    return [(r["line_no"], r["ts"], r["status"], r["latency_ms"], r["path"]) for r in table(parser, "log_requests")]


def timings(parser: ServerLogParser) -> list[tuple[Any, ...]]:
    return [
        (t["task_id"], t["prompt_eval_ms"], t["prompt_tokens"], t["eval_ms"], t["eval_tokens"], t["total_ms"], t["request_line_no"], t["ts"])
        for t in table(parser, "log_timings")
    ]


def loads(parser: ServerLogParser) -> dict[str, int]:
    """Distinct loads per model (the blob's last 12 hex digits, or the MLX name)."""
    seen: dict[str, set[str]] = {}
    for e in table(parser, "log_events"):
        if e["kind"] in ("runner_start", "runner_started", "load_request"):
            model = e["detail"].get("model")
            key = "?" if not model else (model[-12:] if "sha256" in model else model)
            seen.setdefault(key, set()).add(e["detail"]["load_id"])
    return {k: len(v) for k, v in seen.items()}


def kinds(parser: ServerLogParser) -> dict[int, str]:
    return {e["line_no"]: e["kind"] for e in table(parser, "log_events") if e["kind"] != "other"}


def flash(parser: ServerLogParser) -> list[tuple[int, Any, str, str]]:
    return [
        (e["line_no"], e["detail"]["flash_attention"], e["detail"]["flash_source"], e["detail"]["flash_evidence"])
        for e in table(parser, "log_events")
        if "flash_evidence" in e["detail"]
    ]


GEMMA = "915dac68bcdf"  # sha256-2396aa56...
NOMIC = "ea87e7e7aabd"  # sha256-db6454b4...


def test_journald_0_1_x_plain_logger_and_llama_print_timings() -> None:
    p = parse("journald_0.1.x_linux.log", "Z")  # no slog line in 0.1.13: the offset is given
    assert p.counts.prefixes == {"journal": 27} and p.counts.junk == 0
    assert requests(p) == [
        (18, utc(2023, 12, 3, 14, 58, 49), 200, 16022.871305, "/api/generate"),
        (25, utc(2023, 12, 3, 15, 2, 6), 200, 3104.562101, "/api/generate"),
        (26, utc(2023, 12, 3, 15, 2, 9), 200, 0.041203, "/"),
        (27, utc(2023, 12, 3, 15, 2, 9), 200, 0.812467, "/api/tags"),
    ]
    assert timings(p) == [
        (None, 512.06, 640, 6921.44, 311, 7521.6, 18, utc(2023, 12, 3, 14, 58, 49)),
        (None, 101.73, 96, 2899.82, 128, 3001.55, 25, utc(2023, 12, 3, 15, 2, 6)),
    ]
    assert kinds(p) == {5: "runner_start", 11: "runner_started"}
    started = [e for e in table(p, "log_events") if e["kind"] == "runner_started"][0]
    assert started["ts"] == utc(2023, 12, 3, 14, 58, 41) and started["detail"]["seconds"] == 8.412771
    assert loads(p) == {"?": 1}  # 0.1.x does not log the model of a load


def test_journald_french_months_new_year_and_dst() -> None:
    p = parse("journald_fr_locale.log")
    assert p.counts.prefixes == {"journal": 17} and p.counts.junk == 0
    assert requests(p) == [
        (10, utc(2024, 12, 31, 23, 0, 7), 200, 27300.128511, "/api/chat"),  # 00:00:07 at +01:00
        (11, utc(2024, 12, 31, 23, 0, 19), 200, 11980.4811, "/api/chat"),
        (12, utc(2025, 2, 3, 8, 12, 55), 200, 0.62312, "/api/tags"),
        (14, utc(2025, 3, 14, 16, 45, 1), 500, 1802.211, "/api/chat"),
        (17, utc(2025, 8, 12, 6, 1, 15), 200, 1.20441, "/api/tags"),  # August: +02:00 from line 16
    ]
    assert p.offset_note() == "+01:00: stated by this file's slog lines; then +02:00 from line 16"
    config = table(p, "log_events")[0]
    assert config["kind"] == "server_config" and config["ts"] == utc(2024, 12, 31, 22, 58, 2)  # plain logger, +01:00
    assert config["detail"]["env"]["OLLAMA_NUM_PARALLEL"] == "0"
    assert kinds(p) == {2: "server_config", 5: "runner_start", 8: "flash_attention", 9: "runner_started", 13: "signal_killed"}
    assert flash(p) == [(2, False, "server config", "OLLAMA_FLASH_ATTENTION:false"), (8, False, "llama.cpp context", "flash_attn = 0")]
    assert loads(p) == {"6dc434599904": 1}


def test_journald_cjk_months() -> None:
    p = parse("journald_cjk_locale.log")
    assert p.counts.prefixes == {"journal": 6} and p.counts.unrecognized == 0
    assert [(r[0], r[1], r[2], r[4]) for r in requests(p)] == [
        (1, utc(2024, 5, 6, 22, 59, 38), 200, "/"),
        (2, utc(2024, 5, 6, 23, 0, 15), 204, "/api/chat"),
        (6, utc(2024, 5, 6, 23, 0, 29), 200, "/api/chat"),  # Gin before the first slog line: +08:00 from the head
    ]
    assert loads(p) == {"4de93d5c5631": 1}


@pytest.mark.parametrize("name", ["docker_0.5.log"])
def test_docker_timestamps_plain_server_config_and_utc_container(name: str) -> None:
    p = parse(name)
    assert p.counts.prefixes == {"iso time": 15} and p.counts.junk == 0
    assert requests(p) == [
        (13, utc(2025, 3, 5, 8, 59, 41), 200, 9433.881208, "/api/chat"),
        (14, utc(2025, 3, 5, 8, 59, 47), 200, 5604.101112, "/api/chat"),
        (15, utc(2025, 3, 5, 9, 0, 2), 200, 0.0449, "/api/version"),
    ]
    events = table(p, "log_events")
    assert events[0]["kind"] == "server_config" and events[0]["ts"] == utc(2025, 3, 5, 8, 58, 54)
    assert events[0]["detail"]["env"]["OLLAMA_HOST"] == "http://0.0.0.0:11434"
    fa = [e for e in events if e["kind"] == "flash_attention"][0]
    # a raw llama.cpp line has no time of its own: the docker prefix's (absolute) time is used
    assert fa["ts"] == utc(2025, 3, 5, 8, 59, 33, 611060) and fa["detail"]["flash_attention"] is False
    assert fa["detail"]["model"].endswith("d07a88adc73c")
    assert loads(p) == {"d07a88adc73c": 1}


@pytest.mark.parametrize(("name", "first"), [("docker_json_k8s.log", 1), ("k8s_cri_containerd.log", 6)])
def test_k8s_json_and_cri_lines(name: str, first: int) -> None:
    p = parse(name)
    assert p.counts.junk == 0 and p.counts.unrecognized == 0
    shift = first - 1  # the CRI file starts at the JSON file's line 6
    assert requests(p) == [
        (15 - shift, utc(2025, 10, 14, 16, 21, 20), 200, 10559.417332, "/api/chat"),
        (16 - shift, utc(2025, 10, 14, 16, 21, 26), 200, 5301.977446, "/v1/chat/completions"),
        (17 - shift, utc(2025, 10, 14, 16, 21, 30), 200, 0.038211, "/api/version"),
    ]
    assert loads(p) == {"4de93d5c5631": 1}  # fit + alloc + commit + two "started in" lines: one load
    ops = [e["detail"]["operation"] for e in table(p, "log_events") if e["kind"] == "load_request"]
    assert ops == ["fit", "alloc", "commit"]
    started = [e["detail"].get("repeat", False) for e in table(p, "log_events") if e["kind"] == "runner_started"]
    assert started == [False, True]
    if first == 1:
        assert kinds(p)[4] == "runner_discovery"  # `ollama runner --ollama-engine --port 36221`: no --model
        assert flash(p)[0] == (1, True, "server config", "OLLAMA_FLASH_ATTENTION:true")


def test_macos_app_two_models_discovery_and_quoted_keys() -> None:
    p = parse("macos_app_0.20.log")
    assert p.counts.junk == 0 and p.counts.unrecognized == 0 and p.offset_note().startswith("-06:00")
    assert [(r[0], r[1], r[3], r[4]) for r in requests(p)] == [
        (6, utc(2026, 1, 9, 14, 15, 40), 0.051209, "/api/version"),
        (18, utc(2026, 1, 9, 14, 15, 52), 11845.122371, "/api/chat"),
        (19, utc(2026, 1, 9, 14, 15, 59), 6210.870942, "/api/chat"),
        (28, utc(2026, 1, 9, 14, 16, 4), 1209.911045, "/api/embed"),
        (29, utc(2026, 1, 9, 14, 16, 10), 5998.140201, "/api/chat"),
        (30, utc(2026, 1, 9, 14, 16, 11), 0.204118, "/api/ps"),
    ]
    assert loads(p) == {GEMMA: 1, NOMIC: 1}
    assert kinds(p)[4] == "runner_discovery"
    layers = [e["detail"] for e in table(p, "log_events") if e["msg"] == "loading model"]
    assert [d["model layers"] for d in layers] == ["35", "13"]  # slog's quoted key
    # "enabling flash attention" is said before the spawn: it belongs to the next load
    assert flash(p)[:3] == [
        (1, False, "server config", "OLLAMA_FLASH_ATTENTION:false"),
        (7, True, "enabling flash attention", "enabling flash attention"),
        (12, True, "load request", "FlashAttention:Enabled"),
    ]
    enabling = [e for e in table(p, "log_events") if e["line_no"] == 7][0]["detail"]
    assert enabling["model"].endswith(GEMMA)
    embed_flash = [f for f in flash(p) if f[0] in (22, 23, 24)]
    assert [f[1] for f in embed_flash] == [False, False, False]


def test_windows_powershell_crlf_backslashes_and_spaces_in_paths() -> None:
    data = (REAL / "windows_0.12_powershell_crlf.log").read_bytes()
    assert data.count(b"\r\n") == 14
    p = parse("windows_0.12_powershell_crlf.log")
    assert p.counts.junk == 0 and p.counts.unrecognized == 0
    assert requests(p) == [
        (12, utc(2025, 11, 5, 1, 37, 19), 200, 8102.0447, "/api/generate"),
        (14, utc(2025, 11, 5, 1, 42, 20), 500, 1330.9012, "/api/generate"),
    ]
    events = {e["line_no"]: e for e in table(p, "log_events")}
    assert events[1]["detail"]["env"]["OLLAMA_MODELS"] == "G:\\OllamaFiles\\models"
    assert events[4]["kind"] == "runner_discovery"
    start = events[6]["detail"]
    assert start["runner"] == "ollama runner" and start["port"] == 53431
    assert start["model"] == "G:\\OllamaFiles\\models\\blobs\\sha256-b279f32635f9da1f1412dc523cf15c807f9c84f19d09f1cb5b41d07a88adc73c"
    assert loads(p) == {"d07a88adc73c": 1}
    assert events[13]["kind"] == "runner_gone"


def test_cpp_server_2024_text_timings_tied_to_their_requests() -> None:
    p = parse("cpp_server_2024.log")
    assert p.counts.junk == 0
    assert timings(p) == [
        (2, 95.309, 10, 5840.77, 224, 5936.079, 15, utc(2024, 6, 12, 12, 7, 21)),  # Gin after the block
        (229, 210.443, 198, 3101.2, 118, 3311.643, 18, utc(2024, 6, 12, 12, 7, 33)),  # Gin before it
    ]
    assert flash(p) == [(2, True, "runner cmd", "--flash-attn"), (5, True, "llama.cpp context", "flash_attn = 1")]
    assert loads(p) == {"6dc434599904": 1}


def test_cpp_server_json_layout() -> None:
    p = parse("cpp_server_json_0.1.3x.log")
    assert p.counts.junk == 0
    assert timings(p) == [(0, 833.018, 41, 7201.95, 90, 8034.968, 10, utc(2024, 4, 11, 9, 30, 12))]
    assert loads(p) == {"4de93d5c5631": 1}


def test_llama_server_each_block_to_its_own_request() -> None:
    p = parse("llama_server_0.32.log")
    assert p.counts.junk == 0 and p.counts.prefixes == {"llama.cpp": 12}
    assert [r[2] for r in requests(p)] == [200, 200, 200, 200, 499, 200, 200, 200, 200]
    assert timings(p) == [
        (0, 1490.22, 1220, 7301.44, 281, 8791.66, 24, utc(2026, 8, 18, 8, 3, 53)),  # its Gin line came first
        (4, 120.5, 88, 2210.31, 85, 2330.81, 41, utc(2026, 8, 18, 8, 5, 2)),  # header layout, Gin after
        (3, 402.9, 310, 9100.02, 350, 9502.92, 43, utc(2026, 8, 18, 8, 5, 9)),  # not the 91µs unload call
        (12, 4789.33, 4011, 6742.1, 172, 11531.43, 71, utc(2026, 8, 18, 8, 44, 19)),  # llama.cpp prefix
        (15, 301.11, 240, 4100.92, 160, 4402.03, 78, utc(2026, 8, 18, 8, 44, 45)),
    ]
    images = [(t["task_id"], t["image_encode_ms"], t["image_decode_ms"]) for t in table(p, "log_timings")]
    assert images[0] == (0, 212.0, 38.0) and all(i[1] is None for i in images[1:])
    assert loads(p) == {GEMMA: 1, NOMIC: 1}
    embed = [e["detail"] for e in table(p, "log_events") if e["kind"] == "runner_start"][1]
    assert embed["embedding"] is True and embed["runner"] == "llama-server"
    assert flash(p) == [
        (1, None, "server config", "OLLAMA_FLASH_ATTENTION:"),
        (4, None, "runner cmd", "--flash-attn auto"),
        (7, None, "llama.cpp context", "flash_attn = auto"),
        (8, True, "llama.cpp context", "Flash Attention was auto, set to enabled"),
        (57, None, "runner cmd", "--flash-attn auto"),
        (58, None, "llama.cpp context", "flash_attn = auto"),
        (59, False, "llama.cpp context", "Flash Attention was auto, set to disabled"),
    ]


def test_go_plain_logger_takes_the_files_slog_offset() -> None:
    p = parse("go_plain_logger_0.5.log")
    config = table(p, "log_events")[0]
    assert config["kind"] == "server_config" and config["level"] == "INFO" and config["msg"] == "server config"
    assert config["ts"] == utc(2025, 2, 17, 2, 51, 57)  # 20:51:57 at -06:00 (stated by the slog lines after it)
    assert config["detail"]["source"] == "routes.go:1186" and config["detail"]["flash_attention"] is True
    assert requests(p)[1] == (15, utc(2025, 2, 17, 2, 52, 48), 200, 18014.558301, "/api/generate")
    assert [f[2:] for f in flash(p)] == [("server config", "OLLAMA_FLASH_ATTENTION:true"), ("runner cmd", "--flash-attn"),
                                         ("llama.cpp context", "flash_attn = 1")]  # fmt: skip
    started = [e for e in table(p, "log_events") if e["kind"] == "runner_started"][0]["detail"]
    assert started["seconds"] == 9.2 and started["model"].endswith("984534e2a84a")
    given = parse("go_plain_logger_0.5.log", "+00:00")  # an explicit offset always wins
    assert table(given, "log_events")[0]["ts"] == utc(2025, 2, 16, 20, 51, 57)


def test_mlx_runner_loads_by_model_name() -> None:
    p = parse("mlx_runner.log")
    assert p.counts.junk == 0 and p.counts.unrecognized == 0
    assert loads(p) == {"gemma4:e4b-mlx": 1, "x/flux2-klein:latest": 1}
    events = {e["line_no"]: e for e in table(p, "log_events")}
    assert events[3]["detail"]["MLX version"] == "v0.29.3"  # quoted key
    assert events[7]["kind"] == "runner_started" and events[7]["detail"]["port"] == 53670
    wrapped = events[13]["detail"]
    assert events[13]["msg"] == "mlx-runner" and wrapped["inner"]["msg"] == "starting mlx runner"
    assert wrapped["inner"]["mode"] == "imagegen"
    assert requests(p) == [
        (11, utc(2026, 4, 10, 8, 2, 4), 200, 11401.122031, "/api/chat"),
        (17, utc(2026, 4, 10, 8, 10, 2), 500, 59.3245, "/api/generate"),
    ]


def test_ansi_coloured_gin_lines() -> None:
    p = parse("ansi_gin_terminal.log")
    assert p.counts.junk == 0 and p.counts.prefixes == {"ansi": 6}
    assert [(r[2], r[3], r[4]) for r in requests(p)] == [
        (200, 0.041117, "/"),
        (200, 7108.211034, "/api/chat"),
        (499, 60000.0, "/api/chat"),
        (500, 2004.810223, "/api/chat"),
        (200, 0.318702, "/api/ps"),
        (200, 0.077019, "/api/version"),
    ]
    assert requests(p)[1][1] == utc(2026, 2, 2, 2, 20, 31)  # +09:00
    assert [r["method"] for r in table(p, "log_requests")] == ["HEAD", "POST", "POST", "POST", "GET", "GET"]


def test_docker_compose_and_kubectl_prefixes() -> None:
    p = parse("docker_compose_0.3.log")
    assert p.counts.prefixes == {"compose": 12} and p.counts.junk == 0
    assert requests(p) == [
        (9, utc(2024, 8, 17, 14, 12, 44), 200, 87000.0, "/api/pull"),  # Gin prints 1m27s
        (12, utc(2024, 8, 17, 14, 13, 31), 200, 29114.022318, "/api/chat"),
    ]
    assert kinds(p) == {6: "server_config", 10: "runner_start", 11: "runner_started"}
    k = parse("kubectl_prefix.log")
    assert k.counts.prefixes == {"bracket": 4}
    assert [(r[0], r[2], r[4]) for r in requests(k)] == [(2, 200, "/api/version"), (3, 200, "/api/version"), (4, 200, "/api/generate")]


ALL = sorted(p.name for p in REAL.glob("*.log"))


def test_every_fixture_is_documented() -> None:
    readme = (REAL / "README.md").read_text()
    for name in ALL:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("name", ALL)
def test_fixture_lines_split_anywhere_never_raise(name: str) -> None:
    """Chunks cut at random line boundaries give the same rows; truncated, mangled and
    prefix-only lines never raise."""
    data = (REAL / name).read_bytes()
    whole = parse(name)
    lines = data.split(b"\n")
    rng = random.Random(name)
    cut = ServerLogParser(LocalClock(None))
    cut.prime_offset(data)
    i = 0
    while i < len(lines) - 1:
        n = rng.randint(1, 5)
        chunk = lines[i : i + n]
        cut.feed_bytes(b"\n".join(chunk) + b"\n", i + 1)
        i += len(chunk)
    cut.finish()
    assert cut.rows.columns == whole.rows.columns
    mangled = []
    for line in lines:
        roll = rng.random()
        if roll < 0.3 and line:
            line = line[: rng.randint(0, len(line) - 1)]
        elif roll < 0.4:
            line = line.replace(b"|", b"").replace(b"=", b" ")
        elif roll < 0.5:
            line = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 40))).replace(b"\n", b"") + line
        mangled.append(line)
    junk = ServerLogParser(LocalClock(None))
    junk.feed_bytes(b"\n".join(mangled) + b"\n", 1)
    junk.finish()
    assert junk.counts.lines == len(mangled)


def test_flash_attention_statements_on_a_log_tail() -> None:
    text = (REAL / "macos_app_0.20.log").read_text()
    statements = flash_attention_statements(text.splitlines(keepends=True))
    assert [(s["line_no"], s["value"], s["source"]) for s in statements] == [
        (1, False, "server config"),
        (7, True, "enabling flash attention"),
        (12, True, "load request"),
        (13, True, "load request"),
        (14, True, "load request"),
        (22, False, "load request"),
        (23, False, "load request"),
        (24, False, "load request"),
    ]
    assert statements[0]["model"] is None and statements[0]["evidence"] == "OLLAMA_FLASH_ATTENTION:false"
    assert statements[1]["model"].endswith(GEMMA) and statements[5]["model"].endswith(NOMIC)
    assert statements[1]["ts"] == int(utc(2026, 1, 9, 14, 15, 41, 7000).timestamp() * 1_000_000)
    tail = flash_attention_statements((REAL / "llama_server_0.32.log").read_text().splitlines()[55:])
    assert [(s["line_no"], s["value"], s["source"], s["model"][-12:]) for s in tail] == [
        (2, None, "runner cmd", NOMIC),
        (3, None, "llama.cpp context", NOMIC),
        (4, False, "llama.cpp context", NOMIC),
    ]
    journald = flash_attention_statements((REAL / "docker_json_k8s.log").read_text().splitlines())
    assert [s["source"] for s in journald] == ["server config", "enabling flash attention", "load request", "load request", "load request"]
    assert flash_attention_statements(["", "garbage \x00", "time=oops", "{\"log\": 3}", "llama_context: flash_attn = 0"]) == [
        {"line_no": 5, "ts": None, "value": False, "source": "llama.cpp context", "model": None, "evidence": "flash_attn = 0"}
    ]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_mutated_real_lines_never_raise(seed: int) -> None:
    """Every fixture line, mutated the ways junk looks (numbers that are not numbers, Unicode
    digits, stray escapes, braces, nested prefixes, cut anywhere): counted, never raised."""
    rng = random.Random(seed)
    swaps = ["1.2.3", "²", "٣", "-", "", "\x1b[", "{", "}", "\\", '"', "=", "|", ":", "\r", " ", "99999999999999999999999"]
    prefixes = ["", "Jun 05 12:36:11 h ollama[1]: ", "2025-06-05T12:36:11.1Z ", "{\"log\":\"", "ollama-1  | ", "0.00.613.241 I "]
    lines: list[str] = []
    for name in ALL:
        for line in (REAL / name).read_text().splitlines():
            for _ in range(3):
                chars = list(line)
                for _ in range(rng.randint(1, 4)):
                    if chars:
                        i = rng.randrange(len(chars))
                        chars[i] = rng.choice(swaps) if chars[i].isdigit() or rng.random() < 0.3 else chars[i]
                mutated = rng.choice(prefixes) + "".join(chars)
                lines.append(mutated[: rng.randint(0, len(mutated))] if rng.random() < 0.2 else mutated)
    lines.append("{" * 5000 + "}" * 5000)
    lines.append('{"log":' * 3000)
    parser = ServerLogParser(LocalClock(None))
    parser.feed_lines(lines, 1)
    parser.finish()
    counts = parser.counts
    assert counts.lines == len(lines)
    assert flash_attention_statements(lines) is not None
