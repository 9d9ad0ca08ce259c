"""Which flash-attention setting the Ollama server is running with, and where we read it.

Order: the server's environment (OLLAMA_FLASH_ATTENTION; unreadable on macOS since Big Sur),
else the server log's `msg="server config" env="map[...]"` line, else its `load request=
"{... FlashAttention:...}"` line, else the runner's `--flash-attn`. Only the tail of the log
is read (last ~1 MB; server.log can reach tens of MB), and the latest line of each kind wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from oasis_ops.probes.processes import parse_runner_cmdline

LOG_TAIL_BYTES = 1_000_000
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

_CONFIG_LINE = re.compile(r'msg="server config".*?\bOLLAMA_FLASH_ATTENTION:([^\s\]]*)')
_LOAD_REQUEST = re.compile(r'load request="?\{[^}]*?\bFlashAttention:([A-Za-z0-9]+)')
_LOAD_WORDS = {
    "enabled": "on",
    "true": "on",
    "disabled": "off",
    "false": "off",
    "auto": "auto",
}


@dataclass(frozen=True)
class FlashAttentionSetting:
    value: str | None  # "on" | "off" | "auto" | None (unknown)
    source: str  # "environment" | "server log config" | "server log load request" | "runner --flash-attn" | "unknown"
    detail: str

    def as_dict(self) -> dict[str, str | None]:
        return {"value": self.value, "source": self.source, "detail": self.detail}


def env_flag_value(raw: str) -> str | None:
    """OLLAMA_FLASH_ATTENTION as Ollama reads it: trimmed of quotes/spaces; empty = unset
    (None); Go ParseBool words; anything else counts as true."""
    text = raw.strip().strip("\"'").strip()
    if not text:
        return None
    if text in _GO_FALSE:
        return "off"
    return "on"  # _GO_TRUE, and any value that does not parse as a boolean


def read_log_tail(path: str | os.PathLike[str], max_bytes: int = LOG_TAIL_BYTES) -> str:
    """The last `max_bytes` of a log, from the first whole line; "" when unreadable."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - max_bytes)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    if start > 0:
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else b""
    return data.decode("utf-8", errors="replace")


def flash_attention(
    serve_environ: Mapping[str, str] | None = None,
    server_log_path: str | os.PathLike[str] | None = None,
    runner_cmdlines: Iterable[Iterable[str]] = (),
    *,
    log_text: str | None = None,
) -> FlashAttentionSetting:
    """The effective setting and its source. `log_text` may replace reading the file."""
    unset_note = ""
    if serve_environ:  # None or {}: not readable (macOS hides other processes' environment)
        raw = serve_environ.get("OLLAMA_FLASH_ATTENTION")
        value = env_flag_value(raw) if raw is not None else None
        if value is not None:
            return FlashAttentionSetting(value, "environment", f"OLLAMA_FLASH_ATTENTION={raw!r}")
        unset_note = "OLLAMA_FLASH_ATTENTION unset in the server's environment; "

    runner_flags = [
        command.flash_attn
        for argv in runner_cmdlines
        if (command := parse_runner_cmdline(argv)) is not None and command.flash_attn is not None
    ]

    if log_text is None and server_log_path:
        log_text = read_log_tail(server_log_path)
    if log_text:
        config = _CONFIG_LINE.findall(log_text)
        if config:
            raw = config[-1]
            value = env_flag_value(raw)
            if value is not None:
                detail = unset_note + f"server config OLLAMA_FLASH_ATTENTION:{raw}"
                if value == "off" and runner_flags:
                    # >= 0.30 prints false when unset (= auto): the runner's flag is exact
                    return FlashAttentionSetting(
                        runner_flags[0], "runner --flash-attn", detail + f"; runner has --flash-attn {runner_flags[0]}"
                    )
                return FlashAttentionSetting(value, "server log config", detail)
        loads = _LOAD_REQUEST.findall(log_text)
        if loads:
            raw = loads[-1]
            value = _LOAD_WORDS.get(raw.lower())
            if value is not None:
                return FlashAttentionSetting(
                    value, "server log load request", unset_note + f"load request FlashAttention:{raw}"
                )

    if runner_flags:
        return FlashAttentionSetting(
            runner_flags[0], "runner --flash-attn", unset_note + f"runner command line: --flash-attn {runner_flags[0]}"
        )

    if unset_note:
        return FlashAttentionSetting(
            None,
            "environment",
            unset_note + "Ollama's default applies (auto on >= 0.30, per-model allow-list on 0.11.8-0.24)",
        )
    return FlashAttentionSetting(None, "unknown", "no readable environment, log line or runner flag")


def default_server_log(value: str | None = None) -> Path | None:
    """The server_log setting, else ~/.ollama/logs/server.log when it exists."""
    if value:
        return Path(value).expanduser()
    path = Path.home() / ".ollama" / "logs" / "server.log"
    return path if path.is_file() else None
