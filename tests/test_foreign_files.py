"""Offline by construction: a file that is not a DuckDB database (SQLite, Parquet, gzip, text,
random bytes, empty) gets one line naming what it is, at once: DuckDB is never allowed to
download or load an extension to read it (it tried, for 11.7 s, on a SQLite file)."""

from __future__ import annotations

import gzip
import sqlite3
import time
from pathlib import Path

import duckdb
import pytest

from oasis_ops import duck
from oasis_ops.cli import main as cli_main


def _sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE trials (started_at TEXT, latency_ms REAL, status TEXT)")
    con.commit()
    con.close()


def _parquet(path: Path) -> None:
    duckdb.connect().execute(f"COPY (SELECT 1 AS latency_ms) TO '{path}' (FORMAT parquet)")


CASES = {
    "trials.sqlite": (_sqlite, "is a SQLite database"),
    "trials.parquet": (_parquet, "is a Parquet file"),
    "trials.duckdb.gz": (lambda p: p.write_bytes(gzip.compress(b"x" * 100)), "is gzip-compressed"),
    "trials.csv": (lambda p: p.write_text("started_at,latency_ms\n2025-11-20,1\n"), "is a text file"),
    "random.duckdb": (lambda p: p.write_bytes(bytes(range(256)) * 8), "binary data of another kind"),
    "empty.duckdb": (lambda p: p.write_bytes(b""), "is empty"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_foreign_file_as_the_trial_db_is_named_in_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, said = CASES[name]
    path = tmp_path / name
    make(path)
    started = time.monotonic()
    assert cli_main(["timeline", "--db", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 10  # no download attempt (11.7 s before)
    assert len(err.splitlines()) == 1 and said in err and "not a DuckDB database" in err and str(path) in err


def test_connections_never_autoload_extensions(tmp_path: Path) -> None:
    con = duck.connect(None)
    try:
        settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name LIKE 'auto%_known_extensions'").fetchall())
    finally:
        con.close()
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
