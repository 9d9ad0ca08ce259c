"""A full disk under the sidecar and the trial table: a real tmpfs of a few MB that the test
mounts under its tmp_path and fills to the last page (needs root with CAP_SYS_ADMIN, as on the
project's machines; elsewhere the tests are skipped with the reason). While the disk is full:
the sampler's rows wait in memory and the trial writer keeps its trials (nothing is lost); the
CLI says one line (exit 1) where it must write and still answers where it only reads. Once
space is back, everything waiting is written and the earlier rows are all there."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from oasis_ops.errors import DataError
from oasis_ops.sidecar import BatchWriter, Sidecar
from oasis_ops.trials.writer import TrialWriter

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)
FIXTURE_LOG = ROOT / "tests" / "fixtures" / "ollama" / "server.log"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, check=False)  # fmt: skip
    except OSError as exc:  # no mount(8) at all
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk has not one page left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_sampler_rows_wait_out_a_full_disk(small_disk: Path) -> None:
    sidecar = Sidecar(small_disk / "s.ops.duckdb")
    writer = BatchWriter(sidecar, max_rows=10_000)
    rows = [{"ts": T0 + timedelta(seconds=i), "mem_free_bytes": i} for i in range(300)]
    writer.add_rows("host_samples", rows[:100])
    assert writer.flush() == 100
    filler = fill(small_disk)
    writer.add_rows("host_samples", rows[100:200])
    assert writer.flush() == 0
    assert writer.pending_rows == 100 and "No space left on device" in (writer.last_error or "")
    writer.add_rows("host_samples", rows[200:])  # the sampler goes on meanwhile
    assert writer.flush() == 0 and writer.pending_rows == 200
    filler.unlink()
    assert writer.flush() == 200
    writer.close()
    frame = sidecar.host_samples_since(T0)
    assert frame["mem_free_bytes"].tolist() == list(range(300))  # all there, in order


def test_trial_writer_keeps_trials_through_a_full_disk(small_disk: Path) -> None:
    db = small_disk / "trials.duckdb"
    writer = TrialWriter(db, background=False, batch_size=1000, retry_for_s=0.5)

    def trial(i: int) -> dict[str, object]:
        start = T0 + timedelta(seconds=10 * i)
        return {"trial_id": i, "run_id": "r", "model": "m", "status": "ok", "started_at": start,
                "finished_at": start + timedelta(seconds=2), "latency_ms": 2000.0}  # fmt: skip

    for i in range(20):
        writer.write(trial(i))
    assert writer.flush() == 20
    filler = fill(small_disk)
    for i in range(20, 40):
        writer.write(trial(i))
    with pytest.raises(DataError, match="No space left on device") as info:
        writer.flush()
    assert "\n" not in str(info.value) and writer.pending == 20
    # reading still works on the full disk: the CLI answers from what is recorded
    read = subprocess.run([sys.executable, "-m", "oasis_ops", "timeline", "--db", str(db), "--from", "2025-11-20T16:00:00Z",
                           "--to", "2025-11-20T18:00:00Z", "--format", "json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert sum(b["trials"] for b in json.loads(read.stdout)) == 20
    filler.unlink()
    assert writer.flush() == 20
    writer.close()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*), count(distinct trial_id) from trials").fetchone() == (40, 40)


def test_cli_that_must_write_says_one_line_on_a_full_disk(small_disk: Path) -> None:
    sidecar = small_disk / "s.ops.duckdb"
    first = subprocess.run([sys.executable, "-m", "oasis_ops", "ingest-logs", "--sidecar", str(sidecar),
                            "--server-log", str(FIXTURE_LOG)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    with duckdb.connect(str(sidecar), read_only=True) as con:
        before = con.execute("select count(*) from log_requests").fetchone()
    assert before and before[0] > 0
    filler = fill(small_disk)
    other = small_disk.parent / "other.log"  # more lines, from the same real shapes
    other.write_bytes(FIXTURE_LOG.read_bytes().replace(b"2025", b"2026"))
    full = subprocess.run([sys.executable, "-m", "oasis_ops", "ingest-logs", "--sidecar", str(sidecar), "--server-log", str(other)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)  # fmt: skip
    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stderr and len(full.stderr.strip().splitlines()) == 1
    assert "No space left on device" in full.stderr and str(sidecar) in full.stderr
    filler.unlink()
    with duckdb.connect(str(sidecar), read_only=True) as con:
        assert con.execute("select count(*) from log_requests").fetchone() == before  # nothing recorded was lost


def test_a_full_disk_under_the_snapshot_directory_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    with TrialWriter(db, background=False) as writer:
        writer.write({"trial_id": 1, "status": "ok", "started_at": T0, "latency_ms": 1000.0})
    (small_disk / "snaps").mkdir()
    fill(small_disk)
    env = {**os.environ, "OASIS_OPS_SNAPSHOT_DIR": str(small_disk / "snaps")}
    done = subprocess.run([sys.executable, "-m", "oasis_ops", "timeline", "--db", str(db), "--format", "json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False)  # fmt: skip
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "No space left on device" in done.stderr and str(db) in done.stderr
