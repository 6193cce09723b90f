"""Autofix: libcst edits that keep layout, atomic writes, idempotence, --diff."""

from __future__ import annotations

import io
import os
import time

import libcst as cst
import pytest

from peftdoctor.fix import FixError, apply_edits, write_atomically


def add(line, column, keyword="is_trainable", value="True", **more):
    return {"kind": "add_keyword", "line": line, "column": column, "keyword": keyword, "value": value, **more}


@pytest.mark.parametrize(
    "before, after",
    [
        ('m = PeftModel.from_pretrained(base, "out")\n',
         'm = PeftModel.from_pretrained(base, "out", is_trainable=True)\n'),
        ("m = load()\n", "m = load(is_trainable=True)\n"),
        ('m = PeftModel.from_pretrained(base, "out",)\n',
         'm = PeftModel.from_pretrained(base, "out", is_trainable=True,)\n'),
        (
            'm = PeftModel.from_pretrained(\n    base,\n    "out",\n)\n',
            'm = PeftModel.from_pretrained(\n    base,\n    "out",\n    is_trainable=True,\n)\n',
        ),
        (
            'm = PeftModel.from_pretrained(\n    base,\n    "out"\n)\n',
            'm = PeftModel.from_pretrained(\n    base,\n    "out",\n    is_trainable=True\n)\n',
        ),
        (
            'm = PeftModel.from_pretrained(\n    base,\n    "out"  # folder\n)\n',
            'm = PeftModel.from_pretrained(\n    base,\n    "out",  # folder\n    is_trainable=True\n)\n',
        ),
        (
            'm = PeftModel.from_pretrained(base, "out",  # folder\n)\n',
            'm = PeftModel.from_pretrained(base, "out",  # folder\n    is_trainable=True,\n)\n',
        ),
        (
            'm = PeftModel.from_pretrained(\n    base\n)\n',
            'm = PeftModel.from_pretrained(\n    base,\n    is_trainable=True\n)\n',
        ),
        (
            'm = PeftModel.from_pretrained(  # load it\n    base,  # the base\n    "out",  # folder\n)\n',
            'm = PeftModel.from_pretrained(  # load it\n    base,  # the base\n    "out",  # folder\n'
            '    is_trainable=True,\n)\n',
        ),
    ],
)
def test_add_keyword_keeps_layout(before, after):
    column = before.index("PeftModel") + 1 if "PeftModel" in before else before.index("load") + 1
    assert apply_edits(before, [add(1, column)]) == after
    # applying again changes nothing
    assert apply_edits(after, [add(1, column)]) == after


def test_add_keyword_skips_present_keyword_and_double_star():
    source = 'a = f(x, is_trainable=False)\nb = f(x, **kw)\n'
    assert apply_edits(source, [add(1, 5), add(2, 5)]) == source


def test_only_the_call_at_the_position_changes():
    source = "def g():\n    a = f(1)\n    b = f(2)\n"
    assert apply_edits(source, [add(3, 9)]) == "def g():\n    a = f(1)\n    b = f(2, is_trainable=True)\n"
    # a position with no call start: nothing
    assert apply_edits(source, [add(3, 10)]) == source


def test_nested_calls_with_one_start():
    source = 'm = PeftModel.from_pretrained(b, "o").to("cuda")\n'
    # innermost by default: the call the position literally names
    assert apply_edits(source, [add(1, 5)]) == 'm = PeftModel.from_pretrained(b, "o", is_trainable=True).to("cuda")\n'
    # or the one the edit names
    assert apply_edits(source, [add(1, 5, callee="to")]) == 'm = PeftModel.from_pretrained(b, "o").to("cuda", is_trainable=True)\n'


def test_replace_keyword_and_two_edits_on_one_call():
    source = 'cfg = LoraConfig(r=8, task_type="SEQ_2_SEQ_LM")\n'
    edits = [
        {"kind": "replace_keyword", "line": 1, "column": 7, "keyword": "task_type", "value": '"CAUSAL_LM"'},
        add(1, 7, keyword="lora_alpha", value="16"),
    ]
    assert apply_edits(source, edits) == 'cfg = LoraConfig(r=8, task_type="CAUSAL_LM", lora_alpha=16)\n'
    # replace does not add a missing keyword
    missing = "cfg = LoraConfig(r=8)\n"
    assert apply_edits(missing, edits[:1]) == missing


def test_crlf_and_comments_survive():
    source = "# header\r\nm = load(x)  # keep\r\n"
    assert apply_edits(source, [add(2, 5)]) == "# header\r\nm = load(x, is_trainable=True)  # keep\r\n"


@pytest.mark.parametrize("edit", [
    {"kind": "delete_everything", "line": 1, "column": 1, "keyword": "a", "value": "1"},
    {"kind": "add_keyword", "line": 1, "column": 1, "keyword": "not ok", "value": "1"},
    {"kind": "add_keyword", "line": 1, "column": 1, "keyword": "a", "value": "1 +"},
    {"kind": "add_keyword", "line": "x", "column": 1, "keyword": "a", "value": "1"},
    {"kind": "add_keyword", "column": 1, "keyword": "a", "value": "1"},
])
def test_malformed_edits_are_refused(edit):
    with pytest.raises(FixError):
        apply_edits("f()\n", [edit])


def test_result_always_parses():
    source = "x = [f(a,\n      b)]\n"
    new = apply_edits(source, [add(1, 6)])
    cst.parse_module(new)
    # arguments one per line after the first: the new one follows that style
    assert new == "x = [f(a,\n      b,\n      is_trainable=True)]\n"


def test_write_atomically_keeps_mode_and_encoding(tmp_path):
    path = tmp_path / "s.py"
    path.write_bytes("x = 'é'\n".encode("latin-1"))
    os.chmod(path, 0o755)
    write_atomically(path, "y = 'é'\n", "latin-1")
    assert path.read_bytes() == "y = 'é'\n".encode("latin-1")
    assert (path.stat().st_mode & 0o777) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["s.py"]


def test_apply_fixes_without_fixable_findings_touches_nothing(tmp_path):
    from peftdoctor.config import Config
    from peftdoctor.fix import apply_fixes

    path = tmp_path / "t.py"
    path.write_text("from peft import PeftModel\nx = 1\n")
    old = time.time() - 1000
    os.utime(path, (old, old))
    stream = io.StringIO()
    assert apply_fixes([str(tmp_path)], Config(), write=True, stream=stream)[0] is False
    assert stream.getvalue() == ""
    assert path.stat().st_mtime == pytest.approx(old)


# --- end to end through the CLI with the real PD103 rule ----------------------

RESUME = '''from transformers import AutoModelForCausalLM, Trainer
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("base")
model = PeftModel.from_pretrained(
    base,
    "out",  # the adapter
)
Trainer(model=model).train()
'''

CLEAN = "from peft import LoraConfig\n\ncfg = LoraConfig(r=8)\n"


def test_cli_diff_then_fix_then_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from peftdoctor.cli import cli

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(RESUME)
    clean = tmp_path / "clean.py"
    clean.write_text(CLEAN)
    old = time.time() - 1000
    os.utime(clean, (old, old))
    runner = CliRunner()

    result = runner.invoke(cli, ["check", "."])
    assert result.exit_code == 1 and "PD103" in result.output

    # --diff shows the edit and writes nothing
    result = runner.invoke(cli, ["check", "--diff", "."])
    assert result.exit_code == 1
    assert "+++ b/train.py" in result.output and '+    is_trainable=True,' in result.output
    assert script.read_text() == RESUME

    # --fix writes it; the report that follows is clean
    result = runner.invoke(cli, ["check", "--fix", "--format", "json", "."])
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(result.stdout)["findings"] == []  # the fix note goes to stderr, not into the JSON
    assert "fixed 1 finding in 1 file" in result.stderr
    fixed = script.read_text()
    assert fixed == RESUME.replace('    "out",  # the adapter\n', '    "out",  # the adapter\n    is_trainable=True,\n')
    assert clean.stat().st_mtime == pytest.approx(old)  # untouched
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".peftdoctor_cache"]
    assert not leftovers  # no temporary file of the safe writes

    # a second --fix changes nothing, --diff shows no diff and says so on stderr
    mtime = script.stat().st_mtime_ns
    result = runner.invoke(cli, ["check", "--fix", "."])
    assert result.exit_code == 0 and script.stat().st_mtime_ns == mtime
    result = runner.invoke(cli, ["check", "--diff", "."])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "peftdoctor: no fixes to apply\n"


def test_suppressed_finding_is_not_fixed(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from peftdoctor.cli import cli

    monkeypatch.chdir(tmp_path)
    source = RESUME.replace("model = PeftModel.from_pretrained(", "model = PeftModel.from_pretrained(  # noqa: PD103")
    (tmp_path / "train.py").write_text(source)
    result = CliRunner().invoke(cli, ["check", "--fix", "train.py"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.py").read_text() == source
