"""Go's text formats in server.log: slog key=value lines, `%+v` structs, OLLAMA_* flags, runner
command lines, and what kind of event a line is.

Pure functions on strings. slog lines are `time=... level=... source=... msg="..." k=v` with
quoted keys where slog needs them (`"model layers"=36`), Windows paths in values, and duplicate
keys kept as `msg#2` (the MLX runner's lines, wrapped by Ollama). Go's plain-logger lines of
versions before mid-2025 (`2025/02/16 20:51:57 routes.go:1186: INFO server config env=...`,
`llama runner started in 9.200880 seconds`) carry the same attributes after their message.
`classify_slog` names the event kinds (EVENT_KINDS in oasis_ops.logs.rows); a runner spawn
without `--model` is GPU discovery (`runner_discovery`), never a load.
"""

from __future__ import annotations

import json
import re
from typing import Any

# --- slog key=value lines -----------------------------------------------------------------------
_SLOG_VALUE = r'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)'
_SLOG_FULL = re.compile(r"\s*(?:[A-Za-z_][\w.\-]*=" + _SLOG_VALUE + r"\s*)+")
_SLOG_PAIR = re.compile(r"([A-Za-z_][\w.\-]*)=(" + _SLOG_VALUE + r")")
# slog quotes a key that needs it (`"model layers"=36`, `"MLX version"=v0.29.1`)
_SLOG_QKEY = r'(?:[A-Za-z_][\w.\-]*|"[^"\\]*(?:\\.[^"\\]*)*")'
_SLOG_QFULL = re.compile(r"\s*(?:" + _SLOG_QKEY + "=" + _SLOG_VALUE + r"\s*)+")
_SLOG_QPAIR = re.compile("(" + _SLOG_QKEY + ")=(" + _SLOG_VALUE + ")")


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


def _pairs_to_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """First occurrence wins; a repeated key is kept as `key#2`, `key#3` (the MLX wrapper logs
    `msg=mlx-runner msg="<the runner's own line>"`)."""
    out: dict[str, str] = {}
    for key, value in pairs:
        key = _unquote(key)
        if key in out:
            n = 2
            while f"{key}#{n}" in out:
                n += 1
            key = f"{key}#{n}"
        out[key] = _unquote(value)
    return out


def parse_slog_fields(line: str) -> dict[str, str] | None:
    """`time=... level=INFO source=f.go:1 msg="..." k=v k="q \\" v"` -> dict; None if malformed
    (a truncated quoted value or stray text makes the whole line malformed)."""
    pairs = _SLOG_PAIR.findall(line)
    # one regex pass: the pairs, joined back with single spaces, must BE the line (what slog
    # prints); otherwise the full grammar decides (extra spaces, or a malformed line)
    if (pairs and " ".join(map("=".join, pairs)) == line) or _SLOG_FULL.fullmatch(line):
        fields = {key: _unquote(value) for key, value in pairs}
        return fields if len(fields) == len(pairs) else _pairs_to_dict(pairs)
    if '"=' in line and _SLOG_QFULL.fullmatch(line):
        return _pairs_to_dict(_SLOG_QPAIR.findall(line))
    return None


# an slog line's RFC 3339 time with its offset (read from a file's head, see ServerLogParser)
SLOG_TIME_OFFSET = re.compile(r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(Z|[+-]\d\d:\d\d)\b")

# Go's standard logger: `2025/02/16 20:51:57 routes.go:1186: INFO server config env=...`
GO_PLAIN = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? (?:([\w.\-]+\.go:\d+): )?(.*)")
PLAIN_LEVEL = re.compile(r"(TRACE|DEBUG|INFO|WARN|ERROR)(?:[+-]\d+)? (.*)")
PLAIN_ATTR = re.compile(r" (?=[A-Za-z_][\w.\-]*=|\"[^\"]*\"=)")


# --- Go values ----------------------------------------------------------------------------------
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


def is_int(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _exe_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def parse_runner_cmd(cmd: str) -> dict[str, Any]:
    """The runner command line of a `starting runner` / `starting llama-server` line.

    Go prints exec.Cmd unquoted, so a Windows path with spaces (`C:\\Program Files\\...`) spans
    several tokens: the executable is everything before the first option (or `runner`)."""
    args = cmd.split()
    info: dict[str, Any] = {"cmd": cmd}
    head = 0
    while head < len(args) and not args[head].startswith("-") and args[head] != "runner":
        head += 1
    if head:
        exe = _exe_name(" ".join(args[:head]))
        base = exe[:-4] if exe.lower().endswith(".exe") else exe
        info["runner"] = "ollama runner" if base == "ollama" and args[head : head + 1] == ["runner"] else base
    for i, arg in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        if arg in ("--model", "-m") and nxt and not nxt.startswith("--"):
            info["model"] = nxt
        elif arg == "--port" and nxt and is_int(nxt):
            info["port"] = int(nxt)
        elif arg in ("--flash-attn", "-fa") and nxt and not nxt.startswith("-"):
            info["flash_attn"] = nxt
            info["flash_evidence"] = f"{arg} {nxt}"
        elif arg in ("--flash-attn", "-fa", "--flash_attn"):
            info["flash_attn"] = "on"  # older runners: a bare switch
            info["flash_evidence"] = arg
        elif arg == "--mmproj" and nxt:
            info["mmproj"] = nxt
        elif arg in ("-np", "--parallel") and nxt and is_int(nxt):
            info["parallel"] = int(nxt)
        elif arg in ("-c", "--ctx-size") and nxt and is_int(nxt):
            info["ctx_size"] = int(nxt)
        elif arg == "--ollama-engine":
            info["ollama_engine"] = True
        elif arg == "--mlx-engine":
            info["engine"] = "mlx"
        elif arg in ("--embedding", "--embeddings"):
            info["embedding"] = True
    info["flash_attention"] = flash_attention_state(info.get("flash_attn"))
    if "flash_attn" in info:
        info["flash_source"] = "runner cmd"
    return info


# --- event kinds --------------------------------------------------------------------------------
_STARTING = ("starting runner", "starting llama-server", "starting llama server")
_STARTED_RE = re.compile(r"^(?:llama runner|llama-server|llama server) started in (\d+(?:\.\d+)?) seconds")
_GONE = ("llama runner process no longer running", "llama-server process no longer running")
_CORE_KEYS = ("time", "level", "msg")
_NOT_SUPPORTED = "flash attention enabled but not supported by"


def classify_slog(fields: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(kind, detail) of a parsed slog line; detail holds every non-core key plus what we derive."""
    msg = fields.get("msg", "")
    detail: dict[str, Any] = {k: v for k, v in fields.items() if k not in _CORE_KEYS}
    if msg == "server config":
        env = parse_go_struct(fields.get("env", ""))
        detail["env"] = env
        detail["flash_attention"] = env_flag(env.get("OLLAMA_FLASH_ATTENTION"))
        if "OLLAMA_FLASH_ATTENTION" in env:
            detail["flash_evidence"] = f"OLLAMA_FLASH_ATTENTION:{env['OLLAMA_FLASH_ATTENTION']}"
            detail["flash_source"] = "server config"
        return "server_config", detail
    if msg in _STARTING:
        detail.update(parse_runner_cmd(fields.get("cmd", "")))
        if fields.get("cmd") and not detail.get("model"):
            return "runner_discovery", detail  # GPU discovery: no --model, not a load
        return "runner_start", detail
    if msg == "starting llama runner":  # 0.1.x plain logger: a load, model not logged
        return "runner_start", detail
    if msg == "starting mlx runner subprocess":
        detail["engine"] = "mlx"
        port = fields.get("port", "")
        if is_int(port):
            detail["port"] = int(port)
        return "runner_start", detail
    if msg == "mlx runner is ready":
        port = fields.get("port", "")
        if is_int(port):
            detail["port"] = int(port)
        return "runner_started", detail
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
        if request.get("Operation"):
            detail["operation"] = request["Operation"]
        detail["flash_attention"] = flash_attention_state(request.get("FlashAttention"))
        if "FlashAttention" in request:
            detail["flash_evidence"] = f"FlashAttention:{request['FlashAttention']}"
            detail["flash_source"] = "load request"
        return "load_request", detail
    if msg.startswith("aborting completion request due to client closing the connection"):
        return "client_abort", detail
    if msg == "enabling flash attention":
        detail.update(flash_attention=True, flash_evidence=msg, flash_source="enabling flash attention")
        return "flash_attention", detail
    if msg.startswith(_NOT_SUPPORTED):
        detail.update(flash_attention=False, flash_evidence=msg, flash_source="flash attention not supported")
        return "flash_attention", detail
    if msg == "mlx-runner" and "msg#2" in fields:  # the MLX runner's own line, wrapped
        inner = parse_slog_fields(fields["msg#2"])
        if inner is not None:
            detail["inner"] = inner
    return "other", detail
