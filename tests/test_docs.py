"""The docs stay true to the code and the measurements they describe."""

from __future__ import annotations

import re

import pytest

from bench.docs_sections import SECTIONS, marked_section, section_text
from tests.helpers import ROOT
from tools.settings_table import CONFIG_PAGE, MARKERS, settings_table

DOCS = ROOT / "docs"


def pages() -> dict[str, str]:
    return {page.name: page.read_text() for page in sorted(DOCS.glob("*.md"))}


def test_the_configuration_page_lists_every_setting_as_the_code_defines_it():
    start, end = MARKERS
    text = CONFIG_PAGE.read_text()
    assert start in text and end in text, f"{CONFIG_PAGE.name} lacks the settings markers"
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == settings_table(), "run: python -m tools.settings_table"


def test_the_architecture_page_names_every_module_of_the_library_and_the_service():
    text = (DOCS / "architecture.md").read_text()
    modules = [path.relative_to(ROOT).as_posix()
               for folder in ("enhancer", "service") for path in (ROOT / folder).rglob("*.py")]
    missing = sorted(module for module in modules if f"`{module}`" not in text)
    assert not missing, f"docs/architecture.md does not describe {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_benchmark_section_equals_its_output_file(name):
    shown = {page: section for page, text in pages().items()
             if (section := marked_section(text, name)) is not None}
    assert shown, f"no docs page shows {SECTIONS[name]} (<!-- {name}:start -->)"
    for page, section in shown.items():
        assert section == section_text(name), (
            f"docs/{page}: the {name} section differs from {SECTIONS[name]}; "
            "run: python -m bench.docs_sections")


def test_every_marked_section_in_the_docs_is_a_known_benchmark():
    for page, text in pages().items():
        for name in re.findall(r"^<!-- ([\w-]+):start -->$", text, re.M):
            assert name in SECTIONS or name == "settings", f"docs/{page}: unknown section {name}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines < 200, f"README.md has {lines} lines: move detail into docs/"


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")]


def test_the_readme_quotes_its_figures_from_the_benchmark_tables():
    readme = (ROOT / "README.md").read_text()
    real = (ROOT / "bench" / "quality_real.md").read_text().split("\n\n| method |", 1)[1]
    rows = {row[0]: row for row in _table_rows("| method |" + real.split("\n\n", 1)[0])}
    ours, rnnoise = rows["denoiser_48k (this model)"], rows["RNNoise (pyrnnoise)"]
    dfn = next(row for name, row in rows.items() if name.startswith("DeepFilterNet3"))
    # columns: method, 48 kHz SI-SDR gain, PESQ-WB, STOI, DNSMOS SIG, BAK, OVRL, ...
    assert f"SI-SDR gain {ours[1]} dB, PESQ-WB {ours[2]}, DNSMOS OVRL {ours[6]}" in readme
    assert f"RNNoise {rnnoise[1]} dB, {rnnoise[2]}, {rnnoise[6]}" in readme
    assert f"DeepFilterNet3 {dfn[1]} dB, {dfn[2]}, {dfn[6]}" in readme
    results = (ROOT / "bench" / "results.md").read_text()
    row7 = next(row for row in _table_rows(results) if row[0].startswith("7. "))
    speed = round(float(row7[1].rstrip("×")))
    assert f"{speed}× real time" in readme, f"README: row 7 of bench/results.md says {row7[1]}"
