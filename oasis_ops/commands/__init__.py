"""CLI subcommands; each module has `register(subparsers)` and sets `func` on its parser."""

from __future__ import annotations

import argparse
from typing import Any

from oasis_ops.settings import Settings, load_settings


def settings_from(args: argparse.Namespace, **flags: Any) -> Settings:
    """Resolve settings for a subcommand: file and environment, then these flags."""
    return load_settings(getattr(args, "config", None), flags=flags)
