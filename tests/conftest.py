"""Shared test fixtures. Area-specific helpers live in tests/helpers_<area>.py."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own config, Ollama or snapshot cache by accident."""
    for var in ("OASIS_OPS_CONFIG", "OLLAMA_HOST", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    # Settings built without the environment (load_settings(env={})) would otherwise put trial
    # snapshots under ~/.cache: in this process, the default root is the test's own directory.
    import oasis_ops.trials.snapshot as snapshot_module

    real_root = snapshot_module.default_snapshot_root
    monkeypatch.setattr(snapshot_module, "default_snapshot_root",
                        lambda configured: real_root(configured) if configured else tmp_path / "snapshots")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main
    thread for the whole session, which would break later tests that call asyncio.run()."""
    browser_dir = Path(__file__).resolve().parent / "browser"
    items.sort(key=lambda item: browser_dir in Path(str(item.fspath)).resolve().parents)
