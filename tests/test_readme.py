"""The README and docs/ stay true: figures shown in them come from files the tool wrote, and their links lead
somewhere (issue 21). The shell examples themselves are checked by tests/test_doc_examples.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
EXCERPT = re.compile(r"<!-- excerpt: (?P<source>\S+) -->\n(?P<body>(?:\|.*\n)+)")
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_a_front_door_not_a_notebook():
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; topics belong in docs/"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(page):
    broken = [m["target"] for m in LINK.finditer(page.read_text())
              if "://" not in m["target"] and not (page.parent / m["target"]).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_a_report_excerpt_in_the_readme_is_copied_verbatim_from_the_report():
    excerpts = list(EXCERPT.finditer(README.read_text()))
    assert excerpts, "README.md shows a report's table under an '<!-- excerpt: <file> -->' comment"
    for excerpt in excerpts:
        report = (ROOT / excerpt["source"]).read_text()
        for line in excerpt["body"].splitlines():
            assert line in report.splitlines(), f"README line not in {excerpt['source']}: {line}"


def test_the_default_runs_table_in_the_readme_holds_its_golden_values():
    golden = json.loads((ROOT / "tests" / "golden" / "engine.json").read_text())["runs"]["default_minilm"]
    shown = {}
    for line in README.read_text().splitlines():
        match = re.match(r"((?:source|target)/\S+)\s+([\d.]+)\s+([\d.]+)\s", line)
        if match:
            shown[match[1]] = (float(match[2]), float(match[3]))
    assert set(shown) == set(golden["figures"]["metrics"])
    for split, (accuracy, f1) in shown.items():
        expected = golden["figures"]["metrics"][split]
        assert accuracy == round(expected["accuracy"], 3) and f1 == round(expected["f1_macro"], 3), split
