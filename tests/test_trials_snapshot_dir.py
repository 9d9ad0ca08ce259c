"""The snapshot directory holds copies of the user's trials: ours and private, or refused."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops.errors import ConfigError
from oasis_ops.settings import load_settings
from oasis_ops.trials import TrialSource
from oasis_ops.trials.generate import generate_trials


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "trials.duckdb"
    generate_trials(db, n_trials=200, start=datetime(2025, 11, 20, 9, tzinfo=UTC), minutes=30, seed=1)
    return db


def test_snapshots_are_private(tmp_path: Path) -> None:
    db = _db(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    settings = load_settings(env={}).replace(snapshot_dir=str(shared))
    with TrialSource(db, settings) as source:
        source.refresh()
        leaves = [p for p in shared.rglob("*") if p.is_dir()]
        assert leaves, "no snapshot directory was made"
        for leaf in leaves:
            assert stat.S_IMODE(leaf.stat().st_mode) & 0o077 == 0, oct(leaf.stat().st_mode)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory owned by someone else")
def test_a_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    db = _db(tmp_path)
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snaps"))
    with TrialSource(db, settings):  # creates the per-database leaf we will hand to another user
        pass
    (leaf,) = [p for p in (tmp_path / "snaps").iterdir() if p.is_dir()]
    os.chown(leaf, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        TrialSource(db, settings)
