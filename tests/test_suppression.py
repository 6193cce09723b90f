"""Suppression comments: which forms suppress what, and which are unused."""

from __future__ import annotations

from peftdoctor.suppression import parse_suppressions


def test_noqa_with_codes_only_suppresses_those_codes_on_that_line():
    s = parse_suppressions("a = 1  # noqa: PD101, PD201\nb = 2\n")
    assert s.suppresses("PD101", 1)
    assert s.suppresses("PD201", 1)
    assert not s.suppresses("PD102", 1)
    assert not s.suppresses("PD101", 2)


def test_bare_noqa_suppresses_everything_on_the_line():
    s = parse_suppressions("x = f()  # noqa\n")
    assert s.suppresses("PD101", 1) and s.suppresses("PD302", 1)
    assert not s.suppresses("PD101", 2)


def test_noqa_forms_and_case():
    s = parse_suppressions("a = 1  # NOQA:pd101\nb = 2  #noqa:PD2 explained here\nc = 3  # noqa : PD101\n")
    assert s.suppresses("PD101", 1)
    # a prefix covers every code under it; trailing prose is not a code
    assert s.suppresses("PD201", 2) and s.suppresses("PD202", 2) and not s.suppresses("PD101", 2)
    assert s.by_line[2][0].codes == ("PD2",)
    # `# noqa : X` is not the codes form, so it is a bare noqa (as flake8 reads it)
    assert s.suppresses("PD301", 3)


def test_peftdoctor_ignore_on_the_line():
    s = parse_suppressions("m = g()  # peftdoctor: ignore[PD101]\nn = g()  # peftdoctor: ignore\n")
    assert s.suppresses("PD101", 1) and not s.suppresses("PD102", 1)
    assert s.suppresses("PD999", 2)


def test_ignore_file_anywhere():
    source = "import peft\n\n# peftdoctor: ignore-file[PD201, PD3]\nx = 1\n"
    s = parse_suppressions(source)
    assert s.suppresses("PD201", 40) and s.suppresses("PD302", 1)
    assert not s.suppresses("PD101", 1)
    s = parse_suppressions("# peftdoctor: ignore-file\n")
    assert s.suppresses("PD101", 7)


def test_comment_markers_inside_strings_do_not_count():
    s = parse_suppressions('msg = "# noqa: PD101"\ntext = """\n# peftdoctor: ignore-file\n"""\n')
    assert not s.suppresses("PD101", 1)
    assert not s.suppresses("PD101", 3)


def test_untokenizable_file_still_honours_comments():
    s = parse_suppressions("def broken(:  # noqa: PD000\n    pass\n")
    assert s.suppresses("PD000", 1)


def test_both_forms_in_one_comment():
    s = parse_suppressions("x = 1  # peftdoctor: ignore[PD101]  # noqa: PD201\n")
    assert s.suppresses("PD101", 1) and s.suppresses("PD201", 1)


def test_unused_reports_only_our_codes():
    source = (
        "a = 1  # noqa: PD101\n"  # used below
        "b = 2  # noqa: PD201\n"  # unused
        "c = 3  # noqa\n"  # bare: may be another linter's
        "d = 4  # noqa: E501\n"  # another linter's code
        "e = 5  # peftdoctor: ignore\n"  # ours, bare, unused
        "f = 6  # noqa: E501, PD301\n"  # PD301 unused
        "# peftdoctor: ignore-file[PD7]\n"  # unused file-level
    )
    s = parse_suppressions(source)
    assert s.suppresses("PD101", 1)
    unused = s.unused()
    assert [item.line for item in unused] == [7, 2, 5, 6]
    assert unused[3].unused_codes() == ["PD301"]
    # codes that did not run at all are left out when the caller says so
    only_pd2 = s.unused(enabled=lambda code: code.startswith("PD2"))
    assert [item.line for item in only_pd2] == [2, 5]


def test_partly_used_comment_reports_the_rest():
    s = parse_suppressions("a = 1  # noqa: PD101, PD102\n")
    s.suppresses("PD101", 1)
    assert [item.unused_codes() for item in s.unused()] == [["PD102"]]


def test_no_comments_is_cheap_and_empty():
    s = parse_suppressions("x = 1\n")
    assert not s.by_line and not s.file_level and not s.unused()


# --- through the engine and the CLI, with the real PD101 rule -----------------

from click.testing import CliRunner  # noqa: E402

from peftdoctor.cli import cli  # noqa: E402
from peftdoctor.engine import check_source  # noqa: E402

WRAPPED = (
    "from peft import LoraConfig, PeftModel, get_peft_model\n"
    "model = get_peft_model(base, LoraConfig(r=8))\n"
    'model = PeftModel.from_pretrained(model, "out"){comment}\n'
)


def codes(source, **kw):
    return [(f.code, f.line) for f in check_source(source, "train.py", **kw).findings]


def test_real_finding_and_each_suppression_form():
    assert codes(WRAPPED.format(comment="")) == [("PD101", 3)]
    for comment in ("  # noqa: PD101", "  # noqa", "  # peftdoctor: ignore[PD101]", "  # noqa: PD1",
                    "  # peftdoctor: ignore[PD102, PD101]"):
        assert codes(WRAPPED.format(comment=comment)) == [], comment
    for comment in ("  # noqa: PD102", "  # peftdoctor: ignore[PD2]", "  # noqa: E501"):
        assert codes(WRAPPED.format(comment=comment)) == [("PD101", 3)], comment
    # a noqa on another line does nothing
    moved = WRAPPED.format(comment="").replace("LoraConfig(r=8))", "LoraConfig(r=8))  # noqa: PD101")
    assert codes(moved) == [("PD101", 3)]


def test_file_level_suppression():
    source = "# peftdoctor: ignore-file[PD101]\n" + WRAPPED.format(comment="")
    assert codes(source) == []
    source = "# peftdoctor: ignore-file[PD201]\n" + WRAPPED.format(comment="")
    assert codes(source) == [("PD101", 4)]


def test_unused_noqa_reported_as_pd001():
    source = WRAPPED.format(comment="  # noqa: PD101") + "x = 1  # noqa: PD201\ny = 2  # noqa: E501\n"
    result = check_source(source, "train.py", report_unused_noqa=True)
    assert result.findings == []
    assert [(f.code, f.line) for f in result.unused_suppressions] == [("PD001", 4)]
    assert "# noqa: PD201" in result.unused_suppressions[0].message


def test_cli_report_unused_noqa(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(WRAPPED.format(comment="  # noqa: PD101") + "x = 1  # noqa: PD302\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "train.py"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["check", "--report-unused-noqa", "train.py"])
    assert result.exit_code == 1
    assert "train.py:4:1: PD001 unused suppression comment: # noqa: PD302" in result.output
