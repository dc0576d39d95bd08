"""``python -m tools.settings_table``: write every setting into docs/configuration.md.

The table between the markers is generated from :class:`service.settings.Settings`, so the
documented defaults and meanings are the code's; ``tests`` check the page is current.
"""

from __future__ import annotations

from pathlib import Path

from enhancer.paths import PROJECT_DIR
from service.settings import Settings


def settings_table() -> str:
    """Every setting as a Markdown table (name, default, meaning)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "number of cores"
        elif field.default is None:
            default = "unset"
        elif isinstance(field.default, Path):
            default = f"`{_shown_path(field.default)}`"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        elif isinstance(field.default, float) and field.default.is_integer():
            default = f"`{int(field.default)}`"
        else:
            default = f"`{field.default}`" if field.default != "" else "empty"
        rows.append(f"| `{name}` | {default} | {field.description or ''} |")
    return "\n".join(rows) + "\n"


def _shown_path(path: Path) -> str:
    """A default path as the docs show it: from the project folder."""
    try:
        return str(path.relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


MARKERS = ("<!-- settings:start -->\n", "<!-- settings:end -->")


CONFIG_PAGE = PROJECT_DIR / "docs" / "configuration.md"


def update_page(page: Path = CONFIG_PAGE) -> bool:
    """Put :func:`settings_table` between the page's markers; True if it changed."""
    start, end = MARKERS
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page} lacks the markers {start.strip()} and {end}")
    before, rest = text.split(start, 1)
    updated = before + start + settings_table() + rest[rest.index(end):]
    if updated != text:
        page.write_text(updated)
    return updated != text


if __name__ == "__main__":
    print(f"{CONFIG_PAGE.name} updated" if update_page() else f"{CONFIG_PAGE.name} already current")
