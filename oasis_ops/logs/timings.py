"""Raw runner output in server.log: timing blocks assembled per task and paired with their
request, image times, and the other runner lines we read (part of ServerLogParser).

Raw runner output: llama-server, the 2024 C++ server's text and JSON logs, llama.cpp's
`llama_print_timings:` lines (the MLX runner's slog lines go through oasis_ops.logs.golines).

Timing blocks (llama-server `slot print_timing` lines in either layout: one prefixed line per
value, or a `slot print_timing: ... | task N | ` header followed by bare `prompt eval time =`
/ `eval time =` / `total time =` lines; the C++ server's `[print_timings]` text and JSON
lines; llama.cpp's `llama_print_timings:`) are assembled per task into one `log_timings`
row. Progress lines (`prompt processing, n_tokens = ...`, `n_decoded = ...`, `prompt
processing progress`) are not timings. Each block is tied to its OWN request, by order of
completion, not to "the next timed line": llama-server prints a task's timings just before it
sends the final response (tools/server/server-context.cpp), but its stderr reaches server.log
through a pipe copied by a goroutine (os/exec), while the Go server writes the Gin line when it
has relayed that response; so a request's Gin line can come before its block (issue 10 saw it
so from 0.30 on) or after it (older fixtures), and parallel slots interleave. A request is a Gin line with status
200 on a generation path (/api/chat, /api/generate, /v1/chat/completions, /v1/completions,
/v1/responses, /v1/messages). The rule, in completion order:
- a block that completes takes the oldest unpaired request logged before it that is
  plausible: logged at most PAIR_WINDOW_US (3 s, Gin time) before the latest Gin line, after
  the task's first line when that line (`launch_slot_`, a progress line) was seen, and with a
  latency of at least the block's total time - 250 ms; otherwise the block waits;
- a request that completes takes the oldest waiting block that is plausible for it (same
  latency test; the request did not start after the block was done, and comes within
  PAIR_WINDOW_US of the first Gin line logged after the block); otherwise it waits;
- a pairing drops the older unpaired requests (requests without a block: unload / preload
  calls, a model on the Go engine, a 500) and emits the older waiting blocks unpaired.
A paired row takes its request's Gin time and `request_line_no`. An unpaired block takes its
own absolute time (a docker/CRI prefix, the C++ server's `timestamp`), else the time of the
first Gin line logged after it, else the last timed line before it.
Image lines (`image slice encoded`, `image decoded`) carry no task id: they belong to the task
most recently launched (`slot launch_slot_: ... | task N |`), else to the next task that
prints a timing line; several slices or batches are summed.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oasis_ops.logs.golines import flash_attention_state, is_int
from oasis_ops.logs.rows import COLUMNS, CONTROL, ParseCounts, Rows

_PRINT_TIMING = re.compile(
    r"slot print_timing: id\s+\d+ \| task (\d+) \|\s*(prompt eval|eval|total) time =\s*([\d.]+) ms /\s*(\d+) tokens"
)
_SLOT_TASK = re.compile(r"slot\s+[\w ]*?: id\s+\d+ \| task (-?\d+) \|(.*)")
_LAUNCH = re.compile(r"slot launch_slot_: id\s+\d+ \| task (\d+) \|")
_IMG = re.compile(r"image (?:slice encoded in ([\d.]+) ms|decoded \(batch \d+/\d+\) in ([\d.]+) ms)")
_PROGRESS = ("prompt processing", "n_decoded", "n_gen", "new prompt", "kv cache rm", "cached n_tokens")
# the bare value lines after a `slot print_timing: id 0 | task N | ` header (llama.cpp 2025-26)
_BARE_TIMING = re.compile(r"\s*(prompt eval|reasoning|eval|total) time\s+=\s*([\d.]+) ms(?: /\s*(\d+) (?:tokens|runs))?")
# llama.cpp's own timings (Ollama <= 0.1.1x printed them per request)
_LEGACY_TIMING = re.compile(
    r"llama_print_timings:\s+(load|sample|prompt eval|eval|total) time =\s*([\d.]+) ms(?: /\s*(\d+) (?:tokens|runs))?"
)
# the 2024 C++ server's text log: `INFO [print_timings] prompt eval time = ... | k=v ...`
_CPP_TEXT = re.compile(r"(?:INFO|DEBUG|VERB|WARN|WARNING|ERR|ERROR)\s+\[\s*(\w+)\]\s+(.*?)\s*\|(.*)")
_CPP_KV = re.compile(r"(\w+)=(\"(?:[^\"\\]|\\.)*\"|\S+)")
_LLAMA_FLASH = re.compile(
    r"(?:llama_context|llama_new_context_with_model|llama_init_from_model):\s+"
    r"(flash_attn\s*=\s*(\S+)|Flash Attention was (\w+), set to (\w+))"
)

# Gin requests that run a generation (and so have a timing block when the runner prints them)
GEN_PATHS = frozenset({"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions",
                        "/v1/responses", "/v1/messages"})  # fmt: skip
LATENCY_SLACK_MS = 250.0  # a block's total time may exceed its request's Gin latency by this much
_SLACK_US = 1_250_000  # Gin times are whole seconds (truncated): one second plus the slack
PAIR_WINDOW_US = 3_000_000  # a block and its request's Gin line are logged within this of each other
MAX_WAITING = 256  # completed blocks waiting for their request (older ones take their fallback)
MAX_REQUESTS = 64  # unpaired requests remembered
MAX_TASKS = 2048  # tasks seen but not complete (cancelled tasks never print timings)


@dataclass(slots=True)
class _Task:
    task_id: int | None
    line_no: int
    start_line: int | None = None  # a line printed while the task ran (launch, progress)
    prompt_eval_ms: float | None = None
    prompt_tokens: int | None = None
    eval_ms: float | None = None
    eval_tokens: int | None = None
    total_ms: float | None = None
    image_encode_ms: float | None = None
    image_decode_ms: float | None = None
    own_ts: int | None = None  # an absolute time printed with the block (prefix, C++ timestamp)
    before_ts: int | None = None  # the last timed line before the block completed
    after_gin_ts: int | None = None  # the first Gin line logged after it

    def add_image(self, encode_ms: float | None, decode_ms: float | None) -> None:
        if encode_ms is not None:
            self.image_encode_ms = (self.image_encode_ms or 0.0) + encode_ms
        if decode_ms is not None:
            self.image_decode_ms = (self.image_decode_ms or 0.0) + decode_ms

    def has_values(self) -> bool:
        return self.prompt_eval_ms is not None or self.eval_ms is not None or self.total_ms is not None

    def fallback_ts(self) -> int | None:
        """A block that found no request: its own absolute time, else the first Gin line logged
        after it, else the last timed line before it."""
        if self.own_ts is not None:
            return self.own_ts
        return self.after_gin_ts if self.after_gin_ts is not None else self.before_ts


class TimingsMixin:
    """ServerLogParser's timing blocks and requests waiting for each other."""

    # the parser's own state, read here (set by ServerLogParser and PrefixesMixin)
    rows: Rows
    counts: ParseCounts
    last_ts: int | None  # epoch µs of the last timed line
    _last_gin_ts: int | None
    _prefix_ts: int | None  # absolute time of the current line's collector prefix

    if TYPE_CHECKING:

        def _event(self, ts: int | None, level: str | None, msg: str | None, kind: str, detail: dict[str, Any],
                   line_no: int, noted: bool = False) -> None: ...  # fmt: skip

    def _init_timings(self) -> None:
        self._tasks: dict[int, _Task] = {}  # tasks with timing lines, total not yet seen
        self._waiting: list[_Task] = []  # complete blocks waiting for their request
        # unpaired requests (line, ts, latency ms), oldest first
        self._requests: deque[tuple[int, int, float]] = deque(maxlen=MAX_REQUESTS)
        self._launched: int | None = None  # most recently launched task (owns image lines)
        self._orphan_image: list[float | None] = [None, None]  # image ms seen before any task
        self._header: _Task | None = None  # task of a bare `slot print_timing: ... | task N | ` header
        self._legacy: _Task | None = None  # llama_print_timings block (no task id)
        self._tim_cols: dict[str, list[Any]] | None = None
        self._tim_add: tuple[Any, ...] = ()

    def _request(self, line_no: int, ts: int, latency_ms: float) -> None:
        """A completed generation request: pair it with a block waiting for it, else remember it."""
        waiting = self._waiting
        if len(waiting) == 1:  # the common case: the block printed just before its request
            task = waiting[0]
            after = task.after_gin_ts
            if (after is None or (ts <= after + PAIR_WINDOW_US and ts - latency_ms * 1000 <= after + _SLACK_US)) and (
                task.total_ms is None or task.total_ms <= latency_ms + LATENCY_SLACK_MS
            ):
                waiting.clear()
                self._emit_timing(task, ts, line_no)
                if self._requests:
                    self._requests.clear()
                return
        if waiting:
            start_us = ts - int(latency_ms * 1000)
            dead = 0  # blocks done too long before this request to be paired by any later one
            for i, task in enumerate(waiting):
                after = task.after_gin_ts
                if after is None:  # the first request after the block: bounds its completion time
                    task.after_gin_ts = ts
                else:
                    if ts > after + PAIR_WINDOW_US:
                        dead = i + 1
                        continue
                    if start_us > after + _SLACK_US:
                        continue  # the request began after that block was done
                if task.total_ms is not None and task.total_ms > latency_ms + LATENCY_SLACK_MS:
                    continue  # the block ran longer than the request: not its block
                for old in waiting[:i]:  # older blocks: their requests were not logged as such
                    self._emit_timing(old, old.fallback_ts())
                del waiting[: i + 1]
                self._emit_timing(task, ts, line_no)
                self._requests.clear()
                return
            if dead:
                for old in waiting[:dead]:
                    self._emit_timing(old, old.fallback_ts())
                del waiting[:dead]
        self._requests.append((line_no, ts, latency_ms))

    def _complete(self, task: _Task) -> None:
        """A block's last value line: pair it with its request (already logged), else wait."""
        task.before_ts = self.last_ts
        if task.own_ts is None:
            task.own_ts = self._prefix_ts
        requests = self._requests
        if requests:
            last_gin = self._last_gin_ts
            stale = 0
            for i, (req_line, req_ts, latency_ms) in enumerate(requests):
                if last_gin is not None and req_ts + PAIR_WINDOW_US < last_gin:
                    stale = i + 1
                    continue  # logged too long before this block completed
                if task.start_line is not None and req_line < task.start_line:
                    continue  # that request was over before this task began
                if task.total_ms is not None and task.total_ms > latency_ms + LATENCY_SLACK_MS:
                    continue
                for _ in range(i + 1):  # older requests had no block of their own
                    requests.popleft()
                self._emit_timing(task, req_ts, req_line)
                return
            for _ in range(stale):
                requests.popleft()
        self._waiting.append(task)
        if len(self._waiting) > MAX_WAITING:
            self._complete_overflow()

    def _total(self, task: _Task, task_id: int, total_ms: float) -> None:
        """A `slot print_timing` total line: the task is complete; pair it or let it wait."""
        task.total_ms = total_ms
        del self._tasks[task_id]
        if self._launched == task_id:
            self._launched = None
        if self._header is task:
            self._header = None
        if self._requests or self._prefix_ts is not None:
            self._complete(task)
        else:  # the common case, inline: nothing to pair with yet
            task.before_ts = self.last_ts
            self._waiting.append(task)
            if len(self._waiting) > MAX_WAITING:
                self._complete_overflow()

    def _complete_overflow(self) -> None:
        old = self._waiting.pop(0)
        self._emit_timing(old, old.fallback_ts())

    def _raw(self, line: str, line_no: int) -> None:
        try:
            if line.startswith("slot print_timing"):
                m = _PRINT_TIMING.match(line)
                if m:
                    task_text, which, value_text, tokens_text = m.groups()
                    task_id = int(task_text)
                    task = self._tasks.get(task_id) or self._task(task_id, line_no)
                    if which == "prompt eval":
                        task.prompt_eval_ms, task.prompt_tokens = float(value_text), int(tokens_text)
                    elif which == "eval":
                        task.eval_ms, task.eval_tokens = float(value_text), int(tokens_text)
                    else:
                        self._total(task, task_id, float(value_text))
                    return
                m = _SLOT_TASK.match(line)
                if m:
                    rest = m.group(2).strip()
                    if not rest:  # header: the values follow on bare lines
                        self._header = self._task(int(m.group(1)), line_no)
                        return
                    if rest.startswith(_PROGRESS):
                        self._started(int(m.group(1)), line_no)
            elif line.startswith("slot launch_slot_"):
                m = _LAUNCH.match(line)
                if m:
                    self._launched = task_id = int(m.group(1))
                    task = self._tasks.get(task_id) or self._task(task_id, line_no)
                    if task.start_line is None:
                        task.start_line = line_no
                    return
            elif line.startswith("slot "):
                m = _SLOT_TASK.match(line)
                if m and m.group(2).strip().startswith(_PROGRESS):
                    self._started(int(m.group(1)), line_no)
            else:
                self._image(line, line_no)
                return
            if CONTROL.search(line):
                self.counts.junk += 1
            else:
                self.counts.unrecognized += 1  # other llama-server chatter
        except ValueError:  # a number that is not one (`1.2.3 ms`): junk, never an exception
            self.counts.junk += 1

    def _image(self, line: str, line_no: int) -> None:
        try:
            m = _IMG.match(line)
            if m:
                encoded, decoded = m.groups()
                encode_ms = float(encoded) if encoded is not None else None
                decode_ms = float(decoded) if decoded is not None else None
                owner = self._tasks.get(self._launched) if self._launched is not None else None
                if owner is not None:
                    owner.add_image(encode_ms, decode_ms)
                else:
                    pending = self._orphan_image
                    if encode_ms is not None:
                        pending[0] = (pending[0] or 0.0) + encode_ms
                    if decode_ms is not None:
                        pending[1] = (pending[1] or 0.0) + decode_ms
            elif CONTROL.search(line):
                self.counts.junk += 1
            else:
                self.counts.unrecognized += 1
        except ValueError:  # a number that is not one (`1.2.3 ms`): junk, never an exception
            self.counts.junk += 1

    def _finish_task(self, task: _Task) -> None:
        if task.task_id is not None:
            self._tasks.pop(task.task_id, None)
            if self._launched == task.task_id:
                self._launched = None
        if self._header is task:
            self._header = None
        self._complete(task)

    def _task(self, task_id: int, line_no: int) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = _Task(task_id, line_no)
            if self._orphan_image != [None, None]:
                task.add_image(*self._orphan_image)
                self._orphan_image = [None, None]
            if len(self._tasks) > MAX_TASKS:
                self._drop_idle_tasks()
        return task

    def _started(self, task_id: int, line_no: int) -> None:
        task = self._task(task_id, line_no)
        if task.start_line is None:
            task.start_line = line_no

    def _drop_idle_tasks(self) -> None:
        """Forget tasks that never printed a timing value (cancelled, or a runner that went)."""
        for task_id in [k for k, t in self._tasks.items() if not t.has_values()]:
            del self._tasks[task_id]
        if self._launched is not None and self._launched not in self._tasks:
            self._launched = None

    def _emit_timing(self, task: _Task, ts: int | None, request_line: int | None = None) -> None:
        cols = self.rows.columns["log_timings"]
        if cols is not self._tim_cols:
            self._tim_cols = cols
            self._tim_add = tuple(cols[c].append for c in COLUMNS["log_timings"])
        add = self._tim_add
        add[0](ts)
        add[1](task.task_id)
        add[2](task.prompt_eval_ms)
        add[3](task.prompt_tokens)
        add[4](task.eval_ms)
        add[5](task.eval_tokens)
        add[6](task.total_ms)
        add[7](task.image_encode_ms)
        add[8](task.image_decode_ms)
        add[9](task.line_no)
        add[10](request_line)
        self.counts.timings += 1

    # -- runner output outside the fast path (through PrefixesMixin)
    def _runner_text(self, line: str, line_no: int) -> bool:
        """Raw runner output outside the fast path; True when recognised and handled."""
        m = _BARE_TIMING.match(line)
        if m:
            task = self._header
            if task is None:
                self.counts.unrecognized += 1
                return True
            self._set_value(task, m.group(1), float(m.group(2)), int(m.group(3)) if m.group(3) else None)
            return True
        if line.startswith("llama_print_timings:"):
            m = _LEGACY_TIMING.match(line)
            if m and m.group(1) not in ("load", "sample"):
                if self._legacy is None:
                    self._legacy = _Task(None, line_no)
                task = self._legacy
                if m.group(1) == "total":
                    self._legacy = None
                self._set_value(task, m.group(1), float(m.group(2)), int(m.group(3)) if m.group(3) else None)
            else:
                self.counts.unrecognized += 1
            return True
        m = _CPP_TEXT.match(line)
        if m:
            values = {k: v.strip('"') for k, v in _CPP_KV.findall(m.group(3))}
            self._cpp(m.group(1), m.group(2), values, line_no)
            return True
        m = _LLAMA_FLASH.search(line) if "lash" in line else None
        if m:
            value = flash_attention_state(m.group(2) if m.group(2) is not None else m.group(4))
            evidence = " ".join(m.group(1).split())  # `flash_attn    = auto` -> `flash_attn = auto`
            detail: dict[str, Any] = {"flash_attention": value, "flash_evidence": evidence, "flash_source": "llama.cpp context"}
            ts = self._prefix_ts if self._prefix_ts is not None else self.last_ts
            self._event(ts, None, line.strip(), "flash_attention", detail, line_no)
            return True
        return False

    def _set_value(self, task: _Task, which: str, value: float, tokens: int | None) -> None:
        if which == "prompt eval":
            task.prompt_eval_ms, task.prompt_tokens = value, tokens
        elif which in ("eval", "generation eval"):
            task.eval_ms, task.eval_tokens = value, tokens
        elif which == "total":
            task.total_ms = value
            self._finish_task(task)

    def _cpp(self, function: str, message: str, values: dict[str, Any], line_no: int) -> None:
        """One line of the 2024 C++ server (text or JSON layout)."""
        task_text = values.get("task_id", values.get("id_task"))
        task_id = int(task_text) if task_text is not None and is_int(str(task_text).lstrip("-")) else None
        if function == "launch_slot_with_task" and task_id is not None:
            self._started(task_id, line_no)
        if function != "print_timings":
            self.counts.unrecognized += 1  # runner chatter
            return
        task = self._task(task_id, line_no) if task_id is not None else (self._legacy or _Task(None, line_no))
        if task_id is None:
            self._legacy = task
        stamp = values.get("timestamp")
        if stamp is not None and is_int(str(stamp)):
            task.own_ts = int(stamp) * 1_000_000
        text = message.strip()

        def num(key: str) -> float | None:
            value = values.get(key)
            try:
                return float(value) if value is not None else None
            except (TypeError, ValueError):
                return None

        bare = _BARE_TIMING.match(text.replace("generation eval", "eval"))
        if text.startswith("prompt eval"):
            ms, tokens = num("t_prompt_processing"), num("n_prompt_tokens_processed")
            which = "prompt eval"
        elif text.startswith(("generation eval", "eval")):
            ms, tokens = num("t_token_generation"), num("n_decoded")
            which = "eval"
        elif text.startswith("total"):
            ms, tokens = num("t_total"), None
            which = "total"
        else:
            self.counts.unrecognized += 1
            return
        if ms is None and bare:
            ms = float(bare.group(2))
        if tokens is None and bare and bare.group(3):
            tokens = float(bare.group(3))
        if which == "total" and task_id is None:
            self._legacy = None
        self._set_value(task, which, ms if ms is not None else 0.0, int(tokens) if tokens is not None else None)

    @property
    def pending(self) -> int:
        """Timing rows not emitted yet (waiting for their request, or without a total line)."""
        return len(self._waiting) + sum(1 for t in self._tasks.values() if t.has_values())
