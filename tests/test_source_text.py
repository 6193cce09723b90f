"""How `check` reads a file's text: PEP 263 decoding, the newest grammar, Python 2, files met while walking.

Exit codes follow ruff: a named file that is not Python source (binary junk, bytes its encoding cannot decode)
is a finding (PD000, exit 1) and the other files are still checked, like ruff's per-file error; exit 2 stays
for usage errors and paths that cannot be read at all.

The fixture files are written by `make_fixtures` into a temporary folder (the layout of fixtures/source/):
committed as .py files under fixtures/ they would be read by tests that expect every fixture to be valid
Python 3.11 UTF-8.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor.cli import cli
from peftdoctor.config import Config
from peftdoctor.engine import check_paths, check_source
from peftdoctor.source import decode_source, nesting_problem, parse_source

BUGGY = """\
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("base")
model = get_peft_model(base, LoraConfig(r=8))
model = PeftModel.from_pretrained(model, "adapter")
"""  # PD101 on line 6

PY312 = """\
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

type Batch = list[int]


def first[T](items: list[T]) -> T:
    return items[0]


base = AutoModelForCausalLM.from_pretrained("base")
model = get_peft_model(base, LoraConfig(r=8))
print(f"{'\\n'.join(["a", "b"])}")
model = PeftModel.from_pretrained(model, f"{"adapter"}")
"""  # PD101 on line 14; the same file in 3.11 syntax:
PY311 = (PY312.replace("type Batch = list[int]", "Batch = list[int]")
         .replace("def first[T](items: list[T]) -> T:", "def first(items: list) -> object:")
         .replace("""print(f"{'\\n'.join(["a", "b"])}")""", """print("\\n".join(["a", "b"]))""")
         .replace('f"{"adapter"}"', "f\"{'adapter'}\""))

PY2 = """\
import os


def main():
    print "hello from", os.getcwd()


main()
"""

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\t\x00\x00\x002\xff\xfe"

LATIN1 = ("# -*- coding: latin-1 -*-\n" + BUGGY.replace('"base"', '"base-é"')).encode("latin-1")  # PD101 line 7


def make_fixtures(root: Path) -> Path:
    """fixtures/source/: bom.py, py312_syntax.py, latin1_cookie.py and a walked/ folder of files to skip."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bom.py").write_bytes(b"\xef\xbb\xbf" + BUGGY.encode())
    (root / "py312_syntax.py").write_text(PY312, encoding="utf-8")
    (root / "latin1_cookie.py").write_bytes(LATIN1)
    walked = root / "walked"
    (walked / "__MACOSX").mkdir(parents=True, exist_ok=True)
    (walked / "py2_script.py").write_text(PY2)
    (walked / "__MACOSX" / "._x.py").write_bytes(APPLEDOUBLE)
    (walked / "._y.py").write_bytes(APPLEDOUBLE)
    (walked / "binary.py").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (walked / "broken_util.py").write_text("x = (1,\n")
    return root


@pytest.fixture
def fixtures(tmp_path) -> Path:
    return make_fixtures(tmp_path / "source")


def found(result) -> list[tuple[str, str, int]]:
    return [(Path(f.path).name, f.code, f.line) for f in result.findings]


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["check", *args])


# ------------------------------------------------------------------------------------------------ decoding


def test_a_bom_is_stripped_and_the_file_is_checked(fixtures):
    assert found(check_paths([fixtures / "bom.py"], Config())) == [("bom.py", "PD101", 6)]
    result = run_cli(str(fixtures / "bom.py"))
    assert result.exit_code == 1
    assert "bom.py:6:" in result.output and "PD101" in result.output and "PD000" not in result.output


def test_a_bom_in_a_string_given_to_check_source_is_ignored():
    assert [(f.code, f.line) for f in check_source("\ufeff" + BUGGY, "x.py").findings] == [("PD101", 6)]


def test_a_latin1_coding_cookie_is_honoured(fixtures):
    assert found(check_paths([fixtures / "latin1_cookie.py"], Config())) == [("latin1_cookie.py", "PD101", 7)]
    assert "PD000" not in run_cli(str(fixtures / "latin1_cookie.py")).output


def test_latin1_without_a_cookie_is_one_clear_finding(tmp_path):
    path = tmp_path / "legacy.py"
    path.write_bytes(BUGGY.replace('"base"', '"base-é"').encode("latin-1"))
    [finding] = check_paths([path], Config()).findings
    assert finding.code == "PD000" and (finding.line, finding.column) == (4, 51)
    assert finding.message == "not a Python source file: undecodable as utf-8 at byte 152 (0xe9)"


@pytest.mark.parametrize("data, why", [
    (b"# coding: klingon\nimport peft\n", "unknown encoding 'klingon' in its coding cookie"),
    (b"\xef\xbb\xbf# coding: latin-1\nimport peft\n", "a UTF-8 byte-order mark and a coding cookie"),
    (b"import peft\x00\n", "binary data (a NUL byte at byte 11)"),
])
def test_undecodable_files_are_one_finding_never_a_traceback(tmp_path, data, why):
    path = tmp_path / "odd.py"
    path.write_bytes(data)
    [finding] = check_paths([path], Config()).findings
    assert finding.code == "PD000" and why in finding.message and "invalid syntax" not in finding.message
    result = run_cli(str(path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)


def test_decode_source_follows_pep_263():
    assert decode_source(b"\xef\xbb\xbfx = 1\n", "a.py").text == "x = 1\n"
    vim = "# vim: set fileencoding=latin-1 :\nx = 'é'\n".encode("latin-1")
    assert decode_source(vim, "a.py").text.endswith("'é'\n")
    assert decode_source("#!/usr/bin/env python\n# coding: cp1252\nx = '€'\n".encode("cp1252"), "a.py").text
    assert decode_source(b"x = '\xe9'\n", "a.py").finding.message.endswith("at byte 5 (0xe9)")


# ------------------------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize("source", [
    "type X = int\n",
    "def f[T](x: T) -> T:\n    return x\n",
    "class Box[T]:\n    pass\n",
    "x = f\"{'\\n'.join(y)}\"\n",
    'x = f"{"nested same quotes"}"\n',
])
def test_newer_syntax_is_not_pd000(source):
    assert check_source("import peft\n" + source, "new.py").findings == []


def test_a_312_file_gets_its_findings_at_the_same_places_as_in_311_syntax(fixtures):
    """No ast tree for a 3.12-only file: positions come from libcst's PositionProvider, and must agree."""
    [new] = check_paths([fixtures / "py312_syntax.py"], Config()).findings
    [old] = check_source(PY311, str(fixtures / "py312_syntax.py")).findings
    assert new.code == "PD101" and new.line == 14
    assert (new.line, new.column, new.end_line, new.end_column) == (old.line, old.column, old.end_line,
                                                                     old.end_column)
    assert new.column == len("model = ") + 1
    result = run_cli(str(fixtures / "py312_syntax.py"))
    assert result.exit_code == 1 and "py312_syntax.py:14:9: PD101" in result.output


def test_a_real_syntax_error_is_still_pd000_with_pythons_position():
    [finding] = check_source("import peft\ndef f(:\n    pass\n", "bad.py").findings
    assert (finding.code, finding.line) == ("PD000", 2)
    assert finding.message.startswith("file does not parse:")


def test_string_content_errors_stay_errors_though_libcst_does_not_check_them():
    [finding] = check_source("import peft\nx = b'é'\n", "bad.py").findings
    assert finding.code == "PD000" and "ASCII" in finding.message


def test_3000_nested_parentheses_are_one_pd000_and_no_crash(tmp_path):
    path = tmp_path / "deep.py"
    path.write_text("import peft\nx = " + "(" * 3000 + "1" + ")" * 3000 + "\n")
    walked = tmp_path / "more"
    walked.mkdir()
    (walked / "deep_lambdas.py").write_text("import peft\nx = " + "lambda: " * 20000 + "1\n")
    # Python stops at line 2 (3.12 syntax) before it meets the chain: only the pre-scan keeps libcst away.
    (walked / "deep_3_12.py").write_text("import peft\ntype X = int\nx = " + "lambda: " * 5000 + "1\n")
    (walked / "deep_not_3_12.py").write_text("import peft\ntype X = int\nx = " + "not " * 12000 + "1\n")
    result = subprocess.run([sys.executable, "-m", "peftdoctor", "check", "--format", "json", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert [(Path(f["path"]).name, f["code"]) for f in findings] == [
        ("deep.py", "PD000"), ("deep_3_12.py", "PD000"), ("deep_lambdas.py", "PD000"), ("deep_not_3_12.py", "PD000")]


@pytest.mark.parametrize("source", [
    "x = " + "(" * 3000 + ")" * 3000,
    "x = " + "[" * 1300 + "]" * 1300,
    "x = " + "lambda: " * 3600 + "1",
    "x = " + " and ".join(["a"] * 8000),
    "x = " + "not " * 9000 + "y",
    "x = f'{" + "(" * 3000 + "1" + ")" * 3000 + "}'",
    "if a:\n    pass\n" + "elif a:\n    pass\n" * 20000,
])
def test_the_pre_scan_refuses_what_crashes_libcst(source):
    assert nesting_problem(source + "\n") is not None


def test_the_pre_scan_accepts_big_flat_data():
    assert nesting_problem("x = [" + ", ".join(["1"] * 100_000) + "]\n") is None
    assert nesting_problem("x = " + "(" * 200 + ")" * 200 + "\n") is None


def test_valid_python_too_deep_for_libcst_is_a_named_pd000_not_a_crash():
    parsed = parse_source("x = 1\nx = " + " and ".join(["a"] * 8000) + "\n", "deep.py")
    assert parsed.module is None and [(f.code, f.line, f.message) for f in parsed.findings] == [
        ("PD000", 2, "valid Python that peftdoctor cannot read: an expression nested too deeply at line 2 is "
                     "beyond what its parser (libcst) handles")]


@pytest.mark.parametrize("form", ["x = ({})", "x = {}", "f({})", "x = ({})\n"])
def test_more_adjacent_strings_than_libcst_reads_are_named(form):
    """libcst's grammar fails (a syntax error at the next string) after 3000 adjacent string literals."""
    at_limit = parse_source("import peft\n" + form.format(" ".join(["'a'"] * 3000)) + "\n", "s.py")
    assert at_limit.module is not None and at_limit.findings == []
    pieces = ["f'{a}'"] * 3001
    past = parse_source("import peft\n" + form.format(("\n" if "(" in form else " ").join(pieces)) + "\n", "s.py")
    assert [(f.code, f.line) for f in past.findings] == [("PD000", 2)]
    assert "more than 3000 adjacent string literals at line" in past.findings[0].message


# ------------------------------------------------------------------------------------------------ Python 2


@pytest.mark.parametrize("line, construct", [
    ('print "x"', "print statement"),
    ("print >>sys.stderr, 'x', y", None),  # valid Python 3 (a tuple): it parses
    ("exec 'x = 1'", "exec statement"),
    ("x = `y`", "backtick repr"),
    ("x = 0777", "octal literal without 0o"),
    ("x = ur'a'", "ur'' string prefix"),
])
def test_python2_source_is_named(line, construct):
    findings = check_source(f"import peft\n{line}\n", "old.py").findings
    if construct is None:
        assert findings == []
        return
    [finding] = findings
    assert finding.code == "PD000" and finding.line == 2
    assert finding.message == (f"file does not parse: Python 2 source ({construct} at line 2); "
                               "peftdoctor checks Python 3")


def test_python2_except_comma_is_named_when_no_grammar_accepts_it():
    """`except X, e:` alone is valid 3.14 (PEP 758, libcst accepts it); with a print statement it is Python 2."""
    source = "import peft\ntry:\n    pass\nexcept ValueError, e:\n    print e\n"
    [finding] = check_source(source, "old.py").findings
    assert "Python 2 source (`except X, e:` at line 4)" in finding.message
    assert check_source(source.replace("print e", "print(e)"), "new.py").findings == []


def test_a_python3_error_is_not_called_python2():
    [finding] = check_source('import peft\n"""Use `x` here."""\nx = (1,\n', "bad.py").findings
    assert "Python 2" not in finding.message


# ------------------------------------------------------------------------------------------------- walking


def test_walked_files_that_never_mention_peft_are_not_reported(fixtures):
    walked = fixtures / "walked"
    result = check_paths([walked], Config())
    assert result.findings == []
    result = run_cli(str(walked))
    assert result.exit_code == 0, result.output
    assert "._" not in result.output and "PD000" not in result.output


def test_a_walked_file_that_mentions_peft_is_reported(fixtures):
    (fixtures / "walked" / "py2_peft.py").write_text("import peft\nprint peft.__version__\n")
    assert found(check_paths([fixtures / "walked"], Config())) == [("py2_peft.py", "PD000", 2)]


def test_a_named_python2_file_is_reported(fixtures):
    path = fixtures / "walked" / "py2_script.py"
    [finding] = check_paths([path], Config()).findings
    assert finding.code == "PD000" and "Python 2 source (print statement at line 5)" in finding.message
    result = run_cli(str(path))
    assert result.exit_code == 1 and "Python 2" in result.output


def test_a_file_both_walked_and_named_counts_as_named(fixtures):
    walked = fixtures / "walked"
    assert found(check_paths([walked, walked / "py2_script.py"], Config())) == [("py2_script.py", "PD000", 5)]
    assert found(check_paths([walked / "py2_script.py", walked], Config())) == [("py2_script.py", "PD000", 5)]


def test_a_named_appledouble_file_is_one_clean_line_and_exit_1(fixtures):
    path = fixtures / "walked" / "__MACOSX" / "._x.py"
    [finding] = check_paths([path], Config()).findings
    assert finding.code == "PD000" and finding.message.startswith("not a Python source file: binary data")
    result = run_cli(str(path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if "PD000" in line]
    assert len(lines) == 1 and "not a Python source file" in lines[0]
    data = json.loads(run_cli("--format", "json", str(path)).output)
    assert [f["code"] for f in data["findings"]] == ["PD000"]


def test_appledouble_files_are_not_walked_even_when_they_mention_peft(tmp_path):
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "train.py").write_text(BUGGY)
    (tmp_path / "._train.py").write_text(BUGGY)
    assert check_paths([tmp_path], Config()).findings == []


def test_check_source_reports_every_file_it_is_given():
    """check_source (the pytest plugin's unit) has no notion of walking: a Python 2 text is PD000."""
    assert [f.code for f in check_source(PY2, "py2.py").findings] == ["PD000"]
