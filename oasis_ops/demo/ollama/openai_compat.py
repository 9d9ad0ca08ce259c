"""Ollama's OpenAI-compatible endpoints, done the way Ollama does them: a request to
`/v1/chat/completions` or `/v1/completions` becomes a native chat or generate request, and the
native answers are rewritten into OpenAI's shapes (Ollama's middleware/openai.go and
openai/openai.go, read at commit fb3076099 of ollama/ollama):

- ids `chatcmpl-N` / `cmpl-N` (N random below 999), `system_fingerprint` "fp_ollama", `created`
  from the answer's time; objects `chat.completion`, `chat.completion.chunk`, `text_completion`.
- `stream` defaults to false (OpenAI's default), unlike the native API.
- a stream is server-sent events, `data: {...}\\n\\n`, ending `data: [DONE]\\n\\n`; chat: the role in
  the first chunk, an empty trailing native chunk skipped, then a finish chunk (`finish_reason`
  from done_reason: "stop" or "length"), then, with `stream_options.include_usage`, a chunk with
  empty choices and the usage; completions: each chunk as `text_completion`, the last with its
  finish_reason (and usage when asked).
- usage: prompt_tokens = prompt_eval_count, completion_tokens = eval_count.
- errors: `{"error": {"message", "type", "param", "code"}}`, type `invalid_request_error` (400),
  `not_found_error` (404), else `api_error` (openai.NewError).
- options: max_tokens -> num_predict; temperature, seed, stop, top_p, frequency_penalty,
  presence_penalty passed on.
"""

from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime
from typing import Any

OPTION_FIELDS = ("temperature", "seed", "stop", "top_p", "frequency_penalty", "presence_penalty")


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


_GO_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _created(native: dict[str, Any]) -> int:
    """Unix seconds of a Go time (`2026-12-05T04:46:23.72316Z`, or with an offset); now if absent."""
    found = _GO_TIME.match(str(native.get("created_at") or ""))
    if not found:
        return int(time.time())
    zone = found.group(2) or "Z"
    return int(datetime.fromisoformat(found.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp())


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class OpenAIShape:
    """One OpenAI-compatible request: the native request it becomes, and its answers rewritten."""

    def __init__(self, kind: str, body: dict[str, Any]) -> None:
        self.kind = kind  # "chat" or "completion"
        self.body = body
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{random.randrange(999)}"
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.stream = body.get("stream") is True
        self._first = True

    @property
    def native_kind(self) -> str:
        return "chat" if self.kind == "chat" else "generate"

    def native_request(self) -> dict[str, Any]:
        body = self.body
        options: dict[str, Any] = {name: body[name] for name in OPTION_FIELDS if body.get(name) is not None}
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        native: dict[str, Any] = {"model": body.get("model"), "stream": self.stream, "options": options}
        if self.kind == "chat":
            native["messages"] = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        else:
            prompt = body.get("prompt")
            native["prompt"] = prompt[0] if isinstance(prompt, list) and prompt else prompt
            if body.get("suffix"):
                native["suffix"] = body["suffix"]
        return native

    def _usage(self, native: dict[str, Any]) -> dict[str, int]:
        prompt, completion = int(native.get("prompt_eval_count") or 0), int(native.get("eval_count") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _head(self, native: dict[str, Any], obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": _created(native), "model": native.get("model"),
                "system_fingerprint": "fp_ollama"}  # fmt: skip

    def final(self, native: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed answer."""
        reason = native.get("done_reason") or None
        if self.kind == "chat":
            message = native.get("message") or {}
            choice = {"index": 0, "message": {"role": message.get("role", "assistant"), "content": message.get("content", "")},
                      "finish_reason": reason}  # fmt: skip
            return {**self._head(native, "chat.completion"), "choices": [choice], "usage": self._usage(native)}
        choice = {"text": native.get("response", ""), "index": 0, "finish_reason": reason}
        return {**self._head(native, "text_completion"), "choices": [choice], "usage": self._usage(native)}

    def events(self, native: dict[str, Any]) -> bytes:
        """The SSE bytes for one native stream line (the last one ends with [DONE])."""
        if native.get("error"):
            return _sse(error_body(500, str(native["error"])))
        done = native.get("done") is True
        out = b""
        if self.kind == "chat":
            content = (native.get("message") or {}).get("content", "")
            if not (done and not self._first and not content):  # an empty trailer is not a chunk
                delta = {"role": "assistant", "content": content} if self._first else {"content": content}
                out += _sse({**self._head(native, "chat.completion.chunk"),
                             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})  # fmt: skip
                self._first = False
            if done:
                finish = {**self._head(native, "chat.completion.chunk"),
                          "choices": [{"index": 0, "delta": {}, "finish_reason": native.get("done_reason") or "stop"}]}  # fmt: skip
                out += _sse(finish)
                if self.include_usage:
                    out += _sse({**finish, "choices": [], "usage": self._usage(native)})
        else:
            chunk = {**self._head(native, "text_completion"),
                     "choices": [{"text": native.get("response", ""), "index": 0, "finish_reason": native.get("done_reason") or None}]}  # fmt: skip
            if self.include_usage:
                chunk["usage"] = self._usage(native) if done else {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out += _sse(chunk)
        if done:
            out += b"data: [DONE]\n\n"
        return out


def models_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /v1/models from /api/tags entries (ToListCompletion): owned_by is the name's namespace."""
    data = []
    for m in models:
        name = str(m.get("model") or m.get("name"))
        created = _created({"created_at": m.get("modified_at")})
        data.append({"id": name, "object": "model", "created": created, "owned_by": name.split("/")[0] if "/" in name else "library"})
    return {"object": "list", "data": data}
