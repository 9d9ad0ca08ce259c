"""`oasis-ops settings`: show resolved settings and where each came from."""

from __future__ import annotations

import argparse

from oasis_ops.commands import settings_from
from oasis_ops.fmt import json_text
from oasis_ops.settings import SECRET_SETTINGS, settings_markdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("settings", help="show the resolved settings and their origins")
    p.add_argument("--markdown", action="store_true", help="print the README's settings table")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    s = settings_from(args)
    # a secret is never printed: only whether it is set
    values = {k: ("(set)" if v else "") if k in SECRET_SETTINGS else v for k, v in s.values.items()}
    if args.json:
        print(json_text({k: {"value": v, "from": s.origins[k]} for k, v in values.items()}, indent=2))
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"{key:<{width}}  {value!r:<40}  {s.origins[key]}")
    return 0
