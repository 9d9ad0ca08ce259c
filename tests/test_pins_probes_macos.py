"""Pins for the macOS host probe's parsers and its command runner (written from the probes
mutation run's survivors). The runner is exercised with ordinary commands on any POSIX machine:
it is the seam, and what it says when vm_stat or sysctl is missing, silent or slow is the user's
one line."""

from __future__ import annotations

import sys

import pytest

from oasis_ops.errors import ProbeError
from oasis_ops.probes.macos import _decimal, _snake, default_runner, parse_sysctl, parse_vm_stat


def test_the_runner_returns_stdout_in_the_c_locale_and_names_what_failed() -> None:
    out = default_runner([sys.executable, "-c", "import os; print(os.environ['LC_ALL'], os.environ['LANG'], 'x')"])
    assert out == "C C x\n"  # text, captured, C-locale numbers
    # sysctl exits 1 on one unknown key but still prints the rest: stdout decides, not the exit code
    assert default_runner([sys.executable, "-c", "import sys; print('hw.memsize: 1'); sys.exit(1)"]) == "hw.memsize: 1\n"
    with pytest.raises(ProbeError) as missing:
        default_runner(["/no/such/vm_stat"])
    assert (str(missing.value), missing.value.hint) == ("/no/such/vm_stat not found (not macOS?)", "not macOS?")
    with pytest.raises(ProbeError) as silent:
        default_runner([sys.executable, "-c", "import sys; sys.stderr.write('bad key\\n'); sys.exit(3)"])
    assert str(silent.value) == f"{sys.executable} printed nothing (exit 3): bad key"
    with pytest.raises(ProbeError) as slow:
        default_runner([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.3)
    assert str(slow.value) == f"{sys.executable} did not answer within 0.3 s"


def test_decimal_and_snake_case() -> None:
    assert [_decimal(t) for t in ("2048.00", "2048,00", "1.024,50", "1,024.50", "512", "64.", "7,")] == [
        2048.0, 2048.0, 1024.5, 1024.5, 512.0, 64.0, 7.0]  # fmt: skip
    assert _decimal(".5") == 0.5 and _decimal("1.000.000,25") == 1000000.25
    assert [_snake(n) for n in ("Pages free", '"Pages wired down"', "  Swapouts  ", "File-backed pages")] == [
        "pages_free", "pages_wired_down", "swapouts", "file_backed_pages"]  # fmt: skip


def test_vm_stat_counts_and_refusals() -> None:
    text = ("Mach Virtual Memory Statistics: (page size of 16384 bytes)\nPages free:  100.\n"
            "junk line\nPages speculative: 5.\n\"Translation faults\": 7.\n")  # fmt: skip
    parsed = parse_vm_stat(text)
    assert (parsed["page_size"], parsed["pages_free"], parsed["pages_speculative"], parsed["translation_faults"]) == (16384, 100, 5, 7)
    assert parsed["mem_free_bytes"] == 100 * 16384
    assert parse_vm_stat("Pages free: 3.\n")["mem_free_bytes"] is None  # no header: no page size assumed
    with pytest.raises(ProbeError) as empty:
        parse_vm_stat("Mach Virtual Memory Statistics: (page size of 4096 bytes)\nnothing here " + "x" * 80)
    assert str(empty.value).startswith("vm_stat output has no counters")
    assert empty.value.hint == "got " + repr(("Mach Virtual Memory Statistics: (page size of 4096 bytes)\nnothing here " + "x" * 80)[:60])


def test_sysctl_keys_pressure_and_the_apple_silicon_guess() -> None:
    parsed = parse_sysctl("Hw.MemSize: 17179869184\nhw.pagesize = 16384\nkern.memorystatus_vm_pressure_level: -1\n")
    assert parsed["raw"] == {"Hw.MemSize": "17179869184", "hw.pagesize": "16384", "kern.memorystatus_vm_pressure_level": "-1"}
    assert parsed["page_size"] == 16384 and "mem_total_bytes" not in parsed  # keys are case-sensitive
    assert parsed["pressure_level"] == -1 and parsed["pressure"] is None  # a level it does not know
    assert parsed["apple_silicon"] is True  # no brand string: a 16 KiB page says Apple silicon
    assert parse_sysctl("hw.pagesize: 16385\n")["apple_silicon"] is None
    assert parse_sysctl("hw.pagesize: 4096\n")["apple_silicon"] is None
    assert parse_sysctl("machdep.cpu.brand_string: Intel(R) Core(TM) i9\nhw.pagesize: 16384\n")["apple_silicon"] is False
    assert parse_sysctl("kern.memorystatus_vm_pressure_level: 4-\n").get("pressure_level") is None
