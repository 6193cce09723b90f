"""Rule docs are tests: each static rule's Example gives exactly its code, Use instead gives nothing."""

from __future__ import annotations

import re

import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_source
from peftdoctor.registry import all_rules, doc_path, rules_of_kind

SECTIONS = ["## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Versions", "## References"]
STATIC = [rule.code for rule in rules_of_kind("static")] + ["PD000"]


def python_block(doc: str, heading: str) -> str:
    section = doc.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


@pytest.mark.parametrize("code", [rule.code for rule in all_rules()])
def test_every_rule_has_a_doc_with_all_sections(code):
    path = doc_path(code)
    assert path is not None, f"rules/{code}.md is missing"
    doc = path.read_text(encoding="utf-8")
    assert doc.startswith(f"# {code}: "), f"{path.name} must start with '# {code}: <name>'"
    positions = [doc.find(section) for section in SECTIONS]
    assert all(p >= 0 for p in positions), f"{path.name} lacks {[s for s, p in zip(SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{path.name}: sections out of order"


@pytest.mark.parametrize("code", STATIC)
def test_example_fires_exactly_this_rule(code):
    doc = doc_path(code).read_text(encoding="utf-8")
    found = check_source(python_block(doc, "## Example"), f"{code}_example.py", Config()).findings
    assert {f.code for f in found} == {code}, [f"{f.line}: {f.code} {f.message}" for f in found]


@pytest.mark.parametrize("code", STATIC)
def test_use_instead_is_clean(code):
    doc = doc_path(code).read_text(encoding="utf-8")
    found = check_source(python_block(doc, "## Use instead"), f"{code}_fixed.py", Config()).findings
    assert found == [], [f"{f.line}: {f.code} {f.message}" for f in found]


def test_pd001_example_is_an_unused_suppression_and_use_instead_is_clean():
    doc = doc_path("PD001").read_text(encoding="utf-8")
    example = check_source(python_block(doc, "## Example"), "PD001_example.py", Config(), report_unused_noqa=True)
    assert [f.code for f in example.unused_suppressions] == ["PD001"] and example.findings == []
    fixed = check_source(python_block(doc, "## Use instead"), "PD001_fixed.py", Config(), report_unused_noqa=True)
    assert fixed.unused_suppressions == [] and fixed.findings == []
