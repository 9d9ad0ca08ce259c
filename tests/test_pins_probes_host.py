"""Pins for the host-memory helpers at their edges: the PSI levels, the byte sizes people read,
the platform dispatch (with its sources passed in), and the sample's row shape."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops.errors import ProbeError
from oasis_ops.probes.host import (
    HOST_SAMPLE_COLUMNS,
    human_bytes,
    psi_level,
    sample_host,
)

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(("pressure", "level"), [(None, None), (0.0, "normal"), (9.99, "normal"), (10.0, "warn"),
                                                 (39.99, "warn"), (40.0, "critical"), (100.0, "critical")])  # fmt: skip
def test_psi_levels(pressure: float | None, level: str | None) -> None:
    assert psi_level(pressure) == level


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "?"), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (956_858_368, "956.9 MB"), (51_539_607_552, "51.5 GB"),
     (2.5e12, "2.5 TB"), (7e15, "7000.0 TB"), (-1500, "-1.5 kB")],
)  # fmt: skip
def test_human_bytes(n: float | None, text: str) -> None:
    assert human_bytes(n) == text


def test_platform_dispatch_with_sources_passed_in(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "pressure").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree:         1024000 kB\nMemAvailable:    4096000 kB\n"
                                  "SwapTotal:       2048000 kB\nSwapFree:        1024000 kB\n")  # fmt: skip
    (proc / "vmstat").write_text("pswpin 12\npswpout 345\n")
    (proc / "pressure" / "memory").write_text("some avg10=12.50 avg60=3.00 avg300=1.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    linux = sample_host(proc_root=str(proc), clock=lambda: T0, platform="linux")
    assert (linux.ts, linux.mem_total_bytes, linux.mem_free_bytes, linux.mem_available_bytes) == (T0, 16_384_000 * 1024, 1_024_000 * 1024, 4_096_000 * 1024)
    assert (linux.swapins, linux.swapouts, linux.pressure, linux.pressure_level) == (12, 345, 12.5, "warn")
    assert linux.swap_used_bytes == 1_024_000 * 1024 and linux.source == "linux:/proc"
    assert list(linux.as_row()) == list(HOST_SAMPLE_COLUMNS) and linux.as_dict()["ts"] == T0.isoformat()
    with pytest.raises(ProbeError) as info:
        sample_host(platform="win32")
    assert str(info.value) == "no host-memory probe for platform 'win32' (Linux and macOS are supported)"


def test_mac_dispatch_reads_vm_stat_and_sysctl_through_the_runner() -> None:
    """The write-up's 18:00 snapshot (58,402 free 16 KB pages, pressure level 4) through the runner seam."""
    outputs = {"vm_stat": (FIXTURES / "macos" / "vm_stat_1800.txt").read_text(), "sysctl": (FIXTURES / "macos" / "sysctl.txt").read_text()}

    def run(argv: list[str]) -> str:
        return outputs[argv[0]]

    mac = sample_host(run=run, clock=lambda: T0, platform="darwin")
    assert (mac.ts, mac.page_size, mac.pages_free, mac.mem_free_bytes) == (T0, 16384, 58_402, 58_402 * 16384)
    assert (mac.mem_total_bytes, mac.pressure, mac.pressure_level) == (55_297_703_936, 100.0, "critical")
    assert mac.source.startswith("macos") and human_bytes(mac.mem_free_bytes) == "956.9 MB"


def test_proc_parsers_and_a_sample_at_their_edges(tmp_path: Path) -> None:
    from oasis_ops.errors import ProbeError
    from oasis_ops.probes.linux import parse_meminfo, parse_psi, parse_vmstat, sample_linux

    assert parse_meminfo("MemTotal:  2 kB\nHugePages_Total:  3\nweird line\nBad: x kB\nOdd: 5 zB\nKey:with:colons: 7 kB\n") == {
        "MemTotal": 2048, "HugePages_Total": 3, "Odd": 5}  # fmt: skip  # the first colon ends the key: "Key:..." is no number
    assert parse_vmstat("pswpout 5\nnr_free_pages 7 extra\npswpin x\n") == {"pswpout": 5}
    assert parse_psi("some avg10=1.5 total=7 bad avg60=x\nfull a=b=2\nnone avg10=9\n") == {"some": {"avg10": 1.5, "total": 7.0},
                                                                                             "full": {}}  # fmt: skip
    root = tmp_path / "proc"
    (root / "pressure").mkdir(parents=True)
    (root / "meminfo").write_text("MemTotal: 8 kB\nMemFree: 4 kB\nMemAvailable: 6 kB\nSwapTotal: 2 kB\nSwapFree: 1 kB\n")
    (root / "pressure" / "memory").write_text("some avg10=150.0 avg60=0 avg300=0 total=1\n")
    sample = sample_linux(root, page_size=1024, clock=lambda: T0)
    assert (sample.pages_free, sample.swap_used_bytes, sample.pressure, sample.swapouts) == (4, 1024, 100.0, None)  # no vmstat
    assert (sample.source, sample.mem_available_bytes, sample.swap_total_bytes) == ("linux:/proc", 6144, 2048)
    (root / "vmstat").write_text("nr_free_pages 3\npswpout 9\npswpin 2\n")
    (root / "pressure" / "memory").write_text("some avg10=-3 total=1\n")
    sample = sample_linux(root, page_size=1024, clock=lambda: T0)
    assert (sample.pages_free, sample.swapouts, sample.swapins, sample.pressure) == (3, 9, 2, 0.0)  # the kernel's own count wins
    (root / "meminfo").write_text("MemFree: 4 kB\n")
    with pytest.raises(ProbeError, match=r"meminfo has no MemTotal line$"):
        sample_linux(root)
    with pytest.raises(ProbeError) as absent:
        sample_linux(tmp_path / "nothing")
    assert str(absent.value).startswith(f"{tmp_path / 'nothing' / 'meminfo'} does not exist")
    assert absent.value.hint == "is this a Linux /proc root?"
    (root / "meminfo").unlink()
    (root / "meminfo").mkdir()  # unreadable as a file: one line, not a traceback
    with pytest.raises(ProbeError, match=r"^cannot read .*meminfo: Is a directory"):
        sample_linux(root)
