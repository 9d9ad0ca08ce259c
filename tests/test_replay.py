"""The incident replay (`oasis-ops demo replay`): the write-up's day, checked through the same
library paths the console uses (TrialSource rollups, the sidecar's reads, the log parsers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from oasis_ops import cli
from oasis_ops.demo import replay
from oasis_ops.logs.ingest import take_tables
from oasis_ops.logs.parse import HarnessLogParser, LocalClock, ServerLogParser
from oasis_ops.probes.macos import parse_sysctl, parse_vm_stat
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials import TrialSource

FIXTURES = Path(__file__).parent / "fixtures" / "macos"


def utc(hour: int, minute: int, second: int = 0) -> datetime:
    """A wall-clock time of the replayed day: the write-up's times are UTC in the replay (+00:00)."""
    return datetime(2025, 11, 20, hour, minute, second, tzinfo=UTC)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("replay")
    result = replay.write_replay(directory)
    assert result.ok + result.failed == result.trials
    return directory


@pytest.fixture(scope="module")
def source(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrialSource]:
    settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(tmp_path_factory.mktemp("snaps"))})
    src = TrialSource(out / replay.TRIALS_FILE, settings)
    src.refresh()
    yield src
    src.close()


def test_the_day_before_the_incident_is_healthy(source: TrialSource) -> None:
    before = source.summary(utc(9, 0), utc(17, 42))
    assert 4000 <= before["p50_ms"] <= 4200
    assert 5900 <= before["p95_ms"] <= 6300
    assert 0.0003 <= before["failure_rate"] <= 0.001  # ~0.05%
    assert before["trials"] == 12_454


def test_the_failure_window_is_17_58_to_18_04_utc(source: TrialSource) -> None:
    rollup = source.rollup(utc(17, 30), utc(18, 15), "1m")
    rollup["minute"] = pd.to_datetime(rollup["minute"], utc=True)
    failing = rollup[rollup["failure_rate"].fillna(0) >= 0.2]
    assert list(failing["minute"]) == [pd.Timestamp(utc(17, 58) + timedelta(minutes=i)) for i in range(6)]
    window = source.summary(utc(17, 58), utc(18, 4))
    assert 0.97 <= window["timeouts"] / window["trials"] <= 0.99  # ~98%, a few slip through
    assert window["failures"] == window["timeouts"]
    timeouts = rollup[(rollup["timeouts"] > 0) & (rollup["minute"] >= pd.Timestamp(utc(17, 58)))]
    assert timeouts["p50_ms"].max() < 60_100  # the failed calls ended at the 60 s timeout
    assert window["max_ms"] == pytest.approx(248_239.0)  # the outlier started in the window
    # Nothing starts after the eviction: the deadlock stopped the run.
    assert source.summary(utc(18, 4, 13), utc(18, 15))["trials"] == 0


def test_day_totals_follow_the_write_up(source: TrialSource) -> None:
    day = source.summary(utc(8, 0), utc(19, 0))
    assert 12_300 <= day["ok"] <= 12_600  # write-up: 12,454
    assert 350 <= day["failures"] <= 390  # write-up: 376
    assert day["max_ms"] == pytest.approx(248_239.0)
    runs = source.runs()
    assert list(runs["run_id"]) == [replay.RUN_ID]


def _snapshot(name: str) -> dict[str, int]:
    return parse_vm_stat((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (utc(17, 0), _snapshot("vm_stat_1700.txt")),
        (utc(17, 30), {"pages_free": 1_220_118, "swapouts": 0}),
        (utc(17, 45), _snapshot("vm_stat_1745.txt")),
        (utc(18, 0), _snapshot("vm_stat_1800.txt")),
        (utc(18, 15), {"pages_free": 58_011, "swapouts": 837_610}),
    ],
)
def test_host_samples_follow_the_vm_stat_snapshots(out: Path, when: datetime, expected: dict[str, int]) -> None:
    rows = Sidecar(out / replay.SIDECAR_FILE).host_samples_since(when, when + timedelta(seconds=1))
    assert len(rows) == 1
    row = rows.iloc[0]
    for key in ("pages_free", "swapins", "swapouts", "pageins", "pageouts"):
        if key in expected:
            assert row[key] == expected[key], key
    assert row["page_size"] == 16384
    assert row["mem_free_bytes"] == expected["pages_free"] * 16384
    if "pages_inactive" in expected:
        assert row["mem_available_bytes"] == (expected["pages_free"] + expected["pages_speculative"] + expected["pages_inactive"]) * 16384


def test_host_memory_runs_out_and_pressure_turns_critical(out: Path) -> None:
    hosts = Sidecar(out / replay.SIDECAR_FILE).host_samples_since(utc(8, 0), utc(19, 0), max_rows=10_000)
    assert len(hosts) == 3331  # every 10 s, 09:00-18:15
    assert hosts["swapouts"].is_monotonic_increasing and hosts["swapins"].is_monotonic_increasing
    sysctl = parse_sysctl((FIXTURES / "sysctl.txt").read_text())
    at_18 = hosts[pd.to_datetime(hosts["ts"], utc=True) == pd.Timestamp(utc(18, 0))].iloc[0]
    assert at_18["pressure"] == sysctl["pressure"] == 100.0
    assert at_18["mem_total_bytes"] == sysctl["mem_total_bytes"]
    assert at_18["swap_used_bytes"] == sysctl["swap_used_bytes"]
    assert set(hosts["source"]) == {"macos:vm_stat"}


def test_model_is_loaded_all_day_then_stopping_from_the_eviction(out: Path) -> None:
    sidecar = Sidecar(out / replay.SIDECAR_FILE)
    models = sidecar.model_samples_since(utc(8, 0), utc(19, 0), max_rows=10_000)
    ts = pd.to_datetime(models["ts"], utc=True)
    evicted = pd.Timestamp(utc(18, 4, 13))
    assert set(models.loc[ts < evicted, "state"]) == {"loaded"}
    assert set(models.loc[ts > evicted + pd.Timedelta(seconds=1), "state"]) == {"stopping"}
    assert set(models["processor"]) == {"100% GPU"} and set(models["model"]) == {"gemma4:e4b"}
    stuck = models[models["state"] == "stopping"]
    assert stuck["runner_cpu_percent"].between(99.0, 100.0).all()
    assert stuck["runner_rss_bytes"].between(10.5e9, 10.7e9).all()
    assert len(set(models["runner_pid"])) == 1  # never killed inside the replayed day
    events = sidecar.events_since(utc(8, 0), utc(19, 0))
    kinds = list(events["kind"])
    assert kinds[0] == "loaded" and kinds[-1] == "stopping" and kinds.count("pressure") == 2
    last = events.iloc[-1]
    assert abs(pd.Timestamp(last["ts"]).tz_convert("UTC") - evicted) < pd.Timedelta(seconds=5)


def test_server_log_parses_cleanly_with_the_incident_in_it(out: Path) -> None:
    parser = ServerLogParser(LocalClock(replay.UTC_OFFSET))
    parser.feed_bytes((out / replay.SERVER_LOG).read_bytes(), 1)
    parser.finish()
    tables = take_tables(parser.rows, replay.SERVER_LOG)  # rows made line by line and in bulk
    counts = parser.counts
    assert counts.junk == 0
    # Ollama 0.30.6: one llama-server spawn, its "started in" line twice (as Ollama prints it),
    # no Go load-request line; llama.cpp says flash attention is on
    assert counts.events["server_config"] == 1 and counts.events["runner_start"] == 1
    assert counts.events["runner_started"] == 2 and "load_request" not in counts.events
    assert counts.events["flash_attention"] == 1
    requests = tables["log_requests"].to_pandas().sort_values("line_no")
    chats = requests[requests["path"] == "/api/chat"]
    aborted = chats[chats["latency_ms"] == 60_000.0]  # Gin prints 1m0s
    assert set(aborted["status"]) == {500}  # a client leaving a request that waits for the runner: 500, not 499
    assert len(aborted[aborted["ts"] < pd.Timestamp(utc(17, 58))]) == 2  # the morning's two timeouts
    assert len(aborted[aborted["ts"] >= pd.Timestamp(utc(17, 58))]) >= 360
    assert chats["latency_ms"].max() == pytest.approx(248_239.102)
    evict = requests[requests["path"] == "/api/generate"]
    assert len(evict) == 1 and evict["ts"].iloc[0] == pd.Timestamp(utc(18, 4, 13))
    timings = tables["log_timings"].to_pandas().sort_values("line_no")
    assert timings["ts"].notna().all()
    # The warm encoder: 17 ms on every model call, the failed ones in the window included.
    assert set(timings["image_encode_ms"]) == {17.0}
    in_window = timings[(timings["ts"] >= pd.Timestamp(utc(17, 59))) & (timings["ts"] < pd.Timestamp(utc(18, 5)))]
    assert len(in_window) >= 360 and (in_window["eval_ms"] > 20_000).all()


def test_runner_log_has_the_write_ups_lines(out: Path) -> None:
    text = (out / replay.RUNNER_LOG).read_text()
    assert "2025-11-20 17:41:58 trial 12453 ok in 6.09s\n" in text
    assert "2025-11-20 17:42:03 trial 12454 ok in 5.22s\n" in text
    assert "2025-11-20 18:04:12 trial " in text and " ok in 248.24s\n" in text
    assert "2025-11-20 18:04:13 evicting gemma4:e4b after 3 consecutive stalls (keep_alive=0)\n" in text
    parser = HarnessLogParser(LocalClock(replay.UTC_OFFSET))
    parser.feed_bytes(text.encode(), 1)
    assert parser.counts.junk == 0 and parser.counts.unrecognized == 0
    assert parser.counts.harness["timeout"] >= 360 and parser.counts.harness["evict"] == 1


def test_replay_is_deterministic_and_refuses_to_overwrite(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = tmp_path / "again"
    assert cli.main(["demo", "replay", "--out", str(again), "--no-ingest"]) == 0
    printed = capsys.readouterr().out
    assert "2025-11-20 17:58–18:04 UTC: 366 of 373 timed out" in printed and " at +" not in printed
    for name in (replay.SERVER_LOG, replay.RUNNER_LOG):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    before = (again / replay.RUNNER_LOG).stat().st_mtime_ns
    assert cli.main(["demo", "replay", "--out", str(again)]) != 0
    assert "--force" in capsys.readouterr().err
    assert (again / replay.RUNNER_LOG).stat().st_mtime_ns == before
    assert cli.main(["demo", "replay", "--out", str(tmp_path / "x"), "--utc-offset", "noon"]) != 0
    assert "not a UTC offset" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_log_lines_and_database_agree_on_the_time(source: TrialSource, out: Path) -> None:
    """By default the logs' wall-clock times are the databases' UTC times: runner.log's
    `17:42:03 trial 12454 ok in 5.22s` is the trial that started at 17:41:57.78 UTC."""
    assert "2025-11-20 17:42:03 trial 12454 ok in 5.22s\n" in (out / replay.RUNNER_LOG).read_text()
    started = source.summary(utc(17, 41, 57), utc(17, 41, 58))
    assert started["trials"] == 1 and started["max_ms"] == pytest.approx(5220.0)
    server = (out / replay.SERVER_LOG).read_text()
    assert "time=2025-11-20T09:00:01.920Z level=INFO source=llama_server.go:1118" in server  # slog: UTC is Z
    assert "[GIN] 2025/11/20 - 18:04:13 | 200 |" in server  # the eviction, as in the sidecar (18:04:13 UTC)


def test_another_utc_offset_shifts_the_databases_not_the_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plus1 = tmp_path / "plus1"
    assert cli.main(["demo", "replay", "--out", str(plus1), "--utc-offset", "+01:00", "--no-ingest"]) == 0
    assert "16:58–17:04 UTC (17:58–18:04 at +01:00 in the logs)" in capsys.readouterr().out
    assert "2025-11-20 17:42:03 trial 12454 ok in 5.22s\n" in (plus1 / replay.RUNNER_LOG).read_text()
    settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(tmp_path / "snaps")})
    src = TrialSource(plus1 / replay.TRIALS_FILE, settings)
    try:
        src.refresh()
        window = src.summary(utc(16, 58), utc(17, 4))
        assert window["trials"] == 373 and window["timeouts"] == 366
    finally:
        src.close()
