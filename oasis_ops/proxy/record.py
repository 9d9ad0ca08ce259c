"""What the proxy records: which requests are trials, and what their answers said.

A trial is one model call: `POST` to a generation or embedding endpoint of Ollama's native API
(`/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`) or of its OpenAI-compatible one
(`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`). A native
generate or chat with no prompt and no messages only loads or unloads a model (Ollama's own
documented use, `keep_alive: 0` included): it is passed through, neither queued nor recorded.

Answers are read from a bounded tail (the last TAIL_BYTES of the body), never kept whole: the
token counts are in the last NDJSON line (native: `prompt_eval_count`, `eval_count`), in the
`usage` object (OpenAI-compatible; a stream carries it only when the client asked for
`stream_options.include_usage`), and an error that arrives inside a 200 stream is the last line
or event, `{"error": ...}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TRIAL_PATHS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
})  # fmt: skip
TAIL_BYTES = 64 * 1024
MAX_REASON_CHARS = 300

_COUNTS = {
    "prompt_tokens": (re.compile(rb'"prompt_eval_count"\s*:\s*(\d{1,12})'), re.compile(rb'"prompt_tokens"\s*:\s*(\d{1,12})'),
                      re.compile(rb'"input_tokens"\s*:\s*(\d{1,12})')),
    "completion_tokens": (re.compile(rb'"eval_count"\s*:\s*(\d{1,12})'), re.compile(rb'"completion_tokens"\s*:\s*(\d{1,12})'),
                          re.compile(rb'"output_tokens"\s*:\s*(\d{1,12})')),
}  # fmt: skip


@dataclass(frozen=True)
class RequestInfo:
    is_trial: bool
    model: str | None
    stream: bool


def classify(method: str, path: str, body: bytes) -> RequestInfo:
    """Whether a request is a trial, its model, and whether its answer streams."""
    if method != "POST" or path not in TRIAL_PATHS:
        return RequestInfo(False, None, False)
    try:
        data = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):  # Ollama answers 400; the harness saw a failed call
        return RequestInfo(True, None, False)
    model = data.get("model")
    model = str(model)[:200] if model is not None else None
    native = path.startswith("/api/")
    stream_flag = data.get("stream")
    # native generate/chat stream unless told not to; the OpenAI API only when asked
    stream = (stream_flag is not False) if native and path in ("/api/generate", "/api/chat") else stream_flag is True
    if path in ("/api/generate", "/api/chat") and not data.get("prompt") and not data.get("messages") \
            and not data.get("suffix") and not data.get("images"):  # fmt: skip
        return RequestInfo(False, model, stream)  # a load or unload request
    return RequestInfo(True, model, stream)


class Tail:
    """The last `size` bytes of a body, plus its total length."""

    def __init__(self, size: int = TAIL_BYTES) -> None:
        self.size = size
        self.buffer = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buffer += chunk
        if len(self.buffer) > self.size:
            del self.buffer[: len(self.buffer) - self.size]

    @property
    def data(self) -> bytes:
        return bytes(self.buffer)


def token_counts(tail: bytes) -> dict[str, int | None]:
    """prompt_tokens / completion_tokens from the tail (the last mention of each wins)."""
    out: dict[str, int | None] = {}
    for key, patterns in _COUNTS.items():
        value = None
        for pattern in patterns:
            found = pattern.findall(tail)
            if found:
                value = int(found[-1])
                break
        out[key] = value
    return out


def _error_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("message") or value.get("error") or json.dumps(value)[:MAX_REASON_CHARS]
    if value is None or value == "":
        return None
    return " ".join(str(value).split())[:MAX_REASON_CHARS]


def _last_record(tail: bytes) -> Any:
    """The last NDJSON line or SSE event of the tail, parsed (None if it does not parse)."""
    for raw in reversed(tail.splitlines()):
        line = raw.strip()
        if not line or line.startswith(b":") or line.startswith(b"event:"):
            continue
        if line.startswith(b"data:"):
            line = line[5:].strip()
            if line == b"[DONE]":
                continue
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            return None
    return None


def error_in_body(tail: bytes) -> str | None:
    """The error an answer carries (its whole JSON body, or the last line/event of a stream)."""
    try:
        data = json.loads(tail)
    except (ValueError, RecursionError):
        data = _last_record(tail)
    if isinstance(data, dict) and data.get("error"):
        return _error_text(data["error"])
    return None


def upstream_reason(status: int, tail: bytes) -> str:
    """`upstream 500: <Ollama's message>` for an error status."""
    message = error_in_body(tail)
    if message is None:
        text = tail[:MAX_REASON_CHARS].decode("utf-8", "replace").strip()
        message = " ".join(text.split()) or "no body"
    return f"upstream {status}: {message}"
