"""SARIF output validated against the official OASIS SARIF 2.1.0 JSON schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from peftdoctor import __version__
from peftdoctor.finding import Finding, Severity
from peftdoctor.registry import all_rules, doc_path, get_rule
from peftdoctor.reporters import render
from peftdoctor.reporters.sarif_format import report, rule_descriptor

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def validate(data: dict) -> None:
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def findings_for(root: Path) -> list[Finding]:
    return [
        Finding("PD000", "file does not parse", str(root / "src" / "train me.py"), line=4, column=7,
                end_line=4, end_column=12, hint="fix it"),
        Finding("PD001", "unused suppression", "src/other.py", line=2, column=0, severity=Severity.WARNING),
        Finding("PD605", "every lora_B is zero", "out/adapter", line=0, severity=Severity.INFO,
                versions="peft>=0.10"),
        Finding("PD000", "file does not parse", "/elsewhere/x.py", line=1, column=1),
    ]


def test_sarif_validates_and_has_what_github_needs(repo):
    stream = io.StringIO()
    render("sarif", findings_for(repo), stream)
    data = json.loads(stream.getvalue())
    validate(data)
    assert data["version"] == "2.1.0"
    (run,) = data["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "peftdoctor" and driver["version"] == __version__
    assert driver["informationUri"].startswith("https://")
    assert [r["id"] for r in driver["rules"]] == ["PD000", "PD001", "PD605"]
    for rule in driver["rules"]:
        registered = get_rule(rule["id"])
        assert rule["shortDescription"]["text"] == registered.summary
        assert rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        assert rule["helpUri"] == registered.url
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["PD000", "PD001", "PD605", "PD000"]
    for result in results:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    assert [r["level"] for r in results] == ["error", "warning", "note", "error"]
    assert results[0]["message"]["text"] == "file does not parse\nHint: fix it"
    first = results[0]["locations"][0]["physicalLocation"]
    assert first["artifactLocation"] == {"uri": "src/train%20me.py", "uriBaseId": "%SRCROOT%"}
    assert first["region"] == {"startLine": 4, "startColumn": 7, "endLine": 4, "endColumn": 12}
    # column 0 means "whole line": no startColumn
    assert results[1]["locations"][0]["physicalLocation"]["region"] == {"startLine": 2}
    # line 0 (a folder or whole file): no region at all
    assert "region" not in results[2]["locations"][0]["physicalLocation"]
    assert results[2]["properties"] == {"versions": "peft>=0.10"}
    # outside the repo: an absolute file URI, no base id
    assert results[3]["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "file:///elsewhere/x.py"}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == repo.resolve().as_uri() + "/"


def test_empty_run_validates(repo):
    data = report([])
    validate(data)
    assert data["runs"][0]["results"] == [] and data["runs"][0]["tool"]["driver"]["rules"] == []


def test_schema_rejects_a_broken_log(repo):
    """The schema check is real: a result with a bad level must fail it."""
    data = report(findings_for(repo))
    data["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(AssertionError):
        validate(data)


def test_every_registered_rule_has_a_valid_descriptor():
    rules = all_rules()
    data = report([Finding(rule.code, "m", "x.py") for rule in rules], root=Path.cwd())
    validate(data)
    descriptors = data["runs"][0]["tool"]["driver"]["rules"]
    assert len(descriptors) == len(rules)
    for rule, descriptor in zip(rules, descriptors):
        doc = doc_path(rule.code)
        if doc is not None:
            # help comes from rules/<CODE>.md, full description from its first section
            text = doc.read_text(encoding="utf-8")
            assert descriptor["help"]["markdown"] == text
            assert descriptor["fullDescription"]["text"] in text
            assert descriptor["fullDescription"]["text"] != text
        else:
            assert descriptor["help"]["text"] == rule.summary


def test_descriptor_of_unknown_code():
    descriptor = rule_descriptor("PD999")
    assert descriptor["id"] == "PD999" and descriptor["helpUri"].endswith("/PD999.md")
