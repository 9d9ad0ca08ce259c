"""Worst runner (b): connects, inserts one trial and closes, per trial, with NO retry at all.

Usage: per_trial.py DB SECONDS INTERVAL_S RESULT_JSON. Uses duckdb directly (not our helper).
A connect or insert that fails (e.g. "Could not set lock") is a lost trial, recorded.
"""

import datetime as dt
import json
import sys
import time

import duckdb

db, seconds, interval, result_path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
attempted = inserted = 0
failures = []
deadline = time.time() + seconds
while time.time() < deadline:
    attempted += 1
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        con = duckdb.connect(db)
        try:
            con.execute(
                "INSERT INTO trials VALUES (?, 'run-live', 'gemma4:e4b', ?, ?, 4100.0, 'ok', NULL)",
                [attempted, now, now],
            )
        finally:
            con.close()
        inserted += 1
    except Exception as exc:  # no retry: this trial is lost
        failures.append(f"{now.isoformat()} {type(exc).__name__}: {exc}")
    time.sleep(interval)
with open(result_path, "w") as f:
    json.dump({"attempted": attempted, "inserted": inserted, "failures": failures}, f)
