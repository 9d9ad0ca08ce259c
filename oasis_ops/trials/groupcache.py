"""The per-(run, model) groups of a trial table, kept on disk between processes.

Every TrialSource needs the groups (first/last start, last end, trials, ok per run and model):
they give the latest run, each run's span and where trials are at all. Computing them scans
every row (0.17 s at 10M trials), which a short-lived command (`timeline --last 6h`) would pay
on each start. So the groups are saved beside the snapshots (`groups.json` in the source's
private snapshot directory) with what they were computed over: the column mapping, the row
count and the fingerprint of the last row. A later process uses them when the table is the
same, or only grew (same fingerprint at the old last row: then only the new rows are grouped),
the rule live refresh uses for appended rows. Anything else recomputes. Bounded: one small file
per source (one row per run and model).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from oasis_ops.trials.groups import Groups
from oasis_ops.trials.mapping import TrialMapping

FILE_NAME = "groups.json"
VERSION = 2  # 2: the untimed column
MAX_GROUPS = 100_000  # more (run, model) pairs than this are not worth a file


def mapping_key(mapping: TrialMapping) -> str:
    return json.dumps({**mapping.params(), "time_type": mapping.time_type}, sort_keys=True, default=str)


def fingerprint(row: tuple[Any, ...] | None) -> str:
    return json.dumps(list(row) if row is not None else None, default=str)


def load(directory: Path, mapping: TrialMapping) -> tuple[Groups, int, str] | None:
    """(groups, trials they cover, fingerprint of the row at trials - 1), or None."""
    try:
        data = json.loads((directory / FILE_NAME).read_text(encoding="utf-8"))
        if data.get("version") != VERSION or data.get("mapping") != mapping_key(mapping):
            return None
        return Groups.from_columns(data["groups"]), int(data["trials"]), str(data["last_row"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(directory: Path, mapping: TrialMapping, groups: Groups, trials: int, last_row: tuple[Any, ...] | None) -> None:
    if len(groups) > MAX_GROUPS:
        return
    payload = {
        "version": VERSION,
        "mapping": mapping_key(mapping),
        "trials": trials,
        "last_row": fingerprint(last_row),
        "groups": groups.columns(),
    }
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
        os.replace(tmp, directory / FILE_NAME)
    with contextlib.suppress(OSError):
        tmp.unlink()
