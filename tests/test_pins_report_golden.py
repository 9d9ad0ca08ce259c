"""The whole post-mortem of the replayed incident, and the report of a healthy run, as golden
Markdown and HTML: every sentence, table and number a reader gets (mutation testing found most of
the report's timeline and impact text unchecked: the other report tests look for a few phrases).

The replay is seeded and `now` is pinned, so the text is deterministic; the temporary paths are
replaced by `<DIR>`. When a change to the report is meant, regenerate the golden files with
`OASIS_OPS_REGOLD=1 pytest tests/test_pins_report_golden.py` and read the diff before committing."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_scenarios import build_scenario

from oasis_ops.demo import replay
from oasis_ops.diagnosis.render import render_html, render_markdown
from oasis_ops.diagnosis.report import build_report
from oasis_ops.settings import load_settings

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
NOW = datetime(2025, 11, 21, 9, 0, tzinfo=UTC)


def _check(text: str, name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("OASIS_OPS_REGOLD"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed: if meant, regenerate (see the module docstring)"


def _report(db: Path, offset: str = "") -> tuple[str, str]:
    settings = load_settings(env={}).replace(db=str(db), log_utc_offset=offset)
    pm = build_report(db, settings, now=NOW)
    where = str(db.parent)
    links = {chart.name: f"report-{chart.name}.svg" for chart in pm.charts}
    return render_markdown(pm, links).replace(where, "<DIR>"), render_html(pm).replace(where, "<DIR>")


@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    replay.write_replay(out)
    return out / replay.TRIALS_FILE


def test_the_replayed_incidents_post_mortem_is_exactly_the_golden_one(replay_db: Path) -> None:
    markdown, html = _report(replay_db)
    _check(markdown, "replay_report.md")
    _check(html, "replay_report.html")


def test_a_healthy_runs_report_is_exactly_the_golden_one(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "slow", [], slow=True)
    markdown, _ = _report(scen.db)
    _check(markdown, "healthy_report.md")


def test_the_replays_incidents_and_warnings_json_are_exactly_the_golden_ones(replay_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from oasis_ops.cli import main

    for command, name in ((["incidents"], "replay_incidents.json"), (["warnings"], "replay_warnings.json")):
        assert main([*command, "--db", str(replay_db), "--json"]) == 0
        _check(capsys.readouterr().out.replace(str(replay_db.parent), "<DIR>"), name)


def test_report_json_says_what_was_written(replay_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from oasis_ops.cli import main

    assert main(["report", "--db", str(replay_db), "--out", str(tmp_path / "pm.md"), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {"path": str(tmp_path / "pm.md"), "format": "md", "incidents": 1,
                       "charts": [str(tmp_path / f"pm-{n}.svg") for n in ("latency", "memory", "timings")]}  # fmt: skip
    assert main(["report", "--db", str(replay_db), "--out", str(tmp_path / "pm.html"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(tmp_path / "pm.html"), "format": "html", "incidents": 1, "charts": []}


def test_the_replays_post_mortem_in_local_time_is_exactly_the_golden_one(replay_db: Path) -> None:
    markdown, _ = _report(replay_db, "+01:00")  # every time also in the run's local time
    _check(markdown, "replay_report_local.md")


def test_a_memory_incident_with_an_audited_action_and_no_state_change(tmp_path: Path) -> None:
    from datetime import timedelta

    from helpers_scenarios import INCIDENT_WINDOW_START

    from oasis_ops.sidecar import Sidecar

    scen = build_scenario(tmp_path / "memory", ["memory"])
    Sidecar(scen.sidecar).record_action("concurrency", target="runner", params={"max_concurrency": 1}, requested_by="watchdog",
                                        outcome="done", detail={"message": "max concurrency is now 1"}, duration_ms=812.0,
                                        ts=INCIDENT_WINDOW_START + timedelta(minutes=2, seconds=5))  # fmt: skip
    markdown, _ = _report(scen.db)
    _check(markdown, "memory_report.md")


def test_an_incident_without_telemetry_confirms_nothing(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "client", ["client"])
    scen.sidecar.unlink()  # the windows from the trial table alone: no cause can be checked
    markdown, _ = _report(scen.db)
    _check(markdown, "no_sidecar_report.md")


@pytest.mark.parametrize("fault", ["cold", "client", "flash", "deadlock"])
def test_each_faults_incidents_json_is_exactly_the_golden_one(fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The evidence lines and values of each finding, as `incidents --json` gives them, for each fault alone."""
    from oasis_ops.cli import main

    scen = build_scenario(tmp_path / fault, [fault])
    assert main(["incidents", "--db", str(scen.db), "--json"]) == 0
    _check(capsys.readouterr().out.replace(str(scen.root), "<DIR>"), f"{fault}_incidents.json")
