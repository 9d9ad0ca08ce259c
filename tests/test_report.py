"""The post-mortem report: Markdown with SVG charts beside it, self-contained HTML, bad input."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers_scenarios import build_scenario

from oasis_ops import cli
from oasis_ops.diagnosis.render import render_html, write_report
from oasis_ops.diagnosis.report import build_report
from oasis_ops.settings import load_settings

SECTIONS = ("## Summary", "## Impact", "## Timeline", "## Root causes", "## Ruled out", "## Memory, in vm_stat's terms",
            "## Runner state changes", "## Actions taken", "## Encoder versus generation timing", "## What to change",
            "## Charts", "## How this report was made")  # fmt: skip


@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    assert cli.main(["demo", "replay", "--out", str(out)]) == 0
    return out / "trials.duckdb"


def test_markdown_report_of_the_replay(replay_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OASIS_OPS_LOG_UTC_OFFSET", raising=False)  # UTC only, whatever the developer's shell says
    out = tmp_path / "postmortem.md"
    assert cli.main(["report", "--db", str(replay_db), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    # The replay's times are the write-up's, in UTC (its logs are at +00:00).
    assert text.startswith("# Post-mortem: gemma4:e4b run oasis-20251120, 2025-11-20 17:58–18:04 UTC")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    assert "between 17:58 UTC and 18:04 UTC;" in text and " local)" not in text
    # healthy period against the window, in one table
    assert re.search(r"\| healthy, before \| .* \| 12,466 \| 6 \| 0.048% \| 4.1 s \| 6.1 s \|", text)
    assert re.search(r"\| incident window \| .* \| 373 \| 366 \| 98% \| .* \| ≥ 60 s \|", text)
    # memory in vm_stat's terms, the runner's state changes, the harness's own evict
    assert "| 18:00:00 | 58,402 | 16,384 | 913 | 504,282 |" in text  # tests/fixtures/macos/vm_stat_1800.txt
    assert "| 18:04:14 | stopping | gemma4:e4b | 48213 |" in text
    assert "evicting gemma4:e4b after 3 consecutive stalls" in text
    assert "The cold start theory is **refuted**" in text
    # charts written beside the file and linked
    for name in ("latency", "memory", "timings"):
        chart = tmp_path / f"postmortem-{name}.svg"
        assert chart.is_file() and chart.read_text().startswith("<svg")
        assert f"](postmortem-{name}.svg)" in text


def test_html_report_is_self_contained(replay_db: Path, tmp_path: Path) -> None:
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    pm = build_report(replay_db, settings, now=datetime(2025, 11, 21, 9, 0, tzinfo=UTC))
    written = write_report(pm, tmp_path / "pm.html")
    html = written.path.read_text(encoding="utf-8")
    assert written.format == "html" and written.charts == [] and written.incidents == 1
    assert html.count("<svg") == 3 and "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:""", html), "the report must not fetch anything"
    assert "Generated 2025-11-21 09:00 UTC" in html
    assert 'class="finding refuted"' in html and html.count('class="finding confirmed"') == 3
    assert render_html(pm) == html
    short = write_report(pm, tmp_path / "pm.htm")  # the other HTML suffix
    assert short.format == "html" and short.path.read_text(encoding="utf-8") == html


def test_report_without_an_incident(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "slow", [], slow=True)
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    pm = build_report(scen.db, settings)
    md = tmp_path / "r.md"
    write_report(pm, md)
    text = md.read_text()
    assert "no incident" in text.splitlines()[0] and "there is no incident to explain" in text
    assert "## Root causes" not in text


def test_report_bad_input(replay_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--db", str(replay_db), "--out", str(tmp_path / "r.pdf")]) == 2
    assert "must end in .md or .html" in capsys.readouterr().err
    assert cli.main(["report", "--db", str(replay_db), "--out", str(tmp_path / "no" / "r.md")]) == 2
    assert cli.main(["report", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "r.md")]) == 1
    assert not list(tmp_path.glob("*.md")) and not list(tmp_path.glob(".*partial*"))


def test_report_of_an_explicit_range(replay_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "range.html"
    args = ["report", "--db", str(replay_db), "--from", "2025-11-20T17:00:00Z", "--to", "2025-11-20T18:10:00Z", "--out", str(out)]
    assert cli.main(args) == 0
    html = out.read_text()
    assert "2025-11-20 17:00–17:58" in html  # the healthy period starts at --from
    assert "2025-11-20 17:58–18:04" in html


def test_report_shows_local_times_at_an_offset(replay_db: Path, tmp_path: Path) -> None:
    """`--utc-offset` adds the local wall-clock time next to each UTC time (e.g. a run in Paris)."""
    out = tmp_path / "paris.md"
    assert cli.main(["report", "--db", str(replay_db), "--utc-offset", "+01:00", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "between 17:58 UTC (18:58 local) and 18:04 UTC (19:04 local);" in text
