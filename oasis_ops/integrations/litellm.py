"""A litellm callback that records every completion as a trial (Contract 1), from inside the
harness, for harnesses that would rather not put the proxy in front of Ollama:

    import litellm
    from oasis_ops.integrations.litellm import OasisOpsCallback
    litellm.callbacks = [OasisOpsCallback("trials.duckdb", run_id="eval-7")]

One row per call, success or failure, sync or async, streamed or not: started_at / finished_at
(litellm's own start and end times), latency_ms, status `ok`, `timeout` (litellm.Timeout, what
the harness counted as a timeout) or `error` with the exception as `message (litellm.Type)`,
the model as Ollama names it (`ollama/` and `ollama_chat/` prefixes dropped, so the console can
match trials to Ollama's models), and token counts from the response's usage. Rows go through
TrialWriter (batched, retried on lock, never dropped) and are flushed at interpreter exit.

litellm itself fetches a model price map from GitHub when it is imported, unless
LITELLM_LOCAL_MODEL_COST_MAP=True; this module sets that default (offline machines) when it
is imported before litellm.
"""

from __future__ import annotations

import atexit
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402 - after the offline default

from oasis_ops.trials.writer import TrialWriter, default_run_id  # noqa: E402

OLLAMA_PROVIDERS = ("ollama", "ollama_chat")
MAX_ERROR_CHARS = 300


def _utc(value: Any) -> datetime | None:
    """litellm passes naive local times (datetime.now()); aware UTC for the writer."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)  # a naive value is taken as local time, which litellm's are
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    return None


def ollama_model_name(kwargs: dict[str, Any]) -> str | None:
    model = kwargs.get("model")
    if model is None:
        return None
    model = str(model)
    provider = (kwargs.get("litellm_params") or {}).get("custom_llm_provider")
    for prefix in (*OLLAMA_PROVIDERS, provider):
        if prefix and model.startswith(f"{prefix}/"):
            return model[len(prefix) + 1 :]
    return model


def _usage(response: Any) -> dict[str, int | None]:
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, dict):
        usage = response.get("usage")
    get = usage.get if isinstance(usage, dict) else (lambda key: getattr(usage, key, None))
    counts = {"prompt_tokens": get("prompt_tokens") if usage is not None else None,
              "completion_tokens": get("completion_tokens") if usage is not None else None}  # fmt: skip
    return {key: int(value) if isinstance(value, int | float) else None for key, value in counts.items()}


def failure_status(exception: BaseException | None) -> tuple[str, str]:
    """(status, error text) for a failed call: litellm.Timeout (and its subclasses) is a timeout."""
    if exception is None:
        return "error", "failed (litellm gave no exception)"
    name = type(exception).__name__
    timeout = any(cls.__name__ == "Timeout" for cls in type(exception).__mro__) or isinstance(exception, TimeoutError)
    message = " ".join(str(exception).split())[:MAX_ERROR_CHARS] or name
    return ("timeout" if timeout else "error"), f"{message} (litellm.{name})"


class OasisOpsCallback(CustomLogger):  # type: ignore[misc]
    """litellm's CustomLogger, writing one trial row per call."""

    def __init__(self, db: str | os.PathLike[str] = "trials.duckdb", *, run_id: str | None = None,
                 table: str = "trials", writer: TrialWriter | None = None) -> None:  # fmt: skip
        super().__init__()
        self.writer = writer or TrialWriter(Path(db), table=table, flush_interval_s=1.0)
        self.run_id = run_id or os.environ.get("OASIS_OPS_RUN_ID") or default_run_id("litellm")
        self._ids = iter(range(1, 10**9))
        self._base = int(datetime.now(UTC).timestamp() * 1000) * 1_000_000
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _record(self, kwargs: dict[str, Any], response: Any, start: Any, end: Any, status: str,
                error: str | None) -> None:  # fmt: skip
        started, finished = _utc(start), _utc(end)
        latency = (finished - started).total_seconds() * 1000 if started and finished else None
        with self._lock:
            trial_id = self._base + next(self._ids)
        self.writer.write({
            "trial_id": trial_id, "run_id": self.run_id, "model": ollama_model_name(kwargs),
            "started_at": started, "finished_at": finished, "latency_ms": latency, "status": status,
            "error": error, **(_usage(response) if status == "ok" else {}),
        })  # fmt: skip

    # litellm calls these (sync and async paths)
    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, "ok", None)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        status, error = failure_status(kwargs.get("exception"))
        self._record(kwargs, response_obj, start_time, end_time, status, error)

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.log_success_event(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.log_failure_event(kwargs, response_obj, start_time, end_time)

    def flush(self) -> int:
        return self.writer.flush()

    def close(self) -> None:
        """Write what is buffered (also at interpreter exit)."""
        atexit.unregister(self.close)
        self.writer.close()
