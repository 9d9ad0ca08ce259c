"""Model loads and flash-attention statements in server.log (part of ServerLogParser).

Loads. A runner spawn with `--model` (or the MLX runner's `starting mlx runner subprocess
model=<name>`, or 0.1.x's `starting llama runner`) opens a load: detail.load_id (`<ts>/<line>`)
and detail.model (the blob path, or the MLX model name). Its `load request` lines
(Operation:fit/alloc/commit), its `... started in N seconds` line(s) (a repeat is marked
detail.repeat) and its llama.cpp flash-attention lines carry the same load_id and model, up to
the next spawn. Runner spawns without `--model` are GPU discovery: kind `runner_discovery`,
never a load. Ollama loads one model at a time; if two spawns overlap, lines go to the latest.

Flash attention stated anywhere becomes detail.flash_attention (True/False, None for auto)
plus detail.flash_evidence and detail.flash_source; Ollama's own `enabling flash attention` /
`flash attention enabled but not supported` lines come before the spawn they are about and
join the next load (within PRE_LOAD_US). `flash_attention_statements()`
(oasis_ops.logs.flashlog) returns the same facts, in order, for any iterable of lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oasis_ops.logs.rows import Rows, to_json

PRE_LOAD_US = 30_000_000  # "enabling flash attention" precedes its runner's spawn by at most this


class LoadsMixin:
    """ServerLogParser's current model load and the flash statements it collects."""

    rows: Rows  # set by ServerLogParser

    if TYPE_CHECKING:

        def _drop_idle_tasks(self) -> None: ...

    def _init_loads(self) -> None:
        self._load: dict[str, Any] | None = None  # the current model load
        # flash statements Ollama makes before it spawns the runner they are about
        self._pre_load: list[tuple[list[Any], int, dict[str, Any], dict[str, Any] | None, int]] = []
        self.flash: list[dict[str, Any]] | None = None  # collector (flash_attention_statements)

    def _attribute(self, kind: str, detail: dict[str, Any], ts: int, line_no: int) -> None:
        if kind == "runner_start":
            self._drop_idle_tasks()
            opened: dict[str, Any] = {"id": f"{ts}/{line_no}", "model": detail.get("model"), "started": False}
            self._load = opened
            detail["load_id"] = opened["id"]
            if self._pre_load:
                for column, index, earlier, statement, said_at in self._pre_load:
                    if ts - said_at > PRE_LOAD_US:
                        continue  # said too long before this spawn to be about it
                    earlier["load_id"] = opened["id"]
                    if opened["model"] is not None:
                        earlier.setdefault("model", opened["model"])
                        if statement is not None:
                            statement["model"] = opened["model"]
                    if column is self.rows.columns["log_events"]["detail"] and index < len(column):
                        column[index] = to_json(earlier)
                self._pre_load.clear()
            return
        if kind in ("runner_started", "load_request") or (
            kind == "flash_attention" and detail.get("flash_source") == "llama.cpp context"
        ):
            load = self._load
            if load is None:  # the log starts inside a load: its model is unknown
                load = {"id": f"{ts}/{line_no}", "model": None, "started": False}
                self._load = load
            detail["load_id"] = load["id"]
            if load["model"] is not None:
                detail.setdefault("model", load["model"])
            if kind == "runner_started":
                if load["started"]:
                    detail["repeat"] = True  # the same load reporting again: not another load
                load["started"] = True

    def _flash_statement(self, detail: dict[str, Any], ts: int | None, line_no: int) -> dict[str, Any] | None:
        if self.flash is None:
            return None
        source = detail.get("flash_source")
        statement = {
            "line_no": line_no,
            "ts": ts,
            "value": detail.get("flash_attention"),
            "source": source,
            "model": None if source == "server config" else detail.get("model"),
            "evidence": detail.get("flash_evidence"),
        }
        self.flash.append(statement)
        return statement
