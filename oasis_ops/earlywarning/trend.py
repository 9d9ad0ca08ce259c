"""A robust trend: the Theil–Sen slope (the median of every pairwise slope) with a band.

A least-squares line follows one outlier; the median of pairwise slopes needs about 29% of the
points to be wrong before it moves. The band is the spread of the pairwise slopes (their
`BAND_Q` and 1-`BAND_Q` quantiles): a trend counts as falling only when its upper band edge is
below zero, so noise around a flat line reads as flat. At most MAX_POINTS points are used (evenly
picked): the pairs grow with the square of the points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_POINTS = 120
BAND_Q = 0.2


@dataclass(frozen=True)
class Trend:
    slope: float  # units per second
    low: float
    high: float
    points: int


def theil_sen(seconds: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS) -> Trend | None:
    """Trend of `values` over `seconds` (sorted); None with under 3 finite points or no time spread."""
    ok = np.isfinite(seconds) & np.isfinite(values)
    x, y = seconds[ok], values[ok]
    if len(x) > max_points:
        pick = np.linspace(0, len(x) - 1, max_points).round().astype(np.int64)
        x, y = x[pick], y[pick]
    n = len(x)
    if n < 3:
        return None
    i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    use = dx > 0
    if not use.any():
        return None
    slopes = (y[j] - y[i])[use] / dx[use]
    low, mid, high = np.quantile(slopes, [BAND_Q, 0.5, 1 - BAND_Q])
    return Trend(float(mid), float(low), float(high), n)
