"""Worst runner (a): holds the trial DB open read-write for the whole run, one insert every ~50 ms.

Usage: hold_open.py DB SECONDS INTERVAL_S RESULT_JSON. Uses duckdb directly (not our helper).
Every failed insert is recorded in the result as a lost trial. Once it holds the file it writes
RESULT_JSON + ".ready", so the test never has to race its own connects against this one.
"""

import datetime as dt
import json
import sys
import time

import duckdb

db, seconds, interval, result_path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
con = duckdb.connect(db)
open(result_path + ".ready", "w").close()
attempted = inserted = 0
failures = []
deadline = time.time() + seconds
while time.time() < deadline:
    attempted += 1
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        con.execute(
            "INSERT INTO trials VALUES (?, 'run-live', 'gemma4:e4b', ?, ?, 4100.0, 'ok', NULL)",
            [attempted, now, now],
        )
        inserted += 1
    except Exception as exc:  # every failure is a lost trial
        failures.append(f"{now.isoformat()} {type(exc).__name__}: {exc}")
    time.sleep(interval)
con.close()
with open(result_path, "w") as f:
    json.dump({"attempted": attempted, "inserted": inserted, "failures": failures}, f)
