"""macOS parsers on the recorded fixtures: the page size comes from vm_stat's header."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops.errors import ProbeError
from oasis_ops.probes.host import human_bytes, sample_host
from oasis_ops.probes.macos import (
    SYSCTL_ARGV,
    VM_STAT_ARGV,
    default_runner,
    parse_sysctl,
    parse_vm_stat,
    sample_macos,
)

PINNED = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)


def read(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "macos" / name).read_text()


def test_apple_silicon_free_pages_use_the_16k_page_size(fixtures_dir: Path) -> None:
    vm = parse_vm_stat(read(fixtures_dir, "vm_stat_1800.txt"))
    assert vm["page_size"] == 16384
    assert vm["pages_free"] == 58_402
    assert vm["mem_free_bytes"] == 956_858_368
    assert human_bytes(vm["mem_free_bytes"]) == "956.9 MB"
    # the write-up's pre-flight one-liner multiplied by 4096: a 4x understatement
    assert human_bytes(vm["pages_free"] * 4096) == "239.2 MB"
    assert vm["pages_speculative"] == 1003
    assert vm["pageins"] == 2_611_032 and vm["pageouts"] == 220_311
    assert vm["swapins"] == 190_442 and vm["swapouts"] == 504_282
    # every other counter, snake_cased
    assert vm["translation_faults"] == 872_016_452
    assert vm["pages_wired_down"] == 215_220
    assert vm["file_backed_pages"] == 190_185
    assert vm["pages_stored_in_compressor"] == 1_420_330
    assert vm["pages_purged"] == 1_988_377


def test_incident_series_swapouts_and_free_pages(fixtures_dir: Path) -> None:
    series = [parse_vm_stat(read(fixtures_dir, f"vm_stat_{t}.txt")) for t in ("1700", "1745", "1800")]
    assert [v["pages_free"] for v in series] == [2_103_449, 412_302, 58_402]
    assert [v["swapouts"] for v in series] == [0, 42_118, 504_282]
    assert {v["page_size"] for v in series} == {16384}


def test_intel_page_size_is_4096(fixtures_dir: Path) -> None:
    vm = parse_vm_stat(read(fixtures_dir, "vm_stat_intel.txt"))
    assert vm["page_size"] == 4096
    assert vm["mem_free_bytes"] == 21_435 * 4096
    assert vm["swapouts"] == 110_233


def test_sysctl_fixture(fixtures_dir: Path) -> None:
    s = parse_sysctl(read(fixtures_dir, "sysctl.txt"))
    assert s["swap_total_bytes"] == 4096 * 1024**2
    assert s["swap_used_bytes"] == int(3279.25 * 1024**2)
    assert s["swap_free_bytes"] == int(816.75 * 1024**2)
    assert s["swap_encrypted"] is True
    assert s["pressure_level"] == 4 and s["pressure"] == 100.0 and s["pressure_level_label"] == "critical"
    assert s["mem_total_bytes"] == 55_297_703_936
    assert s["page_size"] == 16384
    assert s["cpu_brand"] == "Apple M2 Max" and s["apple_silicon"] is True


@pytest.mark.parametrize(("level", "pressure", "label"), [(1, 0.0, "normal"), (2, 50.0, "warn"), (4, 100.0, "critical")])
def test_pressure_levels_map(level: int, pressure: float, label: str) -> None:
    s = parse_sysctl(f"kern.memorystatus_vm_pressure_level: {level}\n")
    assert (s["pressure"], s["pressure_level_label"]) == (pressure, label)


def test_sysctl_intel_and_unknown_values() -> None:
    s = parse_sysctl(
        "vm.swapusage: total = 2048.00M  used = 0.00M  free = 2048.00M\n"
        "kern.memorystatus_vm_pressure_level: 3\n"
        "machdep.cpu.brand_string: Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz\n"
        "this line is junk\n"
    )
    assert s["swap_encrypted"] is False and s["swap_used_bytes"] == 0
    assert s["pressure_level"] == 3 and s["pressure"] is None  # not a documented level
    assert s["apple_silicon"] is False


def test_sample_macos_with_a_recorded_runner(fixtures_dir: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> str:
        calls.append(argv)
        return read(fixtures_dir, "vm_stat_1800.txt" if argv[0] == "vm_stat" else "sysctl.txt")

    sample = sample_host(platform="darwin", run=run, clock=lambda: PINNED)
    assert calls == [VM_STAT_ARGV, SYSCTL_ARGV]
    assert sample.source == "macos:vm_stat" and sample.ts == PINNED
    assert sample.mem_free_bytes == 956_858_368 and sample.page_size == 16384
    assert sample.mem_available_bytes == (58_402 + 1_003 + 822_011) * 16384
    assert sample.mem_total_bytes == 55_297_703_936
    assert sample.swapouts == 504_282 and sample.swapins == 190_442
    assert sample.swap_used_bytes == int(3279.25 * 1024**2) and sample.swap_total_bytes == 4096 * 1024**2
    assert sample.pressure == 100.0 and sample.pressure_level == "critical"
    assert list(sample.as_row())[0] == "ts" and list(sample.as_row())[-1] == "source"


def test_header_missing_never_assumes_4096(fixtures_dir: Path) -> None:
    body = read(fixtures_dir, "vm_stat_1800.txt").split("\n", 1)[1]
    vm = parse_vm_stat(body)
    assert vm["page_size"] is None and vm["mem_free_bytes"] is None
    # sample_macos falls back to sysctl hw.pagesize, not to a guess
    sample = sample_macos(run=lambda argv: body if argv[0] == "vm_stat" else "hw.pagesize: 16384\n")
    assert sample.page_size == 16384 and sample.mem_free_bytes == 956_858_368
    sample = sample_macos(run=lambda argv: body if argv[0] == "vm_stat" else "nothing\n")
    assert sample.page_size is None and sample.mem_free_bytes is None and sample.pages_free == 58_402


def test_vm_stat_s_own_page_size_wins_over_sysctl_s(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "vm_stat_1800.txt")  # its header: "page size of 16384 bytes"
    sample = sample_macos(run=lambda argv: text if argv[0] == "vm_stat" else "hw.pagesize: 4096\n")
    assert sample.page_size == 16384 and sample.mem_free_bytes == 58_402 * 16384


def test_junk_lines_are_skipped_and_empty_output_is_an_error(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "vm_stat_1800.txt").replace("Pageins:", "Pageins: garbage\nPageins:")
    text += "\x00\x01 binary junk\nSwapouts:  not-a-number.\n"
    vm = parse_vm_stat(text)
    assert vm["pageins"] == 2_611_032 and vm["swapouts"] == 504_282
    with pytest.raises(ProbeError, match="no counters"):
        parse_vm_stat("<html>oops</html>")
    with pytest.raises(ProbeError):
        parse_vm_stat("")


def test_unsupported_platform_is_a_clear_error() -> None:
    with pytest.raises(ProbeError, match="no host-memory probe"):
        sample_host(platform="win32")


@pytest.mark.parametrize(
    "line",
    [
        "vm.swapusage: total = 2048.00M  used = 1024.50M  free = 1023.50M  (encrypted)",  # C locale
        "vm.swapusage: total = 2048,00M  used = 1024,50M  free = 1023,50M  (encrypted)",  # de_DE, fr_FR
        "vm.swapusage: total = 2.048,00M  used = 1.024,50M  free = 1.023,50M  (encrypted)",  # with grouping
    ],
)
def test_swapusage_in_both_decimal_forms(line: str) -> None:
    s = parse_sysctl(line + "\n")
    assert s["swap_total_bytes"] == 2048 * 1024**2
    assert s["swap_used_bytes"] == int(1024.5 * 1024**2)
    assert s["swap_free_bytes"] == int(1023.5 * 1024**2)
    assert s["swap_encrypted"] is True


def test_default_runner_runs_commands_in_the_c_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    seen: dict[str, object] = {}

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.update(kwargs)
        return subprocess.CompletedProcess(argv, 0, stdout="vm.swapusage: total = 1024.00M  used = 0.00M  free = 1024.00M\n", stderr="")

    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    monkeypatch.setattr("oasis_ops.probes.macos.subprocess.run", fake_run)
    out = default_runner(["sysctl", "vm.swapusage"])
    env = seen["env"]
    assert isinstance(env, dict) and env["LC_ALL"] == "C" and env["LANG"] == "C"
    assert "PATH" in env or "PATH" not in __import__("os").environ  # the rest of the environment is kept
    assert parse_sysctl(out)["swap_total_bytes"] == 1024 * 1024**2
