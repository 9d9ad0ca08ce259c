"""`make mutation`: mutation testing (PyPI mutmut) of the core packages, one score per package.

For each package, a copy of the tracked tree is made in a temporary directory with a
`[tool.mutmut]` section naming the package and the tests that exercise it, and `mutmut run`
mutates it (mutmut runs, for each mutant, only the tests that cover the mutated function). The
score is killed / (killed + survived + no tests) (timeouts count as killed, as mutmut does).
Survivors are listed per package (`mutmut show NAME` in the copy shows one), and the table goes
to `bench/results/mutation.json`. Not part of `make test`: it takes hours on two cores.

    make mutation                                   # every package below
    MUTATION_WORK=/some/dir make mutation           # keep the mutated copies (`mutmut show NAME` there)
    .venv/bin/python -m bench.mutation trials       # one package
    MUTATION_CHILDREN=6 make mutation               # mutants run at once (default 4)
    MUTATION_SAMPLE=200 make mutation               # an estimate: 200 mutants per package drawn at
                                                    # random (MUTATION_SEED, default 20261205), run,
                                                    # the score with a 95% (Wilson) interval

A whole pass takes 10-15 machine-hours on two cores; a sample of 200 takes 10-30 minutes per package.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# package -> the tests that exercise it (mutmut maps each mutant to the tests that reach it)
PACKAGES: dict[str, tuple[str, list[str]]] = {
    "trials": ("oasis_ops/trials", ["tests/test_trials_rollup.py", "tests/test_pins_trials.py", "tests/test_pins_timeparse.py", "tests/test_odd_tables.py", "tests/test_trials_bounds.py", "tests/test_trials_errors.py",
                                    "tests/test_trials_writer.py", "tests/test_wide_span.py", "tests/test_bad_input_cli.py",
                                    "tests/test_pins_kill_snapshot.py"]),
    "probes": ("oasis_ops/probes", ["tests/test_probes_processes.py", "tests/test_bad_input_ollama.py", "tests/test_flash.py",
                                    "tests/test_preflight.py", "tests/test_probes_ollama.py", "tests/test_probes_linux.py",
                                    "tests/test_probes_macos.py", "tests/test_probes_integration.py",
                                    "tests/test_runner_signals_probe.py", "tests/test_pins_probes_host.py",
                                    "tests/test_pins_probes_ollama.py", "tests/test_pins_probes_macos.py", "tests/test_pins_probes_llama_server.py",
                                    "tests/test_pins_probes_flash.py", "tests/test_pins_probes_processes.py", "tests/test_pins_probes_gguf.py",
                                    "tests/test_probes_gpu.py", "tests/test_pins_probes_edges.py"]),
    "actions": ("oasis_ops/actions", ["tests/test_kill_real.py", "tests/test_kill_audit_always.py", "tests/test_pins_kill_snapshot.py",
                                      "tests/test_watchdog.py", "tests/test_pins_watchdog.py", "tests/test_actions_emulator.py",
                                      "tests/test_actions_harness.py", "tests/test_stopping_episode_display.py",
                                      "tests/test_pins_kill.py"]),
    "diagnosis": ("oasis_ops/diagnosis", ["tests/test_windows.py", "tests/test_pins_diagnosis.py", "tests/test_diagnosis_scenarios.py",
                                          "tests/test_report.py", "tests/test_pins_report_text.py", "tests/test_run_span.py",
                                          "tests/test_preflight.py", "tests/test_pins_preflight.py", "tests/test_diagnosis_replay.py",
                                          "tests/test_pins_diagnosis_views.py", "tests/test_earlywarning.py", "tests/test_pins_report_golden.py"]),
    "watchdog": ("oasis_ops/watchdog.py", ["tests/test_watchdog.py", "tests/test_sampler_watchdog.py", "tests/test_pins_diagnosis.py",
                                          "tests/test_pins_watchdog.py"]),
}  # fmt: skip
KILLED = {1, 3, -24, 24, 36, 152, 255}  # mutmut's (3.8) exit codes for killed and timed out
SURVIVED = {0}
NO_TESTS = {5, 33}


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def run_package(name: str, work: Path) -> dict[str, object]:
    path, tests = PACKAGES[name]
    copy = work / name
    tracked_copy(copy)
    # the whole package is copied (imports need it), only `path` is mutated
    others = sorted(str(p.relative_to(copy)) for p in (copy / "oasis_ops").rglob("*.py")
                    if not str(p.relative_to(copy)).startswith(path))  # fmt: skip
    pyproject = copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.mutmut]\n" + 'paths_to_mutate = ["oasis_ops"]\n'
                         + f"do_not_mutate = {json.dumps(others)}\n" + f"tests_dir = {json.dumps(tests)}\n"
                         + 'also_copy = ["sql", "tests", "bench", "app.py", "pages", "assets"]\n')  # fmt: skip
    started = time.monotonic()
    # More children than cores: many mutants spend their time in a test's wait (a mutated
    # freshness or deadline), not on the CPU.
    children = os.environ.get("MUTATION_CHILDREN", "4")
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    sample_size = int(os.environ.get("MUTATION_SAMPLE", "0") or 0)
    chosen: set[str] | None = None
    if sample_size > 0:
        # mutmut generates every mutant before it filters by name: a name that matches nothing
        # generates them and stops; then a random draw of them is run by name.
        subprocess.run([mutmut, "run", "oasis_ops.no_such_mutant"], cwd=copy, capture_output=True, check=False)
        every = sorted(mutant for mutant, _code in _exit_codes(copy, path))
        rng = random.Random(int(os.environ.get("MUTATION_SEED", "20261205")))
        chosen = set(rng.sample(every, min(sample_size, len(every))))
        done = subprocess.run([mutmut, "run", "--max-children", children, *sorted(chosen)], cwd=copy,
                              capture_output=True, text=True, check=False)  # fmt: skip
    else:
        done = subprocess.run([mutmut, "run", "--max-children", children], cwd=copy, capture_output=True, text=True,
                              check=False)  # fmt: skip
    counts = {"killed": 0, "survived": 0, "no_tests": 0, "other": 0}
    survivors: list[str] = []
    for mutant, code in _exit_codes(copy, path):
        if chosen is not None and mutant not in chosen:
            continue
        if code in KILLED:
            counts["killed"] += 1
        elif code in SURVIVED:
            counts["survived"] += 1
            survivors.append(mutant)
        elif code in NO_TESTS:
            counts["no_tests"] += 1
        else:
            counts["other"] += 1
    judged = counts["killed"] + counts["survived"] + counts["no_tests"]
    # unfinished mutants of a sample count against the score (they were drawn)
    drawn = len(chosen) if chosen is not None else judged
    score = counts["killed"] / drawn if drawn else None
    return {"package": name, "path": path, **counts, "score": score, "sampled": chosen is not None, "drawn": drawn,
            "interval": wilson(counts["killed"], drawn) if chosen is not None and drawn else None,
            "minutes": (time.monotonic() - started) / 60, "returncode": done.returncode, "survivors": sorted(survivors),
            "log_tail": (done.stdout + done.stderr)[-1500:]}  # fmt: skip


def _exit_codes(copy: Path, path: str) -> list[tuple[str, int | None]]:
    """(mutant, mutmut's exit code or None when not run) for the mutants of `path` in `copy`."""
    out: list[tuple[str, int | None]] = []
    for meta in (copy / "mutants").rglob("*.meta"):
        if str(meta.relative_to(copy / "mutants")).startswith(path):
            out.extend(json.loads(meta.read_text()).get("exit_code_by_key", {}).items())
    return out


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of killed / n (a sample's score)."""
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str]) -> int:
    names = argv or list(PACKAGES)
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        print(f"unknown package(s): {', '.join(unknown)}; known: {', '.join(PACKAGES)}", file=sys.stderr)
        return 2
    rows = []
    keep = os.environ.get("MUTATION_WORK")  # a directory to keep the mutated copies in (`mutmut show` there)
    with tempfile.TemporaryDirectory(prefix="oasis-mutation-") as tmp:
        for name in names:
            row = run_package(name, Path(keep or tmp))
            rows.append(row)
            score = "-" if row["score"] is None else f"{row['score']:.0%}"
            if row.get("interval"):
                low, high = row["interval"]  # type: ignore[misc]
                score += f" (sample of {row['drawn']}: {low:.0%}-{high:.0%})"
            print(f"{name:<10} {score:>5}  killed {row['killed']}, survived {row['survived']}, no tests {row['no_tests']}, "
                  f"other {row['other']}  ({row['minutes']:.0f} min)", flush=True)  # fmt: skip
            if row["score"] is None:  # mutmut could not run the tests at all: say why
                print(str(row["log_tail"])[-800:], flush=True)
    out = ROOT / "bench" / "results" / "mutation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:  # the other packages' rows from earlier runs stay
        earlier = [r for r in json.loads(out.read_text()) if r.get("package") not in names]
    except (OSError, ValueError):
        earlier = []
    order = {name: n for n, name in enumerate(PACKAGES)}
    out.write_text(json.dumps(sorted(earlier + rows, key=lambda r: order.get(r.get("package"), len(order))), indent=1))
    print(f"results (with the surviving mutants' names): {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
