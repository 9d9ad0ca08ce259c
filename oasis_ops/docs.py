"""Keeps generated parts of README.md in sync (`make docs`; a test compares)."""

from __future__ import annotations

import re
from pathlib import Path

from oasis_ops.settings import settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)", re.S)


def render(readme_text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + settings_markdown() + "\n" + m.group(2), readme_text)


def main() -> int:
    README.write_text(render(README.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
