"""Keep the README's benchmark figures current: each bench writes its table between markers."""

from __future__ import annotations

from tests.helpers import ROOT


def update_section(name: str, text: str) -> None:
    """Put ``text`` between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in the README."""
    readme = ROOT / "README.md"
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    content = readme.read_text()
    if start in content and end in content:
        before, rest = content.split(start, 1)
        readme.write_text(before + start + text.rstrip("\n") + "\n" + rest[rest.index(end):])
