"""Linux /proc probe: fixture files under a tmp proc root, and this machine's real /proc."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops.errors import ProbeError
from oasis_ops.probes.host import sample_host
from oasis_ops.probes.linux import parse_meminfo, parse_psi, sample_linux

PINNED = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


@pytest.fixture
def proc_root(tmp_path: Path, fixtures_dir: Path) -> Path:
    root = tmp_path / "proc"
    (root / "pressure").mkdir(parents=True)
    shutil.copy(fixtures_dir / "linux" / "meminfo", root / "meminfo")
    shutil.copy(fixtures_dir / "linux" / "vmstat", root / "vmstat")
    shutil.copy(fixtures_dir / "linux" / "pressure_memory", root / "pressure" / "memory")
    return root


def test_fixture_proc_root(proc_root: Path) -> None:
    s = sample_linux(proc_root=str(proc_root), page_size=4096, clock=lambda: PINNED)
    assert s.ts == PINNED and s.source == "linux:/proc"
    assert s.mem_total_bytes == 24_604_516 * 1024
    assert s.mem_free_bytes == 412_300 * 1024
    assert s.mem_available_bytes == 1_203_344 * 1024
    assert s.page_size == 4096 and s.pages_free == 103_075
    assert s.swap_used_bytes == (8_388_604 - 2_211_020) * 1024
    assert s.swap_total_bytes == 8_388_604 * 1024
    assert s.swapins == 190_442 and s.swapouts == 504_282
    assert s.pressure == pytest.approx(37.21) and s.pressure_level == "warn"


def test_without_psi_and_vmstat(proc_root: Path) -> None:
    (proc_root / "pressure" / "memory").unlink()
    (proc_root / "vmstat").unlink()
    s = sample_linux(proc_root=proc_root, page_size=4096)
    assert s.pressure is None and s.pressure_level is None
    assert s.swapouts is None
    assert s.pages_free == 412_300 * 1024 // 4096  # derived from MemFree


def test_junk_lines_do_not_crash(proc_root: Path) -> None:
    meminfo = (proc_root / "meminfo").read_text()
    (proc_root / "meminfo").write_text("garbage\nMemFree: lots kB\n:::\n" + meminfo + "\x00\n")
    (proc_root / "vmstat").write_text("pswpout\npswpin x\nnr_free_pages 7 8\n")
    (proc_root / "pressure" / "memory").write_text("some avg10=oops\n")
    s = sample_linux(proc_root=proc_root, page_size=4096)
    assert s.mem_total_bytes == 24_604_516 * 1024
    assert s.swapouts is None and s.pressure is None
    assert parse_psi("full avg10=1.5 total=3\n")["full"]["avg10"] == 1.5
    assert parse_meminfo("HugePages_Total:       0\n") == {"HugePages_Total": 0}


def test_missing_or_empty_meminfo_is_a_probe_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="meminfo"):
        sample_linux(proc_root=tmp_path)
    (tmp_path / "meminfo").write_text("nonsense\n")
    with pytest.raises(ProbeError, match="MemTotal"):
        sample_linux(proc_root=tmp_path)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")
def test_this_machines_real_proc() -> None:
    s = sample_host(platform="linux")
    assert s.mem_total_bytes and s.mem_total_bytes > 0
    assert s.mem_free_bytes is not None and 0 <= s.mem_free_bytes <= s.mem_total_bytes
    assert s.mem_available_bytes is not None and s.mem_available_bytes <= s.mem_total_bytes
    assert s.page_size and s.page_size >= 4096
    assert s.pages_free is not None and s.pages_free * s.page_size <= s.mem_total_bytes
    assert s.swapouts is not None and s.swapouts >= 0
    assert s.ts.tzinfo is not None
    if Path("/proc/pressure/memory").exists():
        assert s.pressure is not None and 0 <= s.pressure <= 100
