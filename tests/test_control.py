"""The control channel (Contract 3): atomic files, a real runner process applying changes,
honest timeouts, stale heartbeats, and the thread and asyncio limiters."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_control import max_concurrency, read_log

from oasis_ops.control import (
    AsyncResizableLimiter,
    ControlChannel,
    ResizableLimiter,
    RunnerControl,
    control_dir_for,
    ensure_control_dir,
)
from oasis_ops.errors import ConfigError, NotAcknowledged, UsageError
from oasis_ops.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "helpers_control.py"


def spawn_helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- directory and files ----------------------------------------------------------------------
def test_control_dir_location_and_safety(tmp_path: Path) -> None:
    settings = load_settings(None, env={})
    assert control_dir_for(tmp_path / "trials.duckdb", settings) == tmp_path / "trials.control"
    custom = load_settings(None, env={"OASIS_OPS_CONTROL_DIR": str(tmp_path / "ctl")})
    assert control_dir_for(tmp_path / "trials.duckdb", custom) == tmp_path / "ctl"
    with pytest.raises(UsageError):
        control_dir_for(None, settings)

    old_umask = os.umask(0)  # even with a permissive umask the directory is private
    try:
        directory = ensure_control_dir(tmp_path / "trials.control")
    finally:
        os.umask(old_umask)
    assert directory.stat().st_mode & 0o777 == 0o700
    os.chmod(directory, 0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        ControlChannel(directory).request(max_concurrency=2)
    with pytest.raises(ConfigError, match="writable by others"):
        RunnerControl(directory).start()
    assert not (directory / "control.json").exists()
    os.chmod(directory, 0o700)
    if os.getuid() == 0:  # as root we can hand the directory to another user
        os.chown(directory, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by uid 65534, not by us"):
            ControlChannel(directory).runner_state()
        os.chown(directory, 0, 0)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        ControlChannel(tmp_path / "plain").request(paused=True)


def test_request_versions_and_kept_fields(tmp_path: Path) -> None:
    clock_time = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)
    channel = ControlChannel(tmp_path / "c.control", clock=lambda: clock_time)
    assert channel.requested() is None and channel.runner_state() is None
    assert channel.request(max_concurrency=4, request_timeout_s=60) == 1
    assert channel.request(paused=True, requested_by="dashboard") == 2
    data = channel.requested()
    assert data == {
        "version": 2, "max_concurrency": 4, "paused": True, "request_timeout_s": 60,
        "requested_at": "2025-11-20T18:00:00+00:00", "requested_by": "dashboard",
    }
    for bad in ({"max_concurrency": 0}, {"max_concurrency": 2.5}, {"paused": "yes"}, {"request_timeout_s": -1}):
        with pytest.raises(UsageError):
            channel.request(**bad)  # type: ignore[arg-type]
    assert channel.requested() == data  # nothing written by a refused request
    # A corrupt control.json is treated as absent (with a note) and never reuses a version the
    # runner already applied.
    (channel.dir / "control.json").write_text('{"version": 2, "max_conc')
    (channel.dir / "state.json").write_text(json.dumps({"pid": 1, "applied_version": 9}))
    assert channel.requested() is None and "not valid JSON" in (channel.last_note or "")
    assert channel.request(max_concurrency=1) == 10
    (channel.dir / "state.json").write_text("[1, 2")
    assert channel.runner_state() is None and "state.json is not valid JSON" in (channel.last_note or "")


def test_atomic_writes_never_tear_under_concurrent_readers(tmp_path: Path) -> None:
    directory = ensure_control_dir(tmp_path / "c.control")
    writer = spawn_helper("spam", str(directory), "400")
    bad: list[str] = []
    reads = [0]
    versions: list[int] = []

    def reader(name: str) -> None:
        while writer.poll() is None:
            try:
                text = (directory / name).read_text()
            except FileNotFoundError:
                continue
            try:
                data = json.loads(text)
            except ValueError:
                bad.append(f"{name}: {len(text)} bytes")
                continue
            reads[0] += 1
            if name == "control.json":
                versions.append(data["version"])

    threads = [threading.Thread(target=reader, args=(n,)) for n in ("control.json", "state.json", "control.json")]
    try:
        for thread in threads:
            thread.start()
        writer.wait(timeout=60)
    finally:
        reap(writer)
        for thread in threads:
            thread.join()
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert bad == []
    assert reads[0] > 100
    assert ControlChannel(directory).requested()["version"] == 400  # type: ignore[index]
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]  # no temp files left


# --- honesty: no runner, dead runner, rejected requests ---------------------------------------
def test_wait_applied_without_runner_says_so(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path / "c.control")
    version = channel.request(max_concurrency=1)
    started = time.monotonic()
    with pytest.raises(NotAcknowledged, match=r"did not acknowledge version 1 within 0.5 s: no runner has ever written state.json in") as info:
        channel.wait_applied(version, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert info.value.exit_code == 3


def test_dead_runner_is_reported_with_its_stale_heartbeat(tmp_path: Path) -> None:
    directory = tmp_path / "c.control"
    log = tmp_path / "pool.log"
    runner = spawn_helper("pool", str(directory), str(log), "--workers", "2", "--task-s", "0.05")
    try:
        channel = ControlChannel(directory)
        wait_for(lambda: (s := channel.runner_state()) is not None and s.alive, 20, "runner heartbeat")
        state = channel.runner_state()
        assert state is not None and state.pid == runner.pid and state.pid_alive
        runner.kill()  # dies without writing anything
        runner.wait(timeout=10)
    finally:
        reap(runner)
    version = channel.request(max_concurrency=3)
    later = ControlChannel(directory, clock=lambda: datetime.now(UTC) + timedelta(seconds=42))
    dead = later.runner_state()
    assert dead is not None and dead.pid_alive is False and not dead.alive
    assert dead.heartbeat_age_s is not None and 41 <= dead.heartbeat_age_s <= 50
    assert "runner gone" in dead.describe()
    with pytest.raises(NotAcknowledged, match=rf"last heartbeat 4\d s ago, pid {runner.pid} is not running; applied version 0"):
        later.wait_applied(version, timeout_s=0.3)


def test_runner_rejects_a_bad_request_and_a_failing_callback(tmp_path: Path) -> None:
    directory = ensure_control_dir(tmp_path / "c.control")
    limiter = ResizableLimiter(2)
    calls: list[int] = []

    def on_change(request) -> None:  # type: ignore[no-untyped-def]
        calls.append(request.version)
        if request.request_timeout_s == 13:
            raise RuntimeError("cannot change the timeout mid-run")

    control = RunnerControl(directory, limiter=limiter, on_change=on_change)
    channel = ControlChannel(directory)
    (directory / "control.json").write_text(json.dumps({"version": 1, "max_concurrency": 0}))
    control.poll_once()
    with pytest.raises(NotAcknowledged, match="rejected control version 1: invalid control.json: max_concurrency"):
        channel.wait_applied(1, timeout_s=1)
    assert limiter.limit == 2 and calls == []
    version = channel.request(request_timeout_s=13)
    control.poll_once()
    with pytest.raises(NotAcknowledged, match="rejected control version 2: on_change failed: RuntimeError"):
        channel.wait_applied(version, timeout_s=1)
    version = channel.request(max_concurrency=5, request_timeout_s=20)
    control.poll_once()
    state = channel.wait_applied(version, timeout_s=1)
    assert state.applied_version == 3 and state.max_concurrency == 5 and state.error is None
    assert limiter.limit == 5 and control.request_timeout_s == 20 and calls == [2, 3]
    (directory / "control.json").write_text("garbage")
    assert control.poll_once() is False  # junk is ignored, not fatal
    assert channel.runner_state().applied_version == 3  # type: ignore[union-attr]


# --- the real thing: a runner process with a worker pool --------------------------------------
@pytest.fixture
def pool_runner(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    directory = tmp_path / "trials.control"
    log = tmp_path / "pool.log"
    runner = spawn_helper("pool", str(directory), str(log), "--workers", "8", "--task-s", "0.3", "--limit", "2")
    try:
        yield directory, log, runner
    finally:
        if directory.exists():
            (directory / "stop").touch()
        try:
            runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        reap(runner)


def test_real_runner_applies_concurrency_and_pause(pool_runner: tuple[Path, Path, subprocess.Popen[str]]) -> None:
    directory, log, runner = pool_runner
    task_s = 0.3
    channel = ControlChannel(directory, stale_after_s=10)
    wait_for(lambda: any(e["ev"] == "ready" for e in read_log(log)), 30, "the pool to start")
    wait_for(lambda: (s := channel.runner_state()) is not None and s.alive, 10, "the first heartbeat")

    def change(**fields: object) -> tuple[float, float]:
        asked = time.time()
        version = channel.request(**fields)  # type: ignore[arg-type]
        state = channel.wait_applied(version, timeout_s=2.0)  # applied within 2 s, or this raises
        assert state.applied_version == version
        if "max_concurrency" in fields:
            assert state.max_concurrency == fields["max_concurrency"]
        if "paused" in fields:
            assert state.paused is fields["paused"]
        return asked, time.time()

    def applied_event(ev: str, after: float) -> dict[str, object]:
        return next(e for e in read_log(log) if e["ev"] == ev and e["t"] >= after)

    # 4: the pool grows to four tasks at once.
    _, acked = change(max_concurrency=4)
    time.sleep(1.5)
    assert max_concurrency(read_log(log), acked + 0.1, time.time()) == 4

    # 1: tasks in flight finish normally (none cancelled), then one at a time.
    asked, acked = change(max_concurrency=1)
    shrink = applied_event("limit", asked)
    assert shrink["limit"] == 1 and int(shrink["in_flight"]) >= 2  # type: ignore[call-overload]
    time.sleep(task_s + 1.5)
    events = read_log(log)
    assert max_concurrency(events, float(shrink["t"]) + task_s + 0.2, time.time()) == 1  # type: ignore[arg-type]
    caught = [e for e in events if e["ev"] == "start" and e["t"] < float(shrink["t"])]  # type: ignore[arg-type]
    ends = {e["task"]: e for e in events if e["ev"] == "end"}
    assert all(e["task"] in ends and ends[e["task"]]["duration_s"] >= task_s * 0.95 for e in caught)

    # 3: grows again.
    _, acked = change(max_concurrency=3)
    time.sleep(1.5)
    assert max_concurrency(read_log(log), acked + 0.1, time.time()) == 3

    # pause: no new task starts (exact: acquisitions counted by the limiter), in-flight drains.
    asked, _ = change(paused=True)
    paused = applied_event("paused", asked)
    wait_for(lambda: channel.runner_state().in_flight == 0, task_s + 5, "in-flight work to drain")  # type: ignore[union-attr]
    time.sleep(0.5)
    starts_while_paused = [e for e in read_log(log) if e["ev"] == "start" and e["t"] > float(paused["t"]) + task_s]  # type: ignore[arg-type]
    assert starts_while_paused == []

    # resume: work starts again, at most three at once.
    asked, acked = change(paused=False)
    resumed = applied_event("resumed", asked)
    assert resumed["acquired"] == paused["acquired"]  # not one acquisition while paused
    time.sleep(1.2)
    assert max_concurrency(read_log(log), acked + 0.1, time.time()) == 3

    (directory / "stop").touch()
    assert runner.wait(timeout=20) == 0, runner.stderr.read() if runner.stderr else ""
    events = read_log(log)
    starts = {e["task"] for e in events if e["ev"] == "start"}
    ends = {e["task"]: e for e in events if e["ev"] == "end"}
    assert starts == set(ends)  # every task that started finished
    assert min(e["duration_s"] for e in ends.values()) >= task_s * 0.95  # none cut short
    final = channel.runner_state()
    assert final is not None and final.stopped_at is not None and not final.alive
    assert final.completed == len(ends)


# --- limiters -----------------------------------------------------------------------------------
def test_thread_limiter_semantics() -> None:
    limiter = ResizableLimiter(2)
    assert limiter.acquire(timeout=0) and limiter.acquire(timeout=0)
    assert not limiter.acquire(timeout=0.05)  # full
    limiter.set_limit(1)  # shrinking never takes back a slot
    assert limiter.in_flight == 2
    limiter.release()
    assert not limiter.acquire(timeout=0.05)  # still one in flight = the new limit
    limiter.release()
    assert limiter.in_flight == 0 and limiter.completed == 2
    limiter.pause()
    assert not limiter.acquire(timeout=0.05)
    got = threading.Event()

    def waiter() -> None:
        with limiter:
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    assert not got.is_set() and limiter.waiting == 1
    limiter.resume()
    assert got.wait(5)
    thread.join(5)
    limiter.set_limit(3)
    assert all(limiter.acquire(timeout=0) for _ in range(3))
    for _ in range(3):
        limiter.release()
    with pytest.raises(UsageError):
        limiter.release()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError):
            limiter.set_limit(bad)  # type: ignore[arg-type]


def test_async_limiter_semantics() -> None:
    async def scenario() -> None:
        limiter = AsyncResizableLimiter(2)
        running = 0
        peak = 0
        started: list[int] = []
        done: list[int] = []
        gates = [asyncio.Event() for _ in range(6)]

        async def task(i: int) -> None:
            nonlocal running, peak
            async with limiter:
                running += 1
                peak = max(peak, running)
                started.append(i)
                await gates[i].wait()
                running -= 1
                done.append(i)

        tasks = [asyncio.create_task(task(i)) for i in range(6)]
        await asyncio.sleep(0.05)
        assert running == 2 and limiter.waiting == 4
        await asyncio.to_thread(limiter.set_limit, 4)  # from another thread, like the poller
        await asyncio.sleep(0.05)
        assert running == 4
        limiter.set_limit(1)  # shrink: the four in flight continue untouched
        await asyncio.sleep(0.05)
        assert running == 4 and not done
        for i in started:
            gates[i].set()
        await asyncio.sleep(0.05)
        assert len(done) == 4 and running == 1 and len(started) == 5  # now one at a time
        limiter.pause()
        gates[started[-1]].set()
        await asyncio.sleep(0.05)
        assert len(done) == 5 and running == 0 and len(started) == 5  # nothing new while paused
        await asyncio.to_thread(limiter.resume)
        await asyncio.sleep(0.05)
        assert len(started) == 6
        gates[started[-1]].set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert peak == 4 and limiter.completed == 6 and limiter.in_flight == 0

        # A waiter cancelled after being woken passes the slot on (no lost wake-up).
        limiter.set_limit(1)
        await limiter.acquire()
        first = asyncio.create_task(limiter.acquire())
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        limiter.release()  # wakes `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(second, 2)
        assert limiter.in_flight == 1
        limiter.release()

    # A fresh thread has no running loop, whatever other tests left in the main thread.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the test thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()
    if errors:
        raise errors[0]


def test_runner_counters_without_a_limiter(tmp_path: Path) -> None:
    control = RunnerControl(tmp_path / "c.control", poll_interval_s=0.05, heartbeat_interval_s=0.05)
    with control:
        control.task_started()
        control.task_started()
        control.task_finished()
        channel = ControlChannel(control.dir)
        version = channel.request(max_concurrency=6, paused=True)
        state = channel.wait_applied(version, timeout_s=5)
        assert (state.in_flight, state.completed, state.max_concurrency, state.paused) == (1, 1, 6, True)
        assert state.alive and state.pid == os.getpid()
    assert channel.runner_state().stopped_at is not None  # type: ignore[union-attr]
    shutil.rmtree(control.dir)
