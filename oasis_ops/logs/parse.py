"""Pure parsers for Ollama's server.log and the harness's runner.log.

No I/O here: the parsers take decoded lines (or whole-line byte chunks) and fill column lists
that become one DataFrame per sidecar table. Everything is built for speed on 100 MB logs:
dispatch on a cheap prefix test, precompiled regexes, a cache for Gin's whole-second
timestamps, columns kept as plain lists.

Times: slog lines carry an RFC 3339 offset; Gin access lines and harness lines are naive local
time, converted to UTC with a `LocalClock` (a fixed offset such as "+01:00", or this machine's
zone rules when the offset is empty). Timestamps are stored as epoch microseconds (UTC).

Raw llama-server timing lines have no time. They are assembled per task into one
`log_timings` row and take the timestamp of the NEXT timed line (Gin or slog) after the task's
`total time` line: for a request that is its own Gin completion line, printed right after.
A row still waiting when the input ends takes the PREVIOUS timed line's time (`finish()`).
Image lines (`image slice encoded`, `image decoded`) carry no task id: they belong to the task
most recently launched (`slot launch_slot_: ... | task N |`), else to the next task that prints
a timing line; several slices or batches are summed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from oasis_ops.errors import ConfigError

MAX_LINE_CHARS = 1 << 20  # a longer line is junk (a real one is a few KB at most)

EVENT_KINDS = (
    "server_config",
    "runner_start",
    "runner_started",
    "runner_gone",
    "signal_killed",
    "oom",
    "load_request",
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
    ),
    "harness_log": ("ts", "trial", "kind", "latency_ms", "detail", "line_no"),
}


# --- time -------------------------------------------------------------------------------------
_OFFSET_RE = re.compile(r"^(?:UTC|Z|([+-])(\d{1,2})(?::?(\d{2}))?)$", re.I)


def parse_utc_offset(text: str) -> timezone | None:
    """'+01:00', '-0530', '+2', 'Z', 'UTC' -> a fixed timezone; '' -> None (local zone)."""
    text = (text or "").strip()
    if not text:
        return None
    m = _OFFSET_RE.match(text)
    if not m:
        raise ConfigError(f"not a UTC offset: {text!r}", hint="use e.g. +01:00, -05:30 or Z")
    if m.group(1) is None:
        return UTC
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59:
        raise ConfigError(f"UTC offset out of range: {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if m.group(1) == "-" else delta)


class LocalClock:
    """Naive local wall-clock times -> epoch microseconds (UTC).

    With a fixed offset the conversion is arithmetic; without one it follows this machine's
    zone rules (so a log spanning a DST change converts each line with the offset of its day).
    """

    def __init__(self, offset: timezone | str | None = None) -> None:
        self.tz: timezone | None = parse_utc_offset(offset) if isinstance(offset, str) else offset
        self._cache: dict[tuple[int, int, int, int], int] = {}
        self._stamps: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"LocalClock({self.tz or 'local'})"

    def epoch_us(self, year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
        # Cached per hour: every zone's offset changes (if ever) on an hour boundary here.
        key = (year, month, day, hour)
        base = self._cache.get(key)
        if base is None:
            if not (0 <= minute <= 59 and 0 <= second <= 60):
                raise ValueError("minute or second out of range")
            if self.tz is not None:
                base = int(datetime(year, month, day, hour, tzinfo=self.tz).timestamp()) * 1_000_000
            else:
                datetime(year, month, day, hour)  # validates the fields
                base = int(time.mktime((year, month, day, hour, 0, 0, 0, 0, -1))) * 1_000_000
            if len(self._cache) > 100_000:  # bounded: one entry per distinct hour
                self._cache.clear()
            self._cache[key] = base
        elif not (0 <= minute <= 59 and 0 <= second <= 60):
            raise ValueError("minute or second out of range")
        return base + (minute * 60 + second) * 1_000_000

    def gin_epoch_us(self, stamp: str) -> int:
        """`2025/11/20 - 09:00:05` (exactly 21 characters) -> epoch µs; ValueError if malformed."""
        value = self._stamps.get(stamp)
        if value is None:
            if len(stamp) != 21 or stamp[4] != "/" or stamp[7] != "/" or stamp[10:13] != " - " or stamp[15] != ":" or stamp[18] != ":":
                raise ValueError(stamp)
            value = self.epoch_us(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                                  int(stamp[13:15]), int(stamp[16:18]), int(stamp[19:21]))  # fmt: skip
            if len(self._stamps) > 100_000:
                self._stamps.clear()
            self._stamps[stamp] = value
        return value


def epoch_us_to_datetime(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _rfc3339_us(text: str, clock: LocalClock) -> int:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:  # not what slog prints, but read it as local time
        base = clock.epoch_us(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
        return base + parsed.microsecond
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- Go durations -------------------------------------------------------------------------------
_UNIT_NS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000,
            "µs": 1_000, "μs": 1_000, "us": 1_000, "ns": 1}  # fmt: skip
_DUR_FULL = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|h|m|s))+")
_DUR_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|h|m|s)")


_SUFFIX2 = {"ms": 1_000_000, "µs": 1_000, "μs": 1_000, "us": 1_000, "ns": 1}


def _single_unit_ns(text: str) -> int | None:
    """Fast path for the common one-unit forms ('7.812337104s', '312.417µs'); None otherwise."""
    scale = _SUFFIX2.get(text[-2:])
    if scale is not None:
        number = text[:-2]
    elif text[-1:] == "s":
        number, scale = text[:-1], 1_000_000_000
    else:
        return None
    whole, _, frac = number.partition(".")
    if not whole.isascii() or not whole.isdigit() or (frac and not (frac.isascii() and frac.isdigit())):
        return None
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def go_duration_ms(text: str) -> float | None:
    """A Go time.Duration string ('4m8.239102s', '312.417µs', '1m0s', '0s') -> milliseconds.

    Summed in integer nanoseconds like Go itself, so the result is the nearest float to the
    exact value. None when `text` is not a duration.
    """
    fast = _single_unit_ns(text)
    if fast is not None:
        return fast / 1_000_000
    if not _DUR_FULL.fullmatch(text):
        return None
    total_ns = 0
    for whole, frac, unit in _DUR_PART.findall(text):
        scale = _UNIT_NS[unit]
        total_ns += int(whole or 0) * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
    if text[0] == "-":
        total_ns = -total_ns
    return total_ns / 1_000_000


# --- slog key=value lines -----------------------------------------------------------------------
_SLOG_VALUE = r'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)'
_SLOG_FULL = re.compile(r"\s*(?:[A-Za-z_][\w.\-]*=" + _SLOG_VALUE + r"\s*)+")
_SLOG_PAIR = re.compile(r"([A-Za-z_][\w.\-]*)=(" + _SLOG_VALUE + r")")


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    try:
        decoded = json.loads(value)
        if isinstance(decoded, str):
            return decoded
    except ValueError:
        pass
    return inner.replace('\\"', '"').replace("\\\\", "\\")


def parse_slog_fields(line: str) -> dict[str, str] | None:
    """`time=... level=INFO source=f.go:1 msg="..." k=v k="q \\" v"` -> dict; None if malformed
    (a truncated quoted value or stray text makes the whole line malformed)."""
    if not _SLOG_FULL.fullmatch(line):
        return None
    return {key: _unquote(value) for key, value in _SLOG_PAIR.findall(line)}


def parse_go_struct(text: str) -> dict[str, str]:
    """Go's `%+v` of a struct or map: `map[A:1 B: C:[x y]]` or `{Op:commit Layers:35[ID:0 L:1]}`.

    Splits top-level `Key:value` tokens on spaces outside brackets; values stay strings.
    """
    text = text.strip()
    if text.startswith("map[") and text.endswith("]"):
        text = text[4:-1]
    elif text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    tokens: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == " " and depth == 0:
            if i > start:
                tokens.append(text[start:i])
            start = i + 1
    if start < len(text):
        tokens.append(text[start:])
    result: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition(":")
        if sep and key:
            result[key] = value
        elif result:  # a value with a space we did not expect: keep it with the previous key
            last = next(reversed(result))
            result[last] += " " + token
    return result


_GO_TRUE = {"1", "t", "true"}
_GO_FALSE = {"0", "f", "false"}


def env_flag(value: str | None) -> bool | None:
    """An OLLAMA_* boolean as Ollama reads it: unset/empty -> None; not a boolean -> True."""
    if value is None or value.strip() == "":
        return None
    text = value.strip().lower()
    if text in _GO_FALSE:
        return False
    return True  # Ollama: a value that does not parse as a boolean counts as true


def flash_attention_state(value: str | None) -> bool | None:
    """`FlashAttention:Enabled` / `--flash-attn on` style values -> True/False; auto/unknown -> None."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in {"enabled", "on", "1", "true", "t", "yes"}:
        return True
    if text in {"disabled", "off", "0", "false", "f", "no"}:
        return False
    return None


def parse_runner_cmd(cmd: str) -> dict[str, Any]:
    """The runner command line of a `starting runner` / `starting llama-server` line."""
    args = cmd.split()
    info: dict[str, Any] = {"cmd": cmd}
    if args:
        exe = args[0].rsplit("/", 1)[-1]
        info["runner"] = "ollama runner" if exe == "ollama" and "runner" in args[1:2] else exe
    for i, arg in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg == "--model" and nxt:
            info["model"] = nxt
        elif arg == "--port" and nxt and nxt.isdigit():
            info["port"] = int(nxt)
        elif arg in ("--flash-attn", "-fa") and nxt and not nxt.startswith("-"):
            info["flash_attn"] = nxt
        elif arg in ("--flash-attn", "-fa", "--flash_attn"):
            info["flash_attn"] = "on"  # older runners: a bare switch
        elif arg == "--mmproj" and nxt:
            info["mmproj"] = nxt
        elif arg in ("-np", "--parallel") and nxt and nxt.isdigit():
            info["parallel"] = int(nxt)
        elif arg in ("-c", "--ctx-size") and nxt and nxt.isdigit():
            info["ctx_size"] = int(nxt)
        elif arg == "--ollama-engine":
            info["ollama_engine"] = True
    info["flash_attention"] = flash_attention_state(info.get("flash_attn"))
    return info


_STARTING = ("starting runner", "starting llama-server", "starting llama server")
_STARTED_RE = re.compile(r"^(?:llama runner|llama-server|llama server) started in ([\d.]+) seconds")
_GONE = ("llama runner process no longer running", "llama-server process no longer running")
_CORE_KEYS = ("time", "level", "msg")


def classify_slog(fields: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(kind, detail) of a parsed slog line; detail holds every non-core key plus what we derive."""
    msg = fields.get("msg", "")
    detail: dict[str, Any] = {k: v for k, v in fields.items() if k not in _CORE_KEYS}
    if msg == "server config":
        env = parse_go_struct(fields.get("env", ""))
        detail["env"] = env
        detail["flash_attention"] = env_flag(env.get("OLLAMA_FLASH_ATTENTION"))
        return "server_config", detail
    if msg in _STARTING:
        detail.update(parse_runner_cmd(fields.get("cmd", "")))
        return "runner_start", detail
    started = _STARTED_RE.match(msg)
    if started:
        detail["seconds"] = float(started.group(1))
        return "runner_started", detail
    if msg.startswith("error loading llama server") and any("signal: killed" in v for v in fields.values()):
        detail["signal"] = "killed"
        return "signal_killed", detail
    if msg in _GONE or msg.startswith(_GONE):
        if any("signal: killed" in v for v in fields.values()):
            detail["signal"] = "killed"
        return "runner_gone", detail
    if "runtime OOM detected" in msg:
        return "oom", detail
    if msg == "load" and "request" in fields:
        request = parse_go_struct(fields["request"])
        detail["request"] = request
        detail["flash_attention"] = flash_attention_state(request.get("FlashAttention"))
        return "load_request", detail
    if msg.startswith("aborting completion request due to client closing the connection"):
        return "client_abort", detail
    return "other", detail


# --- raw llama-server lines ---------------------------------------------------------------------
_PRINT_TIMING = re.compile(
    r"slot print_timing: id\s+\d+ \| task (\d+) \|\s*(prompt eval|eval|total) time =\s*([\d.]+) ms /\s*(\d+) tokens"
)
_LAUNCH = re.compile(r"slot launch_slot_: id\s+\d+ \| task (\d+) \|")
_IMG_ENCODED = re.compile(r"image slice encoded in ([\d.]+) ms")
_IMG_DECODED = re.compile(r"image decoded \(batch \d+/\d+\) in ([\d.]+) ms")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


# --- harness runner.log -------------------------------------------------------------------------
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


# --- results ------------------------------------------------------------------------------------
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

    def add(self, other: ParseCounts) -> None:
        self.requests += other.requests
        self.timings += other.timings
        self.junk += other.junk
        self.unrecognized += other.unrecognized
        self.lines += other.lines
        for mine, theirs in ((self.events, other.events), (self.harness, other.harness)):
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
        }


class Rows:
    """Column lists per table; `take()` hands them over and starts empty ones."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[str, list[Any]]] = {
            table: {c: [] for c in cols} for table, cols in COLUMNS.items()
        }

    def count(self, table: str) -> int:
        return len(self.columns[table]["line_no"])

    def total(self) -> int:
        return sum(self.count(t) for t in self.columns)

    def take(self) -> dict[str, dict[str, list[Any]]]:
        taken = self.columns
        self.columns = {table: {c: [] for c in cols} for table, cols in COLUMNS.items()}
        return taken


@dataclass
class _Task:
    task_id: int
    line_no: int
    prompt_eval_ms: float | None = None
    prompt_tokens: int | None = None
    eval_ms: float | None = None
    eval_tokens: int | None = None
    total_ms: float | None = None
    image_encode_ms: float | None = None
    image_decode_ms: float | None = None

    def add_image(self, encode_ms: float | None, decode_ms: float | None) -> None:
        if encode_ms is not None:
            self.image_encode_ms = (self.image_encode_ms or 0.0) + encode_ms
        if decode_ms is not None:
            self.image_decode_ms = (self.image_decode_ms or 0.0) + decode_ms


def _split_chunk(data: bytes) -> list[str | None]:
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


class ServerLogParser:
    """Stateful parser of one server.log stream (state: timing rows waiting for a time).

    Feed lines in order with their 1-based line numbers; rows accumulate in `rows` until
    taken. Call `finish()` at the end of the input to emit rows still waiting.
    """

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self.rows = Rows()
        self.counts = ParseCounts()
        self.last_ts: int | None = None  # epoch µs of the last timed line
        self._tasks: dict[int, _Task] = {}  # tasks with timing lines, total not yet seen
        self._waiting: list[_Task] = []  # complete tasks waiting for the next timed line
        self._launched: int | None = None  # most recently launched task (owns image lines)
        self._orphan_image: list[float | None] = [None, None]  # image ms seen before any task

    # -- feeding
    def feed_bytes(self, data: bytes, first_line_no: int) -> None:
        """`data` holds whole lines (ending with a newline)."""
        self.feed_lines(_split_chunk(data), first_line_no)

    def feed_lines(self, lines: Iterable[str | None], first_line_no: int) -> None:
        gin = self._gin
        slog = self._slog
        raw = self._raw
        counts = self.counts
        line_no = first_line_no - 1
        for line in lines:
            line_no += 1
            if line is None or len(line) > MAX_LINE_CHARS:
                counts.junk += 1
                continue
            if line.endswith("\r"):
                line = line[:-1]
            if line.startswith("[GIN] "):
                gin(line, line_no)
            elif line.startswith("time="):
                slog(line, line_no)
            elif line.startswith(("slot ", "image ")):
                raw(line, line_no)
            elif not line or line.isspace():
                continue
            elif _CONTROL.search(line):
                counts.junk += 1
            else:
                counts.unrecognized += 1
        counts.lines += line_no - first_line_no + 1

    # -- timed lines
    def _timed(self, ts: int) -> None:
        self.last_ts = ts
        if self._waiting:
            for task in self._waiting:
                self._emit_timing(task, ts)
            self._waiting.clear()

    def _gin(self, line: str, line_no: int) -> None:
        parts = line.split("|", 4)
        try:
            if len(parts) != 5:
                raise ValueError(line)
            ts = self.clock.gin_epoch_us(parts[0][6:].rstrip())
            status = int(parts[1])
            latency_ms = go_duration_ms(parts[2].strip())
            method, _, path = parts[4].strip().partition(" ")
            path = path.strip()
            if latency_ms is None or not method or len(path) < 2 or path[0] != '"' or path[-1] != '"':
                raise ValueError(line)
        except (ValueError, IndexError):
            self.counts.junk += 1
            return
        self._timed(ts)
        cols = self.rows.columns["log_requests"]
        cols["ts"].append(ts)
        cols["status"].append(status)
        cols["latency_ms"].append(latency_ms)
        cols["client"].append(parts[3].strip())
        cols["method"].append(method)
        cols["path"].append(path[1:-1])
        cols["line_no"].append(line_no)
        self.counts.requests += 1

    def _slog(self, line: str, line_no: int) -> None:
        fields = parse_slog_fields(line)
        if fields is None or "time" not in fields:
            self.counts.junk += 1
            return
        try:
            ts = _rfc3339_us(fields["time"], self.clock)
        except (ValueError, OverflowError):
            self.counts.junk += 1
            return
        self._timed(ts)
        kind, detail = classify_slog(fields)
        cols = self.rows.columns["log_events"]
        cols["ts"].append(ts)
        cols["level"].append(fields.get("level"))
        cols["msg"].append(fields.get("msg"))
        cols["kind"].append(kind)
        cols["detail"].append(json.dumps(detail, ensure_ascii=False))
        cols["line_no"].append(line_no)
        events = self.counts.events
        events[kind] = events.get(kind, 0) + 1

    # -- raw runner lines
    def _raw(self, line: str, line_no: int) -> None:
        m = _PRINT_TIMING.match(line) if line.startswith("slot print_timing") else None
        if m:
            task_id = int(m.group(1))
            task = self._task(task_id, line_no)
            value, tokens = float(m.group(3)), int(m.group(4))
            which = m.group(2)
            if which == "prompt eval":
                task.prompt_eval_ms, task.prompt_tokens = value, tokens
            elif which == "eval":
                task.eval_ms, task.eval_tokens = value, tokens
            else:
                task.total_ms = value
                del self._tasks[task_id]
                self._waiting.append(task)
                if self._launched == task_id:
                    self._launched = None
            return
        m = _LAUNCH.match(line) if line.startswith("slot launch_slot_") else None
        if m:
            self._launched = int(m.group(1))
            self._task(self._launched, line_no)
            return
        encoded = _IMG_ENCODED.match(line)
        decoded = None if encoded else _IMG_DECODED.match(line)
        if encoded or decoded:
            encode_ms = float(encoded.group(1)) if encoded else None
            decode_ms = float(decoded.group(1)) if decoded else None
            owner = self._tasks.get(self._launched) if self._launched is not None else None
            if owner is not None:
                owner.add_image(encode_ms, decode_ms)
            else:
                pending = self._orphan_image
                if encode_ms is not None:
                    pending[0] = (pending[0] or 0.0) + encode_ms
                if decode_ms is not None:
                    pending[1] = (pending[1] or 0.0) + decode_ms
            return
        if _CONTROL.search(line):
            self.counts.junk += 1
        else:
            self.counts.unrecognized += 1  # other llama-server chatter

    def _task(self, task_id: int, line_no: int) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = _Task(task_id, line_no)
            if self._orphan_image != [None, None]:
                task.add_image(*self._orphan_image)
                self._orphan_image = [None, None]
        return task

    def _emit_timing(self, task: _Task, ts: int | None) -> None:
        cols = self.rows.columns["log_timings"]
        cols["ts"].append(ts)
        cols["task_id"].append(task.task_id)
        cols["prompt_eval_ms"].append(task.prompt_eval_ms)
        cols["prompt_tokens"].append(task.prompt_tokens)
        cols["eval_ms"].append(task.eval_ms)
        cols["eval_tokens"].append(task.eval_tokens)
        cols["total_ms"].append(task.total_ms)
        cols["image_encode_ms"].append(task.image_encode_ms)
        cols["image_decode_ms"].append(task.image_decode_ms)
        cols["line_no"].append(task.line_no)
        self.counts.timings += 1

    @property
    def pending(self) -> int:
        """Timing rows not emitted yet (waiting for a timed line, or without a total line)."""
        return len(self._waiting) + len(self._tasks)

    def finish(self) -> None:
        """End of input: emit waiting rows with the previous timed line's time, and unfinished
        tasks (no `total time` line yet) as partial rows, in line order."""
        leftovers = sorted([*self._waiting, *self._tasks.values()], key=lambda t: t.line_no)
        for task in leftovers:
            self._emit_timing(task, self.last_ts)
        self._waiting.clear()
        self._tasks.clear()
        self._launched = None


class HarnessLogParser:
    """Parser of the harness's runner.log (`YYYY-MM-DD HH:MM:SS message`, naive local time)."""

    def __init__(self, clock: LocalClock) -> None:
        self.clock = clock
        self.rows = Rows()
        self.counts = ParseCounts()

    def feed_bytes(self, data: bytes, first_line_no: int) -> None:
        self.feed_lines(_split_chunk(data), first_line_no)

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
                    if _CONTROL.search(line):
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
