"""Benchmarks: `python -m bench [name ...]` runs bench/bench_<name>.py main(); BENCH_QUICK=1 for a smoke run."""
