"""Timestamps as the library passes them around: aware UTC datetimes."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def as_utc_datetime(value: Any) -> datetime | None:
    """A pandas/py timestamp (naive = UTC) as an aware UTC datetime; None for None/NaN/NaT."""
    import pandas as pd  # lazily: callers that never see a timestamp need not import it

    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
