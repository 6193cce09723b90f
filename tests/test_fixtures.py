"""Every fixture script gives exactly the findings its `# expect: PDxxx` comments declare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_paths

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "fixtures" / "scripts"
EXPECT = re.compile(r"#\s*expect:\s*((?:PD\d{3}[\s,]*)+)")
FILES = sorted(p for p in SCRIPTS.rglob("*.py") if p.parent.name != "PD000")


def expected_findings(path: Path) -> set[tuple[int, str]]:
    expected = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = EXPECT.search(line)
        if match:
            for code in re.findall(r"PD\d{3}", match.group(1)):
                expected.add((number, code))
    return expected


def test_there_are_fixtures_for_every_static_rule():
    from peftdoctor.registry import rules_of_kind

    for rule in rules_of_kind("static"):
        folder = SCRIPTS / rule.code
        bad = list(folder.rglob("bad_*.py"))
        good = list(folder.rglob("good_*.py"))
        assert len(bad) >= 3 and len(good) >= 3, f"{rule.code}: {len(bad)} bad, {len(good)} good fixtures"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SCRIPTS)) for p in FILES])
def test_fixture(path: Path):
    result = check_paths([path], Config())
    actual = {(f.line, f.code) for f in result.findings}
    expected = expected_findings(path)
    if path.name.startswith("bad_"):
        assert expected, f"{path.name} declares no expected finding"
    shown = "\n".join(f"{f.location()}: {f.code} {f.message}" for f in result.findings)
    assert actual == expected, f"expected {sorted(expected)}, got:\n{shown}"
