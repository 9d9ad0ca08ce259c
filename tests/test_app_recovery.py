"""The Recovery page, headless (AppTest), on real processes: a fake `ollama serve` with a real
runner child and a decoy, a loopback Ollama API, a real sidecar and a real control channel.

Clicking Hard-kill only opens the confirmation (the pending action lives in session_state, so
AppTest can click inside the dialog); confirming kills exactly the runner shown, the result
appears inline and the audit table gets the row; cancelling kills nothing and is audited.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, build_pauser, modelfile_for, ps_entry, utc
from streamlit.testing.v1 import AppTest

from oasis_ops.actions import is_dead
from oasis_ops.control import ResizableLimiter, RunnerControl
from oasis_ops.sidecar import Sidecar

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("gcc") is None, reason="needs Linux /proc and gcc"
)
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
GEMMA = "gemma4:e4b"


@pytest.fixture(scope="module")
def pauser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pauser(tmp_path_factory.mktemp("pauser"))


@pytest.fixture
def world(pauser: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    blob = str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8))
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    server = FakeOllama()
    try:
        serve_pid = tree.start([
            [ollama, "runner", "--ollama-engine", "--model", blob, "--port", "54107"],
            [sys.executable, "-c", "import time; time.sleep(600)", "ollama runner --model " + blob],
        ])  # fmt: skip
        server.models = [ps_entry(GEMMA, expires_at=utc(-75))]
        server.modelfiles = {GEMMA: modelfile_for(GEMMA, blob)}
        db = tmp_path / "trials.duckdb"
        monkeypatch.setenv("OASIS_OPS_DB", str(db))
        monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", server.url)
        monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
        monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
        monkeypatch.setenv("OASIS_OPS_CONTROL_ACK_TIMEOUT_S", "5")
        # the page runs in this process: pin "the current serve" (other serves may run here)
        monkeypatch.setattr("oasis_ops.actions.context.serve_pid_listening", lambda url: serve_pid)
        yield {"tree": tree, "server": server, "serve_pid": serve_pid, "db": db,
               "runner": tree.pid_of("--port", "54107"), "decoy": tree.pid_of("-c", "import time; time.sleep(600)")}  # fmt: skip
    finally:
        server.close()
        tree.close()


def open_recovery() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/recovery.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def alive(pid: int) -> bool:
    try:
        return not is_dead(pid, psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return False


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_hard_kill_confirm_kills_the_runner_and_audits(world: dict[str, object]) -> None:
    runner, decoy = int(world["runner"]), int(world["decoy"])  # type: ignore[call-overload]
    at = open_recovery()
    text = markdown(at)
    assert f"runner pid **{runner}**" in text and "Stopping for 1m1" in text  # 75 s ago

    at.button(key=f"rc_kill_{GEMMA}").click().run()
    assert alive(runner), "clicking Hard-kill must only open the confirmation"
    [code] = [c.value for c in at.code if "SIGKILL" in c.value]
    assert f"SIGKILL pid {runner}" in code and "--port 54107" in code and "RSS" in code and "Stopping for 1m1" in code

    at.checkbox(key="dlg_respawn").uncheck().run()  # FakeOllama spawns no new runner
    at.button(key="dlg_confirm").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not alive(runner) and alive(decoy) and alive(int(world["serve_pid"]))  # type: ignore[call-overload]
    assert any("Hard-kill: done" in s.value and f"pid {runner}" in s.value for s in at.success)
    frame = at.dataframe[0].value
    assert list(frame["action"]) == ["hard_kill"] and list(frame["outcome"]) == ["done"]
    assert list(frame["requested_by"]) == ["ui"]


def test_cancel_kills_nothing_and_is_audited(world: dict[str, object]) -> None:
    runner = int(world["runner"])  # type: ignore[call-overload]
    at = open_recovery()
    at.button(key=f"rc_kill_{GEMMA}").click().run()
    at.button(key="dlg_cancel").click().run()
    assert alive(runner)
    assert not [c for c in at.code if "SIGKILL" in c.value], "the dialog must be closed"
    rows = Sidecar(Path(str(world["db"])).with_name("trials.ops.duckdb")).actions_since(utc(-600))
    # the user said no: `cancelled`, never `refused` (that is oasis-ops saying no)
    assert list(rows["outcome"]) == ["cancelled"] and "Cancel pressed" in str(rows["detail"][0])
    assert any("Hard-kill: cancelled." in i.value for i in at.info), [i.value for i in at.info]


def test_runner_control_and_watchdog_switch(world: dict[str, object], tmp_path: Path) -> None:
    control_dir = Path(str(world["db"])).with_name("trials.control")
    limiter = ResizableLimiter(4)
    at = open_recovery()
    assert "no runner has acknowledged anything" in markdown(at)
    with RunnerControl(control_dir, limiter=limiter, poll_interval_s=0.1, heartbeat_interval_s=0.2):
        at.number_input(key="rc_n").set_value(2).run()
        at.button(key="rc_set_n").click().run()
        assert "Set concurrency" in markdown(at) or any("Set concurrency" in c.value for c in at.code)
        at.button(key="dlg_confirm").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert limiter.limit == 2
        assert any("Set concurrency: done" in s.value for s in at.success)
        assert "applied **2**" in markdown(at)
        at.button(key="rc_pause").click().run()
        at.button(key="dlg_confirm").click().run()
        assert limiter.paused
        # in words: not "paused requested –, applied False"
        assert "**paused**" in markdown(at) and "applied True" not in markdown(at), markdown(at)
    # the watchdog switch is persisted in the control directory and audited
    at.toggle(key="wd_enabled").set_value(True).run()
    assert (control_dir / "watchdog.json").is_file()
    assert '"enabled": true' in (control_dir / "watchdog.json").read_text()
    assert "watchdog on" in markdown(at)
    frame = at.dataframe[0].value
    assert list(frame["action"])[:3] == ["watchdog", "pause", "concurrency"]
    assert threading.active_count() >= 1


def test_the_recover_dialog_says_each_thing_once(world: dict[str, object]) -> None:
    runner = int(world["runner"])  # type: ignore[call-overload]
    at = open_recovery()
    at.button(key=f"rc_recover_{GEMMA}").click().run()
    [code] = [c.value for c in at.code if "Soft-evict" in c.value]
    shown = [code, *(c.label for c in at.checkbox)]
    assert f"SIGKILL pid {runner}" in code
    # the check afterwards is the checkbox's to say (it can be switched off): not also in the plan
    assert sum(text.count("send a tiny request") for text in shown) == 1, shown
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), lines
    at.button(key="dlg_cancel").click().run()
    assert alive(runner)
