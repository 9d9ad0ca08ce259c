"""`python -m bench`: the one table of bench/bench_cost.py (make bench). `python -m bench all`
runs every bench/bench_*.py module's main(); other arguments name modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).resolve().parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    names = discover()
    wanted = names if argv == ["all"] else (argv or ["cost"])
    unknown = [n for n in wanted if n.removeprefix("bench_") not in names]
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    status = 0
    for name in wanted:
        module = importlib.import_module(f"bench.bench_{name.removeprefix('bench_')}")
        print(f"== bench {name} ==", flush=True)
        status = max(status, int(module.main() or 0))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
