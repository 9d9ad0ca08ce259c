"""A junk state.json (hand-edited, or written by a broken runner) never crashes the control channel:
runner_state() treats the bad field as absent with a note, wait_applied() raises only
NotAcknowledged, and `oasis-ops concurrency` exits 3 with one line instead of a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from oasis_ops.cli import main as cli_main
from oasis_ops.control import ControlChannel
from oasis_ops.control.files import as_float, ensure_control_dir, parse_time
from oasis_ops.errors import NotAcknowledged

NOW = datetime.now(UTC).isoformat()
BAD_STATES: dict[str, tuple[str, str]] = {
    # name: (state.json text, what last_note must mention)
    "pid -1": (json.dumps({"pid": -1, "applied_version": 0, "heartbeat_at": NOW}), "pid -1 is not a process id"),
    "pid 0": (json.dumps({"pid": 0, "heartbeat_at": NOW}), "pid 0 is not a process id"),
    "pid true": (json.dumps({"pid": True, "heartbeat_at": NOW}), "pid True is not a process id"),
    "pid float": (json.dumps({"pid": 12.0, "heartbeat_at": NOW}), "pid 12.0 is not a process id"),
    "pid text": (json.dumps({"pid": "123", "heartbeat_at": NOW}), "pid '123' is not a process id"),
    "heartbeat before year 1": (json.dumps({"pid": 1, "heartbeat_at": "0001-01-01T00:00:00+05:00"}), "heartbeat_at '0001-01-01"),
    "stopped after year 9999": (json.dumps({"heartbeat_at": NOW, "stopped_at": "9999-12-31T23:59:59-05:00"}), "stopped_at '9999-12-31"),
    "started_at a list": (json.dumps({"heartbeat_at": NOW, "started_at": [1, 2]}), "started_at [1, 2]"),
    "create_time NaN": ('{"pid": 1, "create_time": NaN, "heartbeat_at": "' + NOW + '"}', ""),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
}


def write_state(directory: Path, text: str) -> None:
    ensure_control_dir(directory)
    (directory / "state.json").write_text(text, encoding="utf-8")


def test_parse_time_and_as_float_never_raise() -> None:
    assert parse_time("0001-01-01T00:00:00+05:00") is None
    assert parse_time("9999-12-31T23:59:59-05:00") is None
    assert parse_time("0001-01-01T00:00:00-05:00") == datetime(1, 1, 1, 5, tzinfo=UTC)
    assert parse_time(1e300) is None and parse_time(float("nan")) is None
    assert as_float(float("nan")) is None and as_float(float("inf")) is None and as_float(10**400) is None
    assert as_float(2) == 2.0


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_runner_state_treats_junk_as_absent(tmp_path: Path, case: str) -> None:
    text, note = BAD_STATES[case]
    directory = tmp_path / "c.control"
    write_state(directory, text)
    channel = ControlChannel(directory)
    state = channel.runner_state()
    assert (channel.last_note or "").count("\n") == 0 and note in (channel.last_note or "")
    if state is not None:
        assert state.pid is None or state.pid > 0
        assert state.create_time is None or state.create_time == state.create_time  # never NaN
        assert isinstance(state.describe(), str)
    version = channel.request(max_concurrency=2)
    with pytest.raises(NotAcknowledged, match=f"did not acknowledge version {version}") as info:
        channel.wait_applied(version, timeout_s=0.2, poll_s=0.05)
    assert "\n" not in str(info.value)


def test_a_good_state_has_no_note(tmp_path: Path) -> None:
    directory = tmp_path / "c.control"
    write_state(directory, json.dumps({"pid": 1, "applied_version": 4, "heartbeat_at": NOW}))
    channel = ControlChannel(directory)
    state = channel.runner_state()
    assert state is not None and state.pid == 1 and state.applied_version == 4 and channel.last_note is None


@pytest.mark.parametrize("case", ["pid -1", "heartbeat before year 1", "stopped after year 9999", "deeply nested"])
def test_cli_concurrency_exits_3_with_one_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OASIS_OPS_CONTROL_ACK_TIMEOUT_S", "0.3")
    db = tmp_path / "trials.duckdb"
    write_state(tmp_path / "trials.control", BAD_STATES[case][0])
    code = cli_main(["concurrency", "2", "--db", str(db)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 3
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not_acknowledged" in lines[0] and "version 1" in lines[0], captured.err
    request: dict[str, Any] = json.loads((tmp_path / "trials.control" / "control.json").read_text())
    assert request["version"] == 1 and request["max_concurrency"] == 2  # the request itself stands
