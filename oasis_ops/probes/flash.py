"""Flash attention: one answer, from one place, for status, preflight, diagnosis and the Live page.

Per loaded model (`model_flash_attention`), the first of these that says something wins:
1. the server's environment, `OLLAMA_FLASH_ATTENTION` (unreadable on macOS since Big Sur); the
   `server config` log line stands in for it when it says true (it prints false when unset,
   so false there proves nothing);
2. the runner's own command line, `--flash-attn on|off` (llama-server, Ollama >= 0.30);
3. what the server log says of this model's load, newest first: `FlashAttention:Enabled` in a
   load request, `enabling flash attention` before its runner started, llama.cpp's
   `llama_context: flash_attn = ...` / `Flash Attention was auto, set to enabled`;
4. the default of that Ollama version for the model's architecture (`general.architecture` in
   the GGUF header of the runner's `--model` blob, or /api/show): see oasis_ops.ollama_versions.
"auto" (llama-server's default, llama.cpp-engine models on 0.13.4 - 0.24) resolves to on: llama.cpp
turns flash attention on wherever the device supports it (CPU, Metal, CUDA >= 6.0, ROCm,
Vulkan), unless the log says it resolved otherwise. So the answer is never "off" or unknown
when it is on; `setting` keeps what was asked (on/off/auto) and `source` says where it was read.

Only the tail of the server log is read (last ~1 MB; server.log can reach tens of MB).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oasis_ops.ollama_versions import flash_attention_default
from oasis_ops.probes.processes import blob_key, parse_runner_cmdline

LOG_TAIL_BYTES = 1_000_000
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
AUTO_MEANS = "llama.cpp turns it on wherever the device supports it (CPU, Metal, CUDA >= 6.0, ROCm, Vulkan)"


@dataclass(frozen=True)
class FlashAttentionSetting:
    value: str | None  # effective: "on" | "off" | None (unknown)
    source: str  # "environment" | "server log config" | "runner --flash-attn" | "server log" | "version default" | "unknown"
    detail: str
    setting: str | None = None  # what was asked: "on" | "off" | "auto" | None

    def as_dict(self) -> dict[str, str | None]:
        return {"value": self.value, "setting": self.setting, "source": self.source, "detail": self.detail}


def env_flag_value(raw: str) -> str | None:
    """OLLAMA_FLASH_ATTENTION as Ollama reads it: trimmed of quotes/spaces; empty = unset
    (None); Go ParseBool words; anything else counts as true."""
    text = raw.strip().strip("\"'").strip()
    if not text:
        return None
    if text in _GO_FALSE:
        return "off"
    return "on"  # Go's true words, and any value that does not parse as a boolean


def read_log_tail(path: str | os.PathLike[str], max_bytes: int = LOG_TAIL_BYTES) -> str:
    """The last `max_bytes` of a log, from the first whole line; "" when unreadable or not a
    regular file (a FIFO or /dev/zero must never hang or flood us)."""
    try:
        if not Path(path).is_file():
            return ""
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - max_bytes)
            # one byte before the tail: a tail that starts right after a newline keeps its first line
            handle.seek(max(0, start - 1))
            data = handle.read(max_bytes + (start > 0))
    except OSError:
        return ""
    if start > 0:
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else b""
    return data.decode("utf-8", errors="replace")


def log_statements(log_text: str) -> list[dict[str, Any]]:
    """What the log says about flash attention, oldest first (see oasis_ops.logs.parse)."""
    from oasis_ops.logs.flashlog import flash_attention_statements

    return flash_attention_statements(log_text.splitlines())


def _environment(serve_environ: Mapping[str, str] | None, statements: Sequence[Mapping[str, Any]]) -> FlashAttentionSetting | None:
    if serve_environ:  # None or {}: not readable (macOS hides other processes' environment)
        raw = serve_environ.get("OLLAMA_FLASH_ATTENTION")
        value = env_flag_value(raw) if raw is not None else None
        if value is not None:
            return FlashAttentionSetting(value, "environment", f"OLLAMA_FLASH_ATTENTION={raw!r} in the server's environment", value)
        return None
    config = [s for s in statements if s.get("source") == "server config"]
    if config and config[-1].get("value") is True:
        return FlashAttentionSetting("on", "server log config", f"server config: {config[-1].get('evidence')}", "on")
    return None


def _resolved(setting: str, source: str, detail: str, statements: Sequence[Mapping[str, Any]], blob: str | None) -> FlashAttentionSetting:
    """`setting` (on/off/auto) -> the effective value; auto is settled by llama.cpp's own line if any."""
    if setting != "auto":
        return FlashAttentionSetting(setting, source, detail, setting)
    mine = _for_blob(statements, blob)
    settled = [s for s in mine if s.get("source") == "llama.cpp context" and s.get("value") is not None]
    if settled:
        last = settled[-1]
        value = "on" if last["value"] else "off"
        return FlashAttentionSetting(value, source, f"{detail}; llama.cpp resolved it: {last.get('evidence')}", "auto")
    return FlashAttentionSetting("on", source, f"{detail}; auto: {AUTO_MEANS}", "auto")


def _for_blob(statements: Sequence[Mapping[str, Any]], blob: str | None) -> list[Mapping[str, Any]]:
    if blob is None:
        return [s for s in statements if s.get("model") is None]
    key = blob_key(blob)
    return [s for s in statements if s.get("model") is not None and blob_key(str(s["model"])) == key]


def model_flash_attention(
    *,
    serve_environ: Mapping[str, str] | None = None,
    runner_cmdline: Iterable[str] | None = None,
    blob: str | None = None,
    architecture: str | None = None,
    version: str | None = None,
    statements: Sequence[Mapping[str, Any]] = (),
) -> FlashAttentionSetting:
    """The effective flash-attention setting of one loaded model, and where it was read."""
    env = _environment(serve_environ, statements)
    if env is not None:
        return env
    command = parse_runner_cmdline(runner_cmdline) if runner_cmdline else None
    if command is not None and command.flash_attn is not None:
        return _resolved(command.flash_attn, "runner --flash-attn", f"runner pid's command line: --flash-attn {command.flash_attn}",
                         statements, blob or command.model)  # fmt: skip
    blob = blob or (command.model if command else None)
    said = [s for s in _for_blob(statements, blob)
            if s.get("source") in ("load request", "enabling flash attention", "flash attention not supported", "runner cmd")]
    if said:
        last = said[-1]
        value = {True: "on", False: "off"}.get(last.get("value"), "auto")  # type: ignore[arg-type]
        return _resolved(value, "server log", f"server.log: {last.get('evidence')}", statements, blob)
    default = flash_attention_default(version, architecture)
    if default.value is None:
        return FlashAttentionSetting(None, "unknown", default.detail, None)
    return _resolved(default.value, "version default", default.detail, statements, blob)


def server_flash_attention(
    serve_environ: Mapping[str, str] | None = None,
    statements: Sequence[Mapping[str, Any]] = (),
    *,
    version: str | None = None,
) -> FlashAttentionSetting:
    """The server-wide setting, when no model is loaded to answer for: the environment (or the
    log's server config), else "per model: the version's default applies"."""
    env = _environment(serve_environ, statements)
    if env is not None:
        return env
    readable = "unset in the server's environment" if serve_environ else "not readable from the server's environment"
    detail = f"OLLAMA_FLASH_ATTENTION {readable}: Ollama {version or '(version unknown)'} decides per model"
    return FlashAttentionSetting(None, "version default", detail + " (see each loaded model's answer)", None)


def default_server_log(value: str | None = None) -> Path | None:
    """The server_log setting, else ~/.ollama/logs/server.log when it exists."""
    if value:
        return Path(value).expanduser()
    path = Path.home() / ".ollama" / "logs" / "server.log"
    return path if path.is_file() else None
