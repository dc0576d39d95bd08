"""Keep the docs' benchmark figures current: one output file per table, copied into the docs.

Each benchmark writes its results into one file in ``bench/`` and nowhere else. A docs page
shows that file between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, where NAME is the
file's key in :data:`SECTIONS`; the section is the file without its first-level title (the
page has its own headings). ``update_section(NAME)`` copies the file into every page that
marks NAME, and ``python -m bench.docs_sections`` (part of ``make docs``) does so for all of
them. ``tests/test_docs.py`` checks that every marked section equals its file, so a figure is
stated once, in its output file, and the docs quote it.
"""

from __future__ import annotations

from pathlib import Path

from enhancer.paths import PROJECT_DIR

DOCS = PROJECT_DIR / "docs"

# Marker name -> the benchmark's output file (relative to the project folder).
SECTIONS = {
    "bench": "bench/results.md",
    "stream": "bench/stream_results.md",
    "stream-16core": "bench/stream_results_16core.md",
    "stream-passthrough": "bench/stream_results_passthrough.md",
    "scaling": "bench/scaling.md",
    "ray": "bench/ray_results.md",
    "quality-real": "bench/quality_real.md",
    "quality": "bench/quality.md",
    "soak": "bench/soak.md",
    "jobs": "bench/jobs_results.md",
    "dfn3-speed": "bench/dfn3_speed.md",
    "stream-dfn3": "bench/stream_results_dfn3.md",
    "seams": "bench/seams.md",
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"


def section_text(name: str) -> str:
    """What the docs show for ``name``: its output file, less a leading ``# title`` line."""
    text = (PROJECT_DIR / SECTIONS[name]).read_text()
    if text.startswith("# "):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text.strip("\n") + "\n"


def marked_section(page_text: str, name: str) -> str | None:
    """The text between ``name``'s markers in a page, or None where the page has none."""
    start, end = markers(name)
    if start not in page_text or end not in page_text:
        return None
    return page_text.split(start, 1)[1].split(end, 1)[0]


def update_section(name: str, docs: Path = DOCS) -> list[Path]:
    """Copy ``name``'s output file into every docs page that marks it; the pages changed."""
    start, end = markers(name)
    text = section_text(name)
    changed = []
    for page in sorted(docs.glob("**/*.md")):
        content = page.read_text()
        if marked_section(content, name) is None:
            continue
        before, rest = content.split(start, 1)
        updated = before + start + text + rest[rest.index(end):]
        if updated != content:
            page.write_text(updated)
            changed.append(page)
    return changed


def update_for(output: Path) -> list[Path]:
    """Refresh the sections that show ``output`` (a bench writing to ``--out``), if any."""
    names = [name for name, path in SECTIONS.items()
             if (PROJECT_DIR / path).resolve() == Path(output).resolve()]
    return [page for name in names for page in update_section(name)]


if __name__ == "__main__":
    for name in SECTIONS:
        for page in update_section(name):
            print(f"{page.relative_to(PROJECT_DIR)}: {name} updated")
