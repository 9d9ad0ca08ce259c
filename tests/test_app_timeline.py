"""The Timeline page, headless (streamlit.testing.v1.AppTest) on real DuckDB files.

Numbers on the page are checked against an independent computation (numpy over the rows we
wrote); broken inputs must give a short st.error and never an exception.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
DAY = datetime(2025, 11, 20, tzinfo=UTC)


def write_trials(path: Path) -> dict[str, float]:
    """Two runs; returns the expected summary of the newest one (the page's default range)."""
    rng = np.random.default_rng(7)
    rows: list[tuple[Any, ...]] = []
    trial_id = 0
    # An older run that must NOT count in the default range.
    for i in range(40):
        trial_id += 1
        t = DAY + timedelta(hours=8, seconds=20 * i)
        rows.append((trial_id, "run-old", "gemma4:e4b", t, t + timedelta(seconds=9), 9000.0, "ok", None))
    latencies: list[float] = []
    statuses: list[str] = []
    for i in range(300):
        trial_id += 1
        t = DAY + timedelta(hours=17, minutes=30, seconds=12 * i)  # 17:30 -> 18:29:48
        in_window = DAY + timedelta(hours=17, minutes=58) <= t < DAY + timedelta(hours=18, minutes=4)
        if in_window and i % 10 != 0:
            status, latency, error = "timeout", None, "timed out after 1m0s (litellm.Timeout)"
        elif i % 97 == 5:
            status, latency, error = "error", 1200.0, "connection reset"
        else:
            status, latency, error = "ok", float(rng.lognormal(np.log(4100), 0.24)), None
        statuses.append(status)
        if latency is not None:
            latencies.append(latency)
        finished = t + timedelta(milliseconds=latency or 60000)
        rows.append((trial_id, "run-new", "gemma4:e4b", t, finished, latency, status, error))
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE trials (trial_id BIGINT, run_id VARCHAR, model VARCHAR, started_at TIMESTAMP,"
        " finished_at TIMESTAMP, latency_ms DOUBLE, status VARCHAR, error VARCHAR)"
    )
    con.executemany(
        "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(a, b, c, d.replace(tzinfo=None), e.replace(tzinfo=None), f, g, h) for a, b, c, d, e, f, g, h in rows],
    )
    con.close()
    old = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    os.utime(path, (old, old))  # a finished run: the file has not changed for a while
    failures = sum(s != "ok" for s in statuses)
    return {
        "trials": len(statuses),
        "failures": failures,
        "failure_rate": failures / len(statuses),
        "p50_ms": float(np.percentile(latencies, 50)),  # numpy's default is linear interpolation
        "p95_ms": float(np.percentile(latencies, 95)),
        "timeouts": sum(s == "timeout" for s in statuses),
    }


def run_timeline(monkeypatch: pytest.MonkeyPatch, db: Path | str) -> AppTest:
    monkeypatch.setenv("OASIS_OPS_DB", str(db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/timeline.py").run()
    return at


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+) (ms|s)", text)
    assert match, text
    return float(match.group(1)) * (1 if match.group(2) == "ms" else 1000)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_timeline_shows_the_latest_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    expected = write_trials(db)
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

    metrics = _metrics(at)
    assert int(metrics["Trials"].replace(",", "")) == expected["trials"]  # only run-new
    assert int(metrics["Failures"].replace(",", "")) == expected["failures"]
    assert metrics["Failure rate"].endswith("%")
    assert float(metrics["Failure rate"].rstrip("%")) == pytest.approx(expected["failure_rate"] * 100, abs=0.051)
    assert _ms(metrics["p50 latency"]) == pytest.approx(expected["p50_ms"], abs=5.1)
    assert _ms(metrics["p95 latency"]) == pytest.approx(expected["p95_ms"], abs=5.1)

    # Where the data comes from, and the failure window in the failing-buckets table.
    text = " ".join(m.value for m in at.markdown)
    assert str(db) in text and "Finished" in text
    assert "17:58–18:04 UTC" in text
    failing = list(at.table[0].value.index)
    assert [f"2025-11-20 {m}" for m in ("17:58", "17:59", "18:00", "18:01", "18:02", "18:03")] == [
        b for b in failing if "17:58" <= b[-5:] <= "18:03"
    ]
    # The whole-bucket table and its CSV download are there.
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 60  # 17:30..18:29, 1-minute buckets
    assert any(el.type == "download_button" for el in at.main)


def test_timeline_range_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    expected = write_trials(db)
    at = run_timeline(monkeypatch, db)
    next(s for s in at.selectbox if s.label == "Run").set_value(1).run()  # the older run
    assert _metrics(at)["Trials"] == "40" and _metrics(at)["Failures"] == "0"

    mode = at.button_group(key="tl_mode")
    mode.set_value("Custom").run()
    at.text_input(key="tl_from").input("2025-11-20T17:58:00Z").run()
    at.text_input(key="tl_to").input("2025-11-20T18:04:00Z").run()
    assert not at.exception
    metrics = _metrics(at)
    assert int(metrics["Trials"]) == 30 and int(metrics["Failures"]) == expected["timeouts"] == 27

    at.text_input(key="tl_to").input("not a time").run()
    assert not at.exception
    assert at.error and "Invalid input" in at.error[0].value and "not a time" in at.error[0].value

    at.button_group(key="tl_mode").set_value("Last hours").run()
    at.number_input(key="tl_hours").set_value(1.0).run()
    assert not at.exception and not at.error
    # The last hour before the newest trial (18:29:48): 17:29:48 onwards = all of run-new.
    assert int(_metrics(at)["Trials"]) == expected["trials"]


def _not_a_trial_table(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE invoices (id INTEGER, amount DOUBLE)")
    con.close()


@pytest.mark.parametrize(
    ("make", "headline"),
    [
        (None, "Trial database not found"),
        (lambda p: p.write_bytes(b"definitely not a database\n" * 400), "Not a readable DuckDB database"),
        (lambda p: p.write_text("trial_id,status\n1,ok\n"), "Not a readable DuckDB database"),
        (_not_a_trial_table, "Not a trial table"),
    ],
    ids=["missing", "garbage", "csv", "not-a-trial-table"],
)
def test_bad_files_give_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make, headline: str) -> None:
    db = tmp_path / "trials.duckdb"
    if make is not None:
        make(db)
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1
    message = at.error[0].value
    assert headline in message
    assert "Traceback" not in message and len(message) < 600


def test_no_database_configured_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./oasis-ops.toml
    at = run_timeline(monkeypatch, "")
    assert not at.exception and not at.error
    assert any("No trial database chosen" in i.value for i in at.info)


def test_switching_database_in_the_sidebar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    write_trials(db)
    at = run_timeline(monkeypatch, db)
    assert _metrics(at)["Trials"] == "300"
    at.text_input(key="db_path_input").input(str(tmp_path / "other.duckdb")).run()
    assert not at.exception
    assert at.error and "Trial database not found" in at.error[0].value


def test_quick_picks_switch_between_the_live_run_and_the_replay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In the demo the sidebar offers the live run and the replayed incident one click away;
    the free-text path still works, and picking again goes back."""
    from oasis_ops.demo.world import REPLAY_DB_ENV
    from oasis_ops.server import DEMO_DIR_ENV

    live, replayed = tmp_path / "trials.duckdb", tmp_path / "replay" / "trials.duckdb"
    write_trials(live)
    replayed.parent.mkdir()
    write_trials(replayed)
    con = duckdb.connect(str(replayed))
    con.execute("DELETE FROM trials WHERE run_id = 'run-new' AND trial_id % 3 = 0")  # 200 of the 300 stay
    con.close()
    monkeypatch.setenv(DEMO_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(REPLAY_DB_ENV, str(replayed))
    at = run_timeline(monkeypatch, live)
    assert not at.exception and not at.error
    pick = at.button_group(key="db_path_pick")
    assert [o.content for o in pick.proto.options] == ["Live demo run", "Replayed incident 2025-11-20"]
    assert pick.value == "Live demo run" and _metrics(at)["Trials"] == "300"
    assert any("This is a demo" in i.value and "replayed incident of 2025-11-20" in i.value for i in at.info)

    at.button_group(key="db_path_pick").set_value("Replayed incident 2025-11-20").run()
    assert not at.exception and not at.error
    assert _metrics(at)["Trials"] == "200"
    assert at.text_input(key="db_path_input").value == str(replayed)

    # A typed path is no quick pick: none is selected.
    at.text_input(key="db_path_input").input(str(tmp_path / "elsewhere.duckdb")).run()
    assert at.button_group(key="db_path_pick").value is None
    assert at.error and "Trial database not found" in at.error[0].value

    at.button_group(key="db_path_pick").set_value("Live demo run").run()
    assert not at.exception and not at.error
    assert _metrics(at)["Trials"] == "300" and at.text_input(key="db_path_input").value == str(live)


def test_no_replay_pick_outside_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    write_trials(db)
    at = run_timeline(monkeypatch, db)
    assert at.button_group(key="db_path_pick").value == "Configured database"
    assert not any("This is a demo" in i.value for i in at.info)


@pytest.mark.slow
def test_pages_read_a_file_a_writer_holds_open(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A harness holding the trial DB read-write for the whole run (DuckDB's lock keeps every
    other process out, for minutes): the Timeline and Live pages read it all the same, from a
    snapshot copy, and say so; the writer loses no insert."""
    from helpers_trials import writer_holding

    db = tmp_path / "held run.duckdb"  # a space in the path too
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE trials (trial_id BIGINT, run_id VARCHAR, model VARCHAR, started_at TIMESTAMP,"
        " finished_at TIMESTAMP, latency_ms DOUBLE, status VARCHAR, error VARCHAR)"
    )
    con.close()
    with writer_holding(db, tmp_path) as result:
        with pytest.raises(duckdb.IOException, match="[Ll]ock"):  # the file is really held
            duckdb.connect(str(db), read_only=True).close()
        at = run_timeline(monkeypatch, db)
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert int(_metrics(at)["Trials"].replace(",", "")) > 0
        text = " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])
        assert "snapshot" in text.lower(), text
        at.switch_page("pages/live.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        with pytest.raises(duckdb.IOException, match="[Ll]ock"):  # still held: no page took it over
            duckdb.connect(str(db), read_only=True).close()
    assert json.loads(result.read_text())["failures"] == []


def test_timeline_shows_host_memory_vram_and_swap_beside_the_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The post-mortem reads the sidecar as the Live page does: free memory (its lowest per
    bucket), VRAM per GPU (its most, dashed total) and swap-outs on the trials' time axis; a
    trial DB without a sidecar draws only the trial panels, without an error."""
    import streamlit as st

    from oasis_ops.sidecar import Sidecar

    db = tmp_path / "trials.duckdb"
    write_trials(db)  # run-new: 17:30 -> 18:29:48
    st.cache_data.clear()
    at = run_timeline(monkeypatch, db)
    assert not at.exception and not at.error
    spec = " ".join(str(el.proto.spec) for el in at.main if getattr(el.proto, "spec", None))
    assert "Latency (s)" in spec and "Free memory" not in spec and "GPU memory" not in spec  # no sidecar: no host panels

    start = DAY + timedelta(hours=17, minutes=30)
    host, gpus = [], []
    for i in range(0, 3600, 10):
        ts = start + timedelta(seconds=i)
        pages = 1_500_000 - i * 300  # free memory falling through the run
        host.append({"ts": ts, "mem_total_bytes": 64_000_000_000, "mem_free_bytes": pages * 4096,
                     "mem_available_bytes": pages * 4096 + 10**9, "page_size": 4096, "pages_free": pages,
                     "swap_used_bytes": 0, "swapins": 0, "swapouts": max(0, i - 1700) * 3, "pressure": None,
                     "source": "linux:/proc"})  # fmt: skip
        used = 20_000_000_000 + (4_000_000_000 if i >= 1680 else 0)  # a second model's 4 GB from 17:58
        gpus.append({"ts": ts, "gpu_index": 0, "gpu_uuid": "GPU-0", "name": "NVIDIA GeForce RTX 4090", "vendor": "nvidia",
                     "memory_total_bytes": 25_757_220_864, "memory_used_bytes": used, "memory_free_bytes": 25_757_220_864 - used,
                     "utilization_percent": 90.0, "temperature_c": 70.0, "power_w": 300.0, "source": "nvml"})  # fmt: skip
    Sidecar(tmp_path / "trials.ops.duckdb").write_batch({"host_samples": host, "gpu_samples": gpus})
    st.cache_data.clear()
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    element = next(el for el in at.main if getattr(el.proto, "spec", None))
    spec_json = json.loads(element.proto.spec)
    panels = spec_json["vconcat"]
    import pyarrow as pa

    named = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pylist() for d in element.proto.datasets}
    titles = [p["title"]["text"] if isinstance(p["title"], dict) else p["title"] for p in panels]
    memory = next(i for i, t in enumerate(titles) if t.startswith("Free memory"))
    assert titles[memory + 1].startswith("GPU memory used") and titles[memory + 2].startswith("Swap-outs")
    def rows_of(layer: dict[str, Any]) -> list[dict[str, Any]]:  # Altair moves inline rows to named datasets
        data = layer["data"]
        return data["values"] if "values" in data else named[data["name"]]

    def layer(panel: dict[str, Any], name: str) -> dict[str, Any]:
        return next(x for x in panel["layer"] if x.get("name") == name)

    vram_rows = rows_of(layer(panels[memory + 1], "vram_used"))
    by_minute = {r["when"][:5]: r["used_gb"] for r in vram_rows}
    assert by_minute["17:57"] == pytest.approx(20.0) and by_minute["17:58"] == pytest.approx(24.0)  # the most per minute
    free_rows = rows_of(layer(panels[memory], "memory_free"))
    assert free_rows[0]["free_gb"] == pytest.approx((1_500_000 - 50 * 300) * 4096 / 1e9)  # the lowest in 17:30
    # Every panel, host ones included, shares the brush's zoom on the one time axis.
    for panel in panels[:-1]:
        assert all(layer["encoding"]["x"]["scale"]["domain"] == {"param": "zoom"} for layer in panel["layer"] if "x" in layer["encoding"])
