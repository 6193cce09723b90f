"""Output formats: text, json, github, junit; --output and --statistics through the CLI."""

from __future__ import annotations

import io
import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor import __version__
from peftdoctor.cli import cli, emit
from peftdoctor.finding import Finding, Severity
from peftdoctor.registry import get_rule
from peftdoctor.reporters import FORMATS, render


@pytest.fixture
def in_repo(tmp_path, monkeypatch):
    """A fake git work tree as cwd, so repo-relative paths are predictable."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sample_findings(root: Path) -> list[Finding]:
    return [
        Finding("PD000", "file does not parse: bad, really: bad", str(root / "src" / "a b.py"), line=3, column=5,
                hint="fix the syntax error", end_line=3, end_column=9),
        Finding("PD001", "unused suppression comment: # noqa: PD101", "src/train.py", line=7, column=1,
                severity=Severity.WARNING, extra={"fix": {"kind": "add_keyword"}}),
        Finding("PD605", "every lora_B is zero\nsecond line 100%", "out/adapter", line=0, column=0,
                severity=Severity.INFO, versions="peft>=0.10"),
    ]


def rendered(fmt, findings, **info) -> str:
    stream = io.StringIO()
    render(fmt, findings, stream, color=False, **info)
    return stream.getvalue()


def test_all_formats_known():
    assert set(FORMATS) == {"text", "json", "sarif", "github", "junit"}
    with pytest.raises(ValueError):
        render("xml", [], io.StringIO())


def test_json_schema(in_repo):
    findings = sample_findings(in_repo)
    data = json.loads(rendered("json", findings, files_checked=2, tool_kind="check"))
    assert set(data) == {"version", "tool", "kind", "files_checked", "statistics", "findings"}
    assert data["version"] == 1
    assert data["tool"] == {"name": "peftdoctor", "version": __version__}
    assert data["kind"] == "check" and data["files_checked"] == 2
    assert data["statistics"] == {"PD000": 1, "PD001": 1, "PD605": 1}
    keys = {"code", "name", "message", "hint", "severity", "path", "line", "column", "end_line",
            "end_column", "url", "versions", "fixable"}
    for item, finding in zip(data["findings"], findings):
        assert set(item) == keys
        assert item["code"] == finding.code and item["message"] == finding.message
        assert item["path"] == finding.path and item["line"] == finding.line
        assert item["severity"] == finding.severity.value
        assert item["url"] == get_rule(finding.code).url
        assert item["name"] == get_rule(finding.code).name
    first, second, third = data["findings"]
    assert (first["end_line"], first["end_column"]) == (3, 9)
    assert second["end_line"] is None and second["fixable"] is True and first["fixable"] is False
    assert third["versions"] == "peft>=0.10"


def test_json_empty_and_unknown_code():
    data = json.loads(rendered("json", []))
    assert data["findings"] == [] and data["statistics"] == {}
    data = json.loads(rendered("json", [Finding("PD999", "m", "x.py")]))
    assert data["findings"][0]["name"] is None
    assert data["findings"][0]["url"].endswith("/PD999.md")


def test_github_annotations(in_repo):
    lines = rendered("github", sample_findings(in_repo)).splitlines()
    assert len(lines) == 3
    # absolute path under the repo becomes repo-relative; properties escape ':' and ','
    assert lines[0] == (
        "::error file=src/a b.py,line=3,col=5,endLine=3,endColumn=9,title=PD000::"
        "file does not parse: bad, really: bad%0Ahint: fix the syntax error"
    )
    assert lines[1].startswith("::warning file=src/train.py,line=7,col=1,title=PD001::unused suppression")
    # info -> notice; line 0 -> no line property; newlines and % escaped in the message
    assert lines[2] == "::notice file=out/adapter,title=PD605::every lora_B is zero%0Asecond line 100%25"


def test_github_escapes_properties():
    from peftdoctor.reporters.github_format import escape_property

    assert escape_property("a:b,c%d\ne") == "a%3Ab%2Cc%25d%0Ae"


def test_junit_parses_and_counts(in_repo):
    text = rendered("junit", sample_findings(in_repo), files_checked=2)
    suite = ET.fromstring(text.split("\n", 1)[1])
    assert suite.tag == "testsuite" and suite.get("name") == "peftdoctor"
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["PD000 3:5", "PD001 7:1", "PD605 0"]
    failure = cases[0].find("failure")
    assert failure.get("type") == "error" and failure.get("message").startswith("PD000: file does not parse")
    assert "hint: fix the syntax error" in failure.text
    assert cases[1].find("failure").get("type") == "warning"
    assert cases[2].find("failure") is None and "lora_B" in cases[2].find("system-out").text
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"kind": "check", "files_checked": "2"}


def test_junit_clean_run_has_one_passing_case():
    suite = ET.fromstring(rendered("junit", []).split("\n", 1)[1])
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert suite.find("testcase").find("failure") is None


def test_text_statistics(in_repo):
    """ruff's layout: a line per code (count, code, fixable mark, name) instead of the findings."""
    text = rendered("text", sample_findings(in_repo) * 2, files_checked=2, statistics=True)
    assert text.splitlines() == [
        "2  PD000  [ ] syntax-error",
        "2  PD001  [*] unused-suppression",
        "2  PD605  [ ] adapter-untrained",
        "Found 6 findings in 2 files (2 errors, 2 warnings, 2 infos).",
        "[*] 2 fixable with `--fix`.",
    ]


def test_emit_output_is_atomic_and_readable(tmp_path, capsys):
    target = tmp_path / "report.json"
    target.write_text("old")
    emit("json", [Finding("PD000", "m", "x.py")], str(target), files_checked=1)
    assert json.loads(target.read_text())["findings"][0]["code"] == "PD000"
    assert capsys.readouterr().out == ""
    # no temp file left behind, and the mode is an ordinary file's, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_cli_output_errors_are_one_line(tmp_path):
    (tmp_path / "t.py").write_text("x = 1\n")
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "t.py"), "--output",
                                      str(tmp_path / "no" / "dir" / "r.json"), "--format", "json"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "cannot write report" in result.output


def test_cli_formats_on_a_syntax_error(tmp_path, monkeypatch):
    """End to end through the CLI: PD000 is the one finding that needs no rule module."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / "ok.py").write_text("from peft import get_peft_model\n")
    (tmp_path / "bad.py").write_text("from peft import get_peft_model\ndef f(:\n    pass\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["check", ".", "--format", "json", "--output", "r.json", "--statistics"])
    data = json.loads((tmp_path / "r.json").read_text())
    assert result.exit_code == 1, result.output
    assert data["files_checked"] == 2
    assert [(f["code"], f["path"], f["line"]) for f in data["findings"]] == [("PD000", "bad.py", 2)]
    result = runner.invoke(cli, ["check", ".", "--format", "github"])
    assert result.exit_code == 1
    assert result.output.startswith("::error file=bad.py,line=2,col=")
    result = runner.invoke(cli, ["check", "ok.py", "--format", "junit"])
    assert result.exit_code == 0
    assert ET.fromstring(result.output.split("\n", 1)[1]).get("failures") == "0"
