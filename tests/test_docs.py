"""The README stays true to the code it describes."""

from __future__ import annotations

from service.settings import README_MARKERS, settings_table
from tests.helpers import ROOT


def test_the_readme_lists_every_setting_as_the_code_defines_it():
    start, end = README_MARKERS
    text = (ROOT / "README.md").read_text()
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == settings_table(), "run: python -m service.settings"


def test_the_readme_names_every_module_of_the_library_and_the_service():
    text = (ROOT / "README.md").read_text()
    for folder in ("enhancer", "service"):
        for module in sorted((ROOT / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert f"{folder}/{module.name}" in text, (
                    f"README does not describe {folder}/{module.name}")
