"""Jupyter notebooks through the real CLI: checked like scripts, located by cell, fixed in their cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from peftdoctor.finding import Finding
from peftdoctor.notebook import in_cells, mask_cell, read_notebook

pytest_plugins = ["pytester"]
SARIF_SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, cwd=cwd)


def code(source: str, outputs=None) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {"scrolled": True},
            "outputs": outputs or [], "source": source.splitlines(keepends=True)}


def markdown(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.splitlines(keepends=True)}


def write_notebook(path: Path, cells: list[dict], language: str = "python") -> Path:
    notebook = {"cells": cells, "metadata": {"kernelspec": {"display_name": "k", "language": language, "name": "k"},
                                             "colab": {"provenance": []}},
                "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


OUTPUT = {"output_type": "stream", "name": "stdout", "text": ["Successfully installed peft-0.13.2\n"]}

# Cell 1 is markdown; the adapter is loaded in cell 4 (line 3) and trained in cell 6 (line 3): PD103.
COLAB_CELLS = [
    markdown("# Resume a LoRA run"),
    code("%pip install -q peft transformers \\\n    accelerate\n!nvidia-smi", [OUTPUT]),
    code("%%bash\nif [ -d out ]; then\n  ls out\nfi"),
    code("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, Trainer\n"
         "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), 'out')\nmodel?"),
    code("import os\nfiles = !ls out\nif files:\n    !du -sh out\nprint('ok')"),
    code("%%time\ntrainer = Trainer(model=model)\ntrainer.train()"),
]


def test_a_named_notebook_is_checked_with_magics_masked_and_findings_in_their_cell(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", COLAB_CELLS)
    result = run("check", "--no-cache", str(notebook))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PD000" not in result.stdout
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{notebook}:cell 4:3:9: PD103 "), result.stdout
    assert "(trainer.train() at cell 6, line 3)" in first  # a line named in the message is in its cell too
    assert "Found 1 finding in 1 file" in result.stdout
    assert "Traceback" not in result.stderr


def test_folder_walk_finds_notebooks_and_skips_those_without_peft(tmp_path):
    write_notebook(tmp_path / "train.ipynb", COLAB_CELLS)
    write_notebook(tmp_path / "plots.ipynb", [code("import matplotlib\n!ls\nx = (1,\n")])  # broken, no peft
    (tmp_path / "scratch.ipynb").write_text("{ not json", encoding="utf-8")  # not a notebook, no peft
    result = run("check", "--no-cache", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'train.ipynb'}:cell 4:3:9: PD103" in result.stdout
    assert "plots.ipynb" not in result.stdout and "scratch.ipynb" not in result.stdout
    assert "in 3 files" in result.stdout
    named = run("check", "--no-cache", str(tmp_path / "plots.ipynb"))
    assert named.returncode == 1 and f"{tmp_path / 'plots.ipynb'}:cell 1:3:" in named.stdout
    assert "PD000 cell does not parse" in named.stdout


def test_malformed_notebooks_give_one_clear_line(tmp_path):
    cases = {
        "bad_json.ipynb": "{\"cells\": [",
        "no_cells.ipynb": json.dumps({"metadata": {}, "nbformat": 4}),
        "v3.ipynb": json.dumps({"worksheets": [{"cells": []}], "nbformat": 3}),
        "odd_source.ipynb": json.dumps({"cells": [{"cell_type": "code", "source": 42}], "nbformat": 4}),
        "binary.ipynb": "\udcff",
    }
    expected = {
        "bad_json.ipynb": "PD000 not a notebook: invalid JSON (Expecting value at line 1 column 12)",
        "no_cells.ipynb": 'PD000 not a notebook: the JSON has no "cells" list',
        "v3.ipynb": "PD000 a notebook in the old nbformat 3 layout",
        "odd_source.ipynb": "PD000 not a notebook: cell 1 has a source that is not text",
        "binary.ipynb": "PD000 not a notebook: undecodable as UTF-8 at byte 0",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        result = run("check", "--no-cache", str(path))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert f"{path}:1: {expected[name]}" in result.stdout, (name, result.stdout)
        assert "Traceback" not in result.stderr and result.stderr == "", (name, result.stderr)
        fixed = run("check", "--no-cache", "--fix", str(path))
        assert fixed.returncode == 1 and "Traceback" not in fixed.stderr
        assert path.read_bytes() == text.encode("utf-8", "surrogateescape")


def test_machine_formats_carry_the_cell(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", COLAB_CELLS)
    data = json.loads(run("check", "--no-cache", "--format", "json", str(notebook)).stdout)
    [finding] = data["findings"]
    assert (finding["cell"], finding["line"], finding["column"], finding["code"]) == (4, 3, 9, "PD103")
    assert finding["end_line"] == 3 and finding["fixable"] is True
    sarif = json.loads(run("check", "--no-cache", "--format", "sarif", str(notebook), cwd=tmp_path).stdout)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(sarif)
    [result] = sarif["runs"][0]["results"]
    assert result["properties"]["cell"] == 4
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    github = run("check", "--no-cache", "--format", "github", str(notebook), cwd=tmp_path).stdout
    assert github.startswith("::error file=train.ipynb,title=PD103::cell 4:3:9: adapter loaded"), github
    junit = run("check", "--no-cache", "--format", "junit", str(notebook)).stdout
    assert 'name="PD103 cell 4:3:9"' in junit and f"{notebook}:cell 4:3:9: PD103" in junit


def test_python_scripts_keep_their_json_keys(tmp_path):
    (tmp_path / "train.py").write_text("from peft import PeftModel\nfrom transformers import Trainer\n"
                                       "m = PeftModel.from_pretrained(b, 'o')\nTrainer(model=m).train()\n")
    [finding] = json.loads(run("check", "--no-cache", "--format", "json", str(tmp_path)).stdout)["findings"]
    assert "cell" not in finding


def test_fix_edits_the_cell_and_keeps_outputs_metadata_and_magics(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", COLAB_CELLS)
    before = json.loads(notebook.read_text(encoding="utf-8"))
    diff = run("check", "--no-cache", "--diff", str(notebook))
    assert f"--- a/{notebook.as_posix()}:cell 4" in diff.stdout
    assert "+model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), 'out', " \
           "is_trainable=True)" in diff.stdout
    fixed = run("check", "--no-cache", "--fix", str(notebook))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "fixed 1 finding in 1 file" in fixed.stderr
    after = json.loads(notebook.read_text(encoding="utf-8"))
    expected = json.loads(json.dumps(before))
    expected["cells"][3]["source"][2] = ("model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
                                         "'base'), 'out', is_trainable=True)\n")
    assert after == expected  # outputs, metadata, magics, other cells: as they were
    assert after["cells"][3]["source"][-1] == "model?"
    again = notebook.read_bytes()
    assert run("check", "--no-cache", "--fix", str(notebook)).returncode == 0
    assert notebook.read_bytes() == again


def test_suppression_comments_work_in_cells(tmp_path):
    cells = [dict(cell) for cell in COLAB_CELLS]
    cells[3] = code("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, Trainer\n"
                    "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), 'out')"
                    "  # noqa: PD103\n")
    cells[4] = code("%ls\nx = 1  # peftdoctor: ignore[PD101]\n")
    notebook = write_notebook(tmp_path / "train.ipynb", cells)
    result = run("check", "--no-cache", "--report-unused-noqa", str(notebook))
    assert "PD103" not in result.stdout
    assert f"{notebook}:cell 5:2:1: PD001 unused suppression comment" in result.stdout, result.stdout


def test_cached_results_keep_the_cell(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", COLAB_CELLS)
    cache = tmp_path / "cache"
    first = run("check", "--cache-dir", str(cache), str(notebook))
    second = run("check", "--cache-dir", str(cache), str(notebook))
    assert first.stdout == second.stdout and ":cell 4:3:9: PD103" in second.stdout
    assert any(cache.rglob("*.json"))


def test_a_notebook_in_another_language_has_nothing_to_check(tmp_path):
    notebook = write_notebook(tmp_path / "r.ipynb", [code("library(peft)\nx <- get_peft_model(1)\n")], language="R")
    result = run("check", "--no-cache", str(notebook))
    assert result.returncode == 0 and "No findings in 1 file." in result.stdout


def test_masking_keeps_every_line_and_leaves_strings_and_brackets_alone():
    source = ('!pip install peft \\\n  trl\n%matplotlib inline\nx = !ls\nmodel?\n??get_peft_model\n'
              'if True:\n    !echo hi  # why?\ns = """\n%not a magic\nwhat?\n"""\nx = ("%d"\n     % 3)\ny = 1  # ok?\n')
    masked, placeholders = mask_cell(source)
    assert masked.count("\n") == source.count("\n")
    compile(masked, "<cell>", "exec")  # every IPython line masked, in place
    assert [line for _, line in placeholders] == ["!pip install peft \\", "  trl", "%matplotlib inline",
                                                  "x = !ls", "model?", "??get_peft_model", "    !echo hi  # why?"]
    kept = masked.splitlines()
    assert kept[9:12] == ["%not a magic", "what?", '"""'] and kept[13] == "     % 3)" and kept[14] == "y = 1  # ok?"


def test_a_timed_statement_is_still_read_and_fixed_in_place(tmp_path):
    notebook = write_notebook(tmp_path / "train.ipynb", [
        code("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, Trainer\n"
             "%time model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), 'out')\n"),
        code("trainer = Trainer(model=model)\n%time trainer.train()"),
    ])
    result = run("check", "--no-cache", str(notebook))
    assert f"{notebook}:cell 1:3:15: PD103" in result.stdout, result.stdout  # the column of the real code
    assert "(trainer.train() at cell 2, line 2)" in result.stdout
    assert run("check", "--no-cache", "--fix", str(notebook)).returncode == 0
    cell = json.loads(notebook.read_text(encoding="utf-8"))["cells"][0]["source"]
    assert cell[2] == ("%time model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('base'), "
                       "'out', is_trainable=True)\n")


def test_line_references_in_message_hint_and_versions_name_the_cell(tmp_path):
    notebook = read_notebook(write_notebook(tmp_path / "nb.ipynb", COLAB_CELLS).read_bytes())
    # script lines: cell 2 has 3 lines (1-3), cell 3 has 4 (4-7), cell 4 starts at line 8
    found = in_cells(notebook, Finding(code="PD404", message="pad = eos at line 9", path="nb.ipynb", line=10,
                                       column=3, end_line=11, hint="see line 4", versions="implied at line 8"))
    assert (found.cell, found.line, found.end_line, found.column) == (4, 3, 4, 3)
    assert (found.message, found.hint, found.versions) == ("pad = eos at cell 4, line 2", "see cell 3, line 1",
                                                           "implied at cell 4, line 1")


def test_pytest_plugin_checks_notebooks(pytester):
    write_notebook(pytester.path / "train.ipynb", COLAB_CELLS)
    result = pytester.runpytest("--peftdoctor", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*train.ipynb::peftdoctor FAILED*", "*train.ipynb:cell 4:3:9: PD103 adapter loaded*"])


def test_fix_keeps_the_json_layout_of_the_file(tmp_path):
    cells = json.loads(json.dumps([markdown("# Réglage fin"), *COLAB_CELLS[1:]]))  # edited below
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    def written(data) -> bytes:  # indent 2, \u escapes, CRLF, no final newline: not Jupyter's own layout
        return json.dumps(data, indent=2, ensure_ascii=True).replace("\n", "\r\n").encode()

    path = tmp_path / "train.ipynb"
    path.write_bytes(written(notebook))
    assert run("check", "--no-cache", "--fix", str(path)).returncode == 0
    source = notebook["cells"][3]["source"]
    source[2] = source[2].replace("'out')", "'out', is_trainable=True)")
    assert path.read_bytes() == written(notebook)


def test_automagic_lines_are_masked_only_when_they_are_not_python():
    source = "pip install -q peft\ncd ~/data\nls = 3\ncat(x)\npip = 1\ncd /content\n"  # the last is a division
    masked, placeholders = mask_cell(source)
    assert masked == "pass  # masked IPython line\n" * 2 + source.split("\n", 2)[2]
    assert [line for _, line in placeholders] == ["pip install -q peft", "cd ~/data"]


def test_a_cell_magic_below_the_first_line_is_masked_like_a_line_magic():
    masked, _ = mask_cell("x = 1\n%%time\ny = 2")
    assert masked == "x = 1\npass  # masked IPython line\ny = 2\n"


def test_a_cell_that_does_not_parse_is_reported_and_the_others_are_checked(tmp_path):
    cells = [*COLAB_CELLS[:2], code("print 'hello'"), code("x = f(\n  1,"), *COLAB_CELLS[2:],
             code("def g(:  # noqa: PD000\n  pass")]
    notebook = write_notebook(tmp_path / "broken.ipynb", cells)
    result = run("check", "--no-cache", str(notebook))
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  hint")]
    assert lines == [
        (f"{notebook}:cell 3:1:1: PD000 cell does not parse: Python 2 source (print statement at cell 3, line 1); "
         "peftdoctor checks Python 3"),
        f"{notebook}:cell 4:1:6: PD000 cell does not parse: '(' was never closed",
        (f"{notebook}:cell 6:3:9: PD103 [*] adapter loaded without is_trainable=True is trained (trainer.train() at "
         "cell 8, line 3); its LoRA weights are frozen (requires_grad=False), so nothing is learned"),
        "Found 3 findings in 1 file (3 errors).",
        "[*] 1 fixable with `--fix`.",
    ], result.stdout
    assert "the notebook's other cells were checked" in result.stdout


def test_lines_are_counted_where_python_counts_them(tmp_path):
    # a form feed and a line separator are not line ends for Python (str.splitlines would split at both)
    cells = [code("s = '\u2028'\x0c\nimport peft\n"), code("%ls\r\ny = 1\r\n\x00"), code("z = 2")]
    notebook = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells).read_bytes())
    assert [notebook.locate(line) for line in range(1, 7)] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1)]
    assert [(f.line, f.message) for f in notebook.broken] == [(5, "not a Python source file: binary data (a NUL "
                                                                   "character)")]
    compile(notebook.script, "<script>", "exec")
