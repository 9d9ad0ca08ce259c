"""Worst runner (a): holds the trial DB open read-write for the whole run, one insert every ~50 ms.

Usage: hold_open.py DB SECONDS INTERVAL_S RESULT_JSON [STOP_FILE]. Uses duckdb directly (not our
helper). Every failed insert is recorded in the result as a lost trial. Once it holds the file and
has made its first insert it writes RESULT_JSON + ".ready", so the test never has to race its own
connects against this one. With STOP_FILE it holds the file until that file exists (SECONDS is
then only a safety cap): a test that checks the lock is not racing a fixed-length hold either.
"""

import datetime as dt
import json
import os
import sys
import time

import duckdb

db, seconds, interval, result_path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stop_file = sys.argv[5] if len(sys.argv) > 5 else None
con = duckdb.connect(db)
attempted = inserted = 0
failures = []
deadline = time.time() + seconds
while time.time() < deadline and not (stop_file and os.path.exists(stop_file)):
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
    if attempted == 1:
        open(result_path + ".ready", "w").close()
    time.sleep(interval)
con.close()
with open(result_path, "w") as f:
    json.dump({"attempted": attempted, "inserted": inserted, "failures": failures}, f)
