"""Pins for checks a mutation sweep could disable while every other test stayed green.

- hard-kill re-verifies its target on a fresh process list right before SIGKILL
  (kill.signal_verified): a runner that changed between the plan and the signal (its
  `ollama serve` died and it was orphaned; the pid now runs another program) is refused and
  left alive. Real processes (helpers_probes.FakeOllamaTree); the change is made right after the
  plan's look at the process table, through the ActionContext.processes seam.
- verify_runner's ownership checks: a runner whose user differs from its serve's user is
  refused through the real kill path and by the helper (with its own message, not the "not
  ours" one that used to hide it); the defaults (protected = our own lineage, own_user = the
  user running us) hold when the caller passes nothing.
- the snapshot's torn-copy check (Snapshotter._copy): a main file or WAL that changed while it
  was being copied is never used; the copy is retried and what is kept equals the source.
- TrialSource: a rewrite of the trial table to the same number of rows with other contents is
  not an append: caches are dropped and runs, models, rollups and counts show the new rows.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import psutil
import pytest
from helpers_probes import FakeOllama, FakeOllamaTree, modelfile_for, ps_entry, utc
from helpers_trials import T0, Row, create_canonical, insert_canonical, trial_settings
from test_kill_real import GEMMA, OTHER, World, pauser  # noqa: F401 - fixture reused

from oasis_ops.actions import ActionContext, hard_kill
from oasis_ops.actions.context import full_process_list
from oasis_ops.errors import ProcessRefused
from oasis_ops.probes.processes import ProcessRecord, records_from, verify_runner
from oasis_ops.trials import TrialSource
from oasis_ops.trials import snapshot as snapshot_module
from oasis_ops.trials.snapshot import Snapshotter

linux_and_gcc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("gcc") is None, reason="needs Linux /proc and gcc"
)
STRANGER = "oasis-pin-stranger"  # a user name nobody on the test machine has


# --- hard-kill on real processes ---------------------------------------------------------------
@pytest.fixture
def small_world(pauser: Path, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    blobs = {
        GEMMA: str(tmp_path / "models" / "blobs" / ("sha256-" + "4e30e266" * 8)),
        OTHER: str(tmp_path / "models" / "blobs" / ("sha256-" + "9ed150d4" * 8)),
    }
    tree = FakeOllamaTree(pauser, tmp_path / "fs")
    ollama = tree.exe("bin/ollama")
    tree.exe("usr/bin/grep")
    server = FakeOllama()
    try:
        serve_pid = tree.start([[ollama, "runner", "--model", blobs[GEMMA], "--port", "54107"],
                                [ollama, "runner", "--model", blobs[OTHER], "--port", "44067"]])  # fmt: skip
        server.models = [ps_entry(GEMMA, expires_at=utc(-40)), ps_entry(OTHER, expires_at=utc(300))]
        server.modelfiles = {name: modelfile_for(name, blob) for name, blob in blobs.items()}
        yield World(tree, server, serve_pid, tmp_path, blobs)
    finally:
        server.close()
        tree.close()


class ChangesAfterThePlan:
    """A process list that hands the plan a true picture of the table and then changes the world
    (`change()`, once) before returning it: whatever looks at the table afterwards, i.e. the
    re-check before the signal, sees the changed world. `edit` rewrites later lists (a change the
    kernel cannot be made to do on demand, like an exec in place)."""

    def __init__(self, change: Callable[[], None], edit: Callable[[list[ProcessRecord]], list[ProcessRecord]] | None = None) -> None:
        self.change, self.edit = change, edit
        self.real = full_process_list()
        self.calls = 0

    def __call__(self) -> list[ProcessRecord]:
        records = list(self.real())
        self.calls += 1
        if self.calls == 1:
            self.change()
            return records
        return self.edit(records) if self.edit else records


def _ctx(w: World, processes: Callable[[], list[ProcessRecord]]) -> ActionContext:
    return dataclasses.replace(w.ctx(), processes=processes)


def _wait_ppid_not(pid: int, ppid: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while psutil.Process(pid).ppid() == ppid:
        assert time.monotonic() < deadline, f"pid {pid} was never re-parented"
        time.sleep(0.01)


@linux_and_gcc
def test_runner_orphaned_between_plan_and_signal_is_not_killed(small_world: World) -> None:
    """The serve dies right after the plan looked (an Ollama restart): its runner, re-parented,
    is no longer a child of the current serve, and the re-check before SIGKILL refuses it."""
    w = small_world
    gemma = w.tree.pid_of("--port", "54107")
    born = w.create_time(gemma)
    serve = w.tree.serve
    assert serve is not None

    def serve_dies() -> None:
        serve.kill()
        serve.wait(timeout=10)
        _wait_ppid_not(gemma, w.serve_pid)

    processes = ChangesAfterThePlan(serve_dies)
    result = hard_kill(_ctx(w, processes), GEMMA)
    assert result.outcome == "refused", result.message
    assert "ollama serve" in result.message and "signalled_at" not in result.detail
    assert result.detail["plan"]["pid"] == gemma  # the plan had approved it
    assert w.alive(gemma) and w.create_time(gemma) == born
    assert processes.calls >= 2  # planned on the old table, refused on a fresh one
    assert [r["outcome"] for r in w.audit_rows()] == ["refused"]


@linux_and_gcc
def test_a_runner_that_exits_between_plan_and_signal(small_world: World) -> None:
    """The runner is gone (exited, reaped) after the plan approved it: nothing is signalled, the
    outcome is `failed` with the reason, and the attempt is audited."""
    w = small_world
    gemma = w.tree.pid_of("--port", "54107")

    def runner_exits() -> None:
        os.kill(gemma, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(gemma):  # the serve reaps it
            assert time.monotonic() < deadline, "the runner was never reaped"
            time.sleep(0.01)

    result = hard_kill(_ctx(w, ChangesAfterThePlan(runner_exits)), GEMMA)
    assert (result.outcome, result.exit_code) == ("failed", 1), result.message
    assert result.message == f"hard-kill {GEMMA}: pid {gemma} exited before the signal; nothing was killed"
    assert "signalled_at" not in result.detail and result.detail["plan"]["pid"] == gemma
    assert [r["outcome"] for r in w.audit_rows()] == ["failed"]


@linux_and_gcc
def test_pid_running_another_program_at_signal_time_is_not_killed(small_world: World) -> None:
    """Same pid and create time at the signal (an exec in place keeps both), but the fresh table
    shows another program: the re-check refuses it as not a runner."""
    w = small_world
    gemma = w.tree.pid_of("--port", "54107")
    grep = str(w.tree.root / "usr/bin/grep")

    def exec_in_place(records: list[ProcessRecord]) -> list[ProcessRecord]:
        return [dataclasses.replace(r, name="grep", cmdline=(grep, "ollama", "runner")) if r.pid == gemma else r
                for r in records]  # fmt: skip

    processes = ChangesAfterThePlan(lambda: None, exec_in_place)
    result = hard_kill(_ctx(w, processes), GEMMA, pid=gemma, create_time=w.create_time(gemma))
    assert result.outcome == "refused" and "not an Ollama runner" in result.message, result.message
    assert result.detail["plan"]["pid"] == gemma and "signalled_at" not in result.detail
    assert w.alive(gemma)


@linux_and_gcc
def test_runner_of_a_serve_run_by_another_user_is_refused_by_the_kill_path(small_world: World) -> None:
    """The runner is ours but its `ollama serve` is someone else's (the table says so): refused
    before any signal, with the reason; nothing else in the kill path checks the serve's user."""
    w = small_world
    gemma = w.tree.pid_of("--port", "54107")

    def serve_of_a_stranger() -> list[ProcessRecord]:
        return [dataclasses.replace(r, username=STRANGER) if r.pid == w.serve_pid else r for r in full_process_list()()]

    result = hard_kill(_ctx(w, serve_of_a_stranger), GEMMA)
    assert result.outcome == "refused", result.message
    assert f"`ollama serve` to {STRANGER}" in result.message
    assert w.alive(gemma)
    # the same world with the serve's real user: the kill goes through (the refusal was the user)
    done = hard_kill(w.ctx(), GEMMA)
    assert done.outcome == "done", done.message


@linux_and_gcc
def test_runner_and_serve_of_another_user_are_refused_by_the_kill_path(small_world: World) -> None:
    """"Owned by us" end to end. Two checks refuse this (kill.verify_target's owner check and
    verify_runner's own_user check): disabling either alone keeps it refused; both, it fails."""
    w = small_world
    gemma = w.tree.pid_of("--port", "54107")
    tree_pids = {w.serve_pid, gemma}

    def all_a_strangers() -> list[ProcessRecord]:
        return [dataclasses.replace(r, username=STRANGER) if r.pid in tree_pids else r for r in full_process_list()()]

    result = hard_kill(_ctx(w, all_a_strangers), GEMMA)
    assert result.outcome == "refused" and f"belongs to {STRANGER}" in result.message, result.message
    assert w.alive(gemma)


# --- verify_runner, fed records ---------------------------------------------------------------
BLOB = "/m/blobs/sha256-" + "ab" * 32


def _tree(serve_user: str | None, runner_user: str | None, runner_pid: int = 20) -> list[ProcessRecord]:
    return records_from([
        {"pid": 10, "ppid": 1, "name": "ollama", "cmdline": ["/usr/bin/ollama", "serve"], "create_time": 50.0,
         "username": serve_user},
        {"pid": runner_pid, "ppid": 10, "name": "ollama",
         "cmdline": ["/usr/bin/ollama", "runner", "--model", BLOB, "--port", "1"], "create_time": 60.0,
         "username": runner_user},
    ])  # fmt: skip


def test_verify_runner_refuses_a_runner_whose_user_is_not_the_serves() -> None:
    """Runner ours, serve another user's: refused for that reason (and not only when the runner
    is also not ours, where the "not ours" check would refuse it anyway)."""
    with pytest.raises(ProcessRefused, match=f"belongs to eval, `ollama serve` to {STRANGER}"):
        verify_runner(_tree(STRANGER, "eval"), 20, 60.0, serve_pid=10, protected=set(), own_user="eval")
    assert verify_runner(_tree("eval", "eval"), 20, 60.0, serve_pid=10, protected=set(), own_user="eval").pid == 20
    # unknown users (not readable) are not a mismatch
    assert verify_runner(_tree(None, "eval"), 20, 60.0, serve_pid=10, protected=set(), own_user="eval").pid == 20


def test_verify_runner_defaults_protect_us_and_other_users() -> None:
    """With no `protected` / `own_user` given, our own lineage and the user running us count."""
    me = os.getpid()
    with pytest.raises(ProcessRefused, match="this process or one of its parents"):
        verify_runner(_tree("eval", "eval", runner_pid=me), me, 60.0, serve_pid=10, own_user="eval")
    us = str(psutil.Process().username())
    assert verify_runner(_tree(us, us), 20, 60.0, serve_pid=10, protected=set()).pid == 20
    with pytest.raises(ProcessRefused, match=f"belongs to {STRANGER}, not to {us}"):
        verify_runner(_tree(STRANGER, STRANGER), 20, 60.0, serve_pid=10, protected=set())


# --- the snapshot's torn-copy check -----------------------------------------------------------
class ByteSnapshots:
    """open/validate for a Snapshotter over plain bytes: the state of a snapshot is exactly what
    its copy (main file + WAL) holds, so a mix of two versions is visible."""

    def __init__(self) -> None:
        self.opened: list[Path] = []

    def open(self, copy: Path) -> duckdb.DuckDBPyConnection:
        self.opened.append(copy)
        return duckdb.connect()

    def validate(self, con: duckdb.DuckDBPyConnection) -> tuple[bytes, bytes | None]:
        copy = self.opened[-1]
        wal = copy.with_name(copy.name + ".wal")
        return copy.read_bytes(), wal.read_bytes() if wal.exists() else None


def _tearing_copy(monkeypatch: pytest.MonkeyPatch, victim: Path, write: Callable[[], None]) -> list[Path]:
    """shutil.copyfile, except that the first copy of `victim` is torn: half of it is copied,
    then `write` runs (the writer, mid-copy), then the rest is copied from the file as it is now."""
    real_copyfile = shutil.copyfile
    torn: list[Path] = []

    def copyfile(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> str | os.PathLike[str]:
        if Path(src) != victim or torn:
            return real_copyfile(src, dst)
        torn.append(Path(dst))
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            half = os.fstat(fin.fileno()).st_size // 2
            fout.write(fin.read(half))
            write()
            fin.seek(half)
            fout.write(fin.read())
        return dst

    monkeypatch.setattr(snapshot_module.shutil, "copyfile", copyfile)
    return torn


def _rewrite(path: Path, data: bytes) -> None:
    """In place (same inode), and a visibly new mtime even on a coarse filesystem clock."""
    before = path.stat().st_mtime_ns
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_main_file_written_during_the_copy_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "trials.duckdb"
    old, mid, new = b"A" * 8192, b"a" * 8192, b"B" * 12288
    db.write_bytes(old)
    bytes_ = ByteSnapshots()
    snaps = Snapshotter(db, tmp_path / "snaps", open_snapshot=bytes_.open, validate=bytes_.validate, min_interval_s=0.0)
    try:
        assert snaps.refresh(force=True) and snaps.current is not None
        assert snaps.current.state == (old, None)
        _rewrite(db, mid)  # a new snapshot is due, and while it is copied the writer rewrites again
        torn = _tearing_copy(monkeypatch, db, lambda: _rewrite(db, new))
        snaps.refresh(force=True)
        assert snaps.current is not None and snaps.current.state == (new, None)  # never the A/B mix
        assert len(torn) == 1 and not torn[0].exists()  # the torn copy was thrown away and retried
        assert snaps.current.sig == snaps.source_sig() and snaps.note == ""
    finally:
        snaps.close()


def test_wal_replaced_during_the_copy_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint swaps the WAL for a new file while we copy it: the half-old, half-new WAL
    copy is thrown away even though the main file looks unchanged."""
    db = tmp_path / "trials.duckdb"
    wal = tmp_path / "trials.duckdb.wal"
    main, old_wal, new_wal = b"M" * 4096, b"W" * 8192, b"N" * 8192
    db.write_bytes(main)
    wal.write_bytes(old_wal)
    bytes_ = ByteSnapshots()
    snaps = Snapshotter(db, tmp_path / "snaps", open_snapshot=bytes_.open, validate=bytes_.validate, min_interval_s=0.0)
    try:
        assert snaps.refresh(force=True) and snaps.current is not None
        assert snaps.current.state == (main, old_wal)
        wal.write_bytes(old_wal + b"w" * 100)  # appended: a new snapshot is due

        def checkpoint() -> None:
            fresh = tmp_path / "wal.next"
            fresh.write_bytes(new_wal)
            os.replace(fresh, wal)

        torn = _tearing_copy(monkeypatch, wal, checkpoint)
        snaps.refresh(force=True)
        assert snaps.current is not None and snaps.current.state == (main, new_wal)  # never the W/N mix
        assert len(torn) == 1 and not torn[0].exists()
        assert snaps.current.sig == snaps.source_sig()
    finally:
        snaps.close()


# --- a same-size rewrite of the trial table ----------------------------------------------------
def test_same_size_rewrite_is_not_an_append(tmp_path: Path) -> None:
    db = tmp_path / "rewrite.duckdb"
    old_rows = [Row(T0 + timedelta(minutes=i), 1000.0 + i, "ok", run_id="run-old", model="old:1b") for i in range(3)]
    new_rows = [Row(T0 + timedelta(minutes=5 + i), 2000.0 + i, "error" if i == 2 else "ok", run_id="run-new",
                    model="new:7b") for i in range(3)]  # fmt: skip
    create_canonical(db, old_rows)
    start, end = T0, T0 + timedelta(minutes=10)
    with TrialSource(db, trial_settings()) as src:
        assert src.rollup(start, end)["trials"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
        assert src.summary(start, end)["trials"] == 3
        assert src.runs()["run_id"].tolist() == ["run-old"] and src.models() == ["old:1b"]
        before = db.stat()

        con = duckdb.connect(str(db))  # the runner starts over: same number of rows, other contents
        con.execute("DELETE FROM trials")
        insert_canonical(con, new_rows)
        con.close()
        after = db.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino):
            os.utime(db, ns=(before.st_mtime_ns + 10**9, before.st_mtime_ns + 10**9))  # a coarse fs clock

        fresh = src.refresh()
        assert fresh.trials == 3
        assert src.runs()["run_id"].tolist() == ["run-new"] and src.models() == ["new:7b"]
        assert src.rollup(start, end)["trials"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
        summary = src.summary(start, end)
        assert (summary["trials"], summary["failures"]) == (3, 1)
        assert src.trial_counts("run-old") == (0, 0) and src.trial_counts("run-new") == (3, 0)
        span = src.run_span("run-new")
        assert span is not None and span.start == T0 + timedelta(minutes=5)


def test_a_rewrite_that_keeps_the_last_rows_time_and_status_is_not_an_append(tmp_path: Path) -> None:
    """The append check fingerprints the whole row at the old end, not only its start and status:
    the same times and statuses under another run and model are a rewrite (caches dropped)."""
    db = tmp_path / "relabel.duckdb"
    rows = [Row(T0 + timedelta(minutes=i), 1000.0, "ok", run_id="run-a", model="a:1b") for i in range(3)]
    create_canonical(db, rows)
    with TrialSource(db, trial_settings()) as src:
        assert src.models() == ["a:1b"]
        before = db.stat()
        con = duckdb.connect(str(db))
        con.execute("UPDATE trials SET run_id = 'run-b', model = 'b:7b'")
        con.close()
        after = db.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino):
            os.utime(db, ns=(before.st_mtime_ns + 10**9, before.st_mtime_ns + 10**9))
        src.refresh()
        assert src.models() == ["b:7b"] and src.latest_run() == "run-b"


def test_a_writer_that_can_neither_write_nor_spill_keeps_its_rows(tmp_path: Path) -> None:
    """The writer's promise, "nothing is lost": with the database's directory gone, close() can
    write neither the trials nor the spill file; one DataError says both, and the rows stay."""
    from oasis_ops.errors import DataError
    from oasis_ops.trials.writer import TrialWriter

    gone = tmp_path / "gone"
    gone.mkdir()
    writer = TrialWriter(gone / "trials.duckdb", background=False, retry_for_s=0.0)
    writer.add(started_at=T0, latency_ms=1000.0, status="ok")
    gone.rmdir()
    with pytest.raises(DataError, match="cannot save them to"):
        writer.close()
    assert writer.pending == 1
