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
