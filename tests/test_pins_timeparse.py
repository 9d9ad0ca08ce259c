"""Pins for durations, times and buckets (oasis_ops.trials.timeparse) at their edges, with the
exact words a user reads when one is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from oasis_ops.errors import UsageError
from oasis_ops.trials import timeparse as tp

NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), (" 90 s ", 90), ("250ms", 0.25), ("1.5m", 90), ("2min", 120), ("6H", 21_600),
     ("1.5d", 129_600), ("2w", 1_209_600), ("365250d", 365_250 * 86_400)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert tp.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "not a duration: '' (use e.g. 90s, 15m, 6h, 2d)"), ("6 hours", "not a duration: '6 hours' (use e.g. 90s, 15m, 6h, 2d)"),
     ("-5m", "not a duration: '-5m' (use e.g. 90s, 15m, 6h, 2d)"), ("0", "duration must be positive: '0'"),
     ("0.0s", "duration must be positive: '0.0s'"),
     ("365251d", "duration too long: '365251d' (at most 1000 years (365250d))")],
)  # fmt: skip
def test_duration_refusals(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        tp.parse_duration(text)
    assert str(info.value) == message


def test_bucket_widths() -> None:
    assert [tp.bucket_seconds(b) for b in ("1s", "1m", "90", "1.5m", "1d")] == [1, 60, 90, 90, 86_400]
    for bad in ("500ms", "1.5s"):
        with pytest.raises(UsageError, match=f"bucket must be a whole number of seconds: '{bad}'"):
            tp.bucket_seconds(bad)


def test_times() -> None:
    assert tp.parse_time("now", now=NOW) == NOW and tp.parse_time(" NOW ", now=NOW) == NOW
    assert tp.parse_time("6h", now=NOW) == NOW - timedelta(hours=6)
    assert tp.parse_time("90s", now=NOW.replace(tzinfo=None)) == NOW - timedelta(seconds=90)
    assert tp.parse_time("2025-11-20T17:58:01Z") == datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)
    assert tp.parse_time("2025-11-20 17:58:01") == datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)  # naive = UTC
    assert tp.parse_time("2025-11-20T18:58:01+01:00") == datetime(2025, 11, 20, 17, 58, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="not a time: '90'"):  # bare digits are neither a time nor "90 s ago"
        tp.parse_time("90", now=NOW)
    aware = datetime(2025, 11, 20, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert tp.parse_time(aware) == datetime(2025, 11, 20, 17, 0, tzinfo=UTC)
    with pytest.raises(UsageError) as info:
        tp.parse_time("yesterday")
    assert str(info.value) == "not a time: 'yesterday' (use ISO 8601, e.g. 2025-11-20T17:40:00Z, or 6h for six hours ago)"
    with pytest.raises(UsageError, match="'365000d' ago is before the year 1"):
        tp.parse_time("365000d", now=datetime(1000, 1, 1, tzinfo=UTC))


def test_auto_bucket_and_alignment() -> None:
    day = timedelta(days=1)
    assert tp.auto_bucket(NOW, NOW) == "1m"
    assert tp.auto_bucket(NOW, NOW + timedelta(minutes=1500)) == "1m"  # exactly 1500 buckets
    assert tp.auto_bucket(NOW, NOW + timedelta(minutes=1501)) == "2m"
    assert tp.auto_bucket(NOW, NOW + 30 * day) == "30m"
    assert tp.auto_bucket(NOW, NOW + 7 * 1500 * day) == "7d"
    assert tp.auto_bucket(NOW, NOW + 7 * 1500 * day + timedelta(seconds=1)) == "8d"  # past the nice widths: whole days
    assert tp.auto_bucket(NOW, NOW + timedelta(hours=10), max_buckets=10) == "1h"
    assert tp.auto_bucket(NOW, NOW - day) == "1m"  # an inverted range is empty
    t = datetime(2025, 11, 20, 17, 58, 31, 500, tzinfo=UTC)
    assert tp.floor_to_bucket(t, 60) == datetime(2025, 11, 20, 17, 58, tzinfo=UTC)
    assert tp.ceil_to_bucket(t, 60) == datetime(2025, 11, 20, 17, 59, tzinfo=UTC)
    assert tp.ceil_to_bucket(NOW, 3600) == NOW and tp.floor_to_bucket(NOW, 3600) == NOW
    assert tp.floor_to_bucket(datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC), 60) == datetime(1969, 12, 31, 23, 59, tzinfo=UTC)
    assert tp.epoch_us(datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000 and tp.from_epoch_us(1_500_000) == datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    with pytest.raises(UsageError) as info:
        tp.floor_to_bucket(datetime(1, 1, 1, 0, 0, 30, tzinfo=UTC), 3600 * 24 * 7)
    assert str(info.value) == ("0001-01-01T00:00:30+00:00 is too close to the year 1 for 604800 s buckets "
                               "(start later, or use a narrower bucket)")  # fmt: skip
    with pytest.raises(UsageError, match="too close to the end of year 9999 for 86400 s buckets"):
        tp.ceil_to_bucket(datetime(9999, 12, 31, 12, 0, tzinfo=UTC), 86_400)


# --- a run's span, as every surface shows it (oasis_ops.trials.span) ----------------------------
def test_span_texts() -> None:
    from oasis_ops.trials.span import RunSpan, duration_text, range_parts, range_text

    assert [duration_text(s) for s in (-3, 0, 58.9, 60, 298, 3600, 32_698, 86_400, 183_605)] == [
        "0 s", "0 s", "58 s", "1 min 0 s", "4 min 58 s", "1 h 0 min 0 s", "9 h 4 min 58 s", "1 d 0 h 0 min 0 s", "2 d 3 h 0 min 5 s"]  # fmt: skip
    assert duration_text(timedelta(minutes=2, seconds=3.9)) == "2 min 3 s"
    start = datetime(2025, 11, 20, 9, 0, 1, 900_000, tzinfo=UTC)
    end = datetime(2025, 11, 20, 18, 4, 59, 100_000, tzinfo=UTC)
    # shown times are truncated and the duration is their difference (not 9:04:57.2 rounded)
    assert range_parts(start, end) == ("2025-11-20 09:00:01", "18:04:59", "9 h 4 min 58 s")
    assert range_text(start, end + timedelta(days=1)) == "2025-11-20 09:00:01 → 2025-11-21 18:04:59 UTC (1 d 9 h 4 min 58 s)"
    run = RunSpan("oasis-1", start, end, end - timedelta(seconds=9), 12_830, 376, ("gemma4:e4b",))
    assert (run.start_text, run.end_text, run.duration_text, run.shown_duration_s) == ("2025-11-20 09:00:01", "18:04:59", "9 h 4 min 58 s", 32_698)
    assert run.label() == "run oasis-1: 2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)"
    assert RunSpan(None, start, end, end, 1, 0).label().startswith("all trials: 2025-11-20 09:00:01")
    assert run.covered_by(start, run.last_started + timedelta(microseconds=1))
    assert not run.covered_by(start, run.last_started) and not run.covered_by(start + timedelta(microseconds=1), end + timedelta(hours=1))
    assert run.as_dict() == {"run_id": "oasis-1", "start": "2025-11-20T09:00:01.900000+00:00", "end": "2025-11-20T18:04:59.100000+00:00",
                             "duration_s": 32_697.2, "last_started": "2025-11-20T18:04:50.100000+00:00", "trials": 12_830,
                             "failures": 376, "models": ["gemma4:e4b"]}  # fmt: skip
