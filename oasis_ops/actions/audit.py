"""The audit log: every action attempt becomes one row of the sidecar's `actions` table
(Contract 2), whoever asked, refused, cancelled and dry-run attempts included; and its read side for the
pages (a table, and chart markers)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pandas as pd

from oasis_ops.actions.result import ActionResult
from oasis_ops.errors import OasisOpsError
from oasis_ops.sidecar import Sidecar

log = logging.getLogger(__name__)

MARKER_COLUMNS = ["ts", "kind", "label"]
LOG_COLUMNS = ["ts", "action", "target", "requested_by", "outcome", "message", "duration_ms", "params", "detail"]


def audit(sidecar: Sidecar | None, result: ActionResult) -> ActionResult:
    """Write `result` as one audit row. A failed write never hides the action's own outcome:
    it is reported in `detail["audit_error"]` (and logged)."""
    if sidecar is None:
        result.detail.setdefault("audit_error", "no sidecar configured: this attempt was not audited")
        return result
    try:
        sidecar.record_action(
            result.action,
            target=result.target,
            params=result.params,
            requested_by=result.requested_by,
            outcome=result.outcome,
            detail={"message": result.message, **result.detail},
            duration_ms=result.duration_ms,
            ts=result.ts,
        )
        result.audited = True
    except OasisOpsError as exc:
        result.detail["audit_error"] = exc.message
        log.warning("could not audit %s %s: %s", result.action, result.target, exc.message)
    return result


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def audit_log(sidecar: Sidecar, since: datetime, until: datetime | None = None, max_rows: int = 500) -> pd.DataFrame:
    """The newest `max_rows` audit rows in [since, until), newest first, with `message` pulled
    out of the detail JSON; columns LOG_COLUMNS."""
    frame = sidecar.actions_since(since, until, max_rows=max_rows)
    if frame.empty:
        return pd.DataFrame(columns=LOG_COLUMNS)
    details = [_json(d) for d in frame["detail"]]
    out = pd.DataFrame(
        {
            "ts": pd.to_datetime(frame["ts"], utc=True),
            "action": frame["action"],
            # a missing target is None, not NaN (pandas 3 infers a string column and makes None NaN)
            "target": pd.Series([t if isinstance(t, str) else None for t in frame["target"]], index=frame.index, dtype=object),
            "requested_by": frame["requested_by"],
            "outcome": frame["outcome"],
            "message": [d.get("message") if isinstance(d, dict) else None for d in details],
            "duration_ms": frame["duration_ms"],
            "params": [json.dumps(_json(p)) if p is not None else None for p in frame["params"]],
            "detail": [json.dumps(d, default=str) if d is not None else None for d in details],
        }
    )
    return out.iloc[::-1].reset_index(drop=True)


def actions_markers(sidecar: Sidecar, start: datetime, end: datetime, max_rows: int = 500) -> pd.DataFrame:
    """Audit rows in [start, end) as chart markers for charts.marker_layers: columns ts, kind
    (the action: evict, hard_kill, recover, concurrency, pause, resume, watchdog) and label
    (e.g. "hard_kill gemma4:e4b: done (watchdog)")."""
    frame = sidecar.actions_since(start, end, max_rows=max_rows)
    if frame.empty:
        return pd.DataFrame(columns=MARKER_COLUMNS)
    labels = [
        f"{a} {t}: {o} ({r})" if isinstance(t, str) and t else f"{a}: {o} ({r})"  # a missing target reads as NaN
        for a, t, o, r in zip(frame["action"], frame["target"], frame["outcome"], frame["requested_by"], strict=True)
    ]
    return pd.DataFrame(
        {"ts": pd.to_datetime(frame["ts"], utc=True), "kind": frame["action"].astype(str), "label": labels}
    )
