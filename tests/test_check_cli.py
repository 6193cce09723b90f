"""`peftdoctor check` as a user runs it: exit codes, PD000, missing paths, no heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, cwd=cwd)


BUGGY = """\
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("base")
model = get_peft_model(base, LoraConfig(r=8))
model = PeftModel.from_pretrained(model, "adapter")
"""


def test_syntax_error_gives_pd000_and_other_files_are_still_checked(tmp_path):
    (tmp_path / "broken.py").write_text("from peft import get_peft_model\ndef f(:\n    pass\n")
    (tmp_path / "train.py").write_text(BUGGY)
    result = run("check", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any("broken.py:2:" in line and "PD000" in line for line in lines), result.stdout
    assert any("train.py:6:" in line and "PD101" in line for line in lines), result.stdout
    assert "Traceback" not in result.stderr


def test_syntax_error_in_a_file_without_peft_is_reported_when_named(tmp_path):
    (tmp_path / "util.py").write_text("x = (1,\n")
    result = run("check", str(tmp_path / "util.py"))
    assert result.returncode == 1
    assert "PD000" in result.stdout


def test_syntax_error_in_a_walked_file_without_peft_is_not_reported(tmp_path):
    (tmp_path / "util.py").write_text("x = (1,\n")
    result = run("check", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert "PD000" not in result.stdout


def test_syntax_error_in_a_walked_peft_file_is_reported(tmp_path):
    (tmp_path / "train.py").write_text("import peft\nx = (1,\n")
    result = run("check", str(tmp_path))
    assert result.returncode == 1
    assert "PD000" in result.stdout


def test_missing_path_exits_2_with_one_line(tmp_path):
    result = run("check", str(tmp_path / "nope.py"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "nope.py" in result.stderr and "Traceback" not in result.stderr


def test_clean_file_exits_0(tmp_path):
    (tmp_path / "ok.py").write_text("import peft\nprint(peft.__name__)\n")
    result = run("check", str(tmp_path / "ok.py"))
    assert result.returncode == 0, result.stdout
    assert "No findings" in result.stdout


def test_select_and_ignore_by_prefix(tmp_path):
    (tmp_path / "train.py").write_text(BUGGY)
    assert run("check", "--ignore", "PD1", str(tmp_path)).returncode == 0
    assert run("check", "--select", "PD2", str(tmp_path)).returncode == 0
    assert run("check", "--select", "PD10", str(tmp_path)).returncode == 1


def test_folders_skip_virtualenvs_and_hidden_dirs(tmp_path):
    for folder in (".hidden", "venv", "node_modules", "build", "pkg/__pycache__"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "train.py").write_text(BUGGY)
    custom_env = tmp_path / "myenv"
    custom_env.mkdir()
    (custom_env / "pyvenv.cfg").write_text("home = /usr\n")
    (custom_env / "train.py").write_text(BUGGY)
    result = run("check", str(tmp_path))
    assert result.returncode == 0, result.stdout


def test_rules_and_explain():
    listed = run("rules")
    assert listed.returncode == 0
    for code in ("PD101", "PD102", "PD103", "PD201", "PD301", "PD302"):
        assert code in listed.stdout
    explained = run("explain", "pd101")
    assert explained.returncode == 0 and "## Why is this bad?" in explained.stdout
    unknown = run("explain", "PD999")
    assert unknown.returncode == 2 and "PD999" in unknown.stderr


def test_check_imports_no_torch_transformers_or_peft():
    script = (
        "import sys\n"
        "from peftdoctor.cli import cli\n"
        "try:\n"
        f"    cli(['check', {str(ROOT / 'fixtures')!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'trl', 'accelerate'))\n"
        "print('HEAVY:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "HEAVY: []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_fix_adds_task_type_and_clears_inference_mode(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "from peft import LoraConfig, get_peft_model\n"
        "from transformers import AutoModelForTokenClassification, Trainer\n"
        "model = AutoModelForTokenClassification.from_pretrained('bert', num_labels=5)\n"
        "config = LoraConfig(r=8, modules_to_save=None, inference_mode=True)\n"
        "model = get_peft_model(model, config)\n"
        "Trainer(model=model).train()\n"
    )
    before = run("check", str(script))
    assert {"PD103", "PD301"} <= {line.split()[1] for line in before.stdout.splitlines() if ": PD" in line}
    fixed = run("check", "--fix", str(script))
    assert fixed.returncode == 0, fixed.stdout
    text = script.read_text()
    assert "inference_mode=False" in text and 'task_type="TOKEN_CLS"' in text
    assert run("check", "--diff", str(script)).stdout == ""


ODD_SOURCES = {
    "parens.py": "import peft\nx = " + "(" * 3000 + "1" + ")" * 3000 + "\n",
    "chain_add.py": "import peft\nx = " + "+".join(["1"] * 20000) + "\n",
    "chain_call.py": "import peft\nx = f" + "()" * 20000 + "\n",
    "unary.py": "import peft\nx = " + "-" * 20000 + "1\n",
    "strings.py": "import peft\nx = " + " ".join(['"a"'] * 20000) + "\n",
    "nul.py": "import peft\nx = 1\x00\n",
    "tabs.py": "import peft\ndef f():\n\treturn 1\n        return 2\n",
    "ok.py": BUGGY,
}


def test_odd_files_never_crash_the_run(tmp_path):
    """libcst's native parser can crash the process on input nested deeper than Python accepts."""
    for name, source in ODD_SOURCES.items():
        (tmp_path / name).write_text(source)
    result = run("check", str(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    reported = {line.split(":")[0].rsplit("/", 1)[-1] for line in result.stdout.splitlines() if ": PD" in line}
    assert reported == set(ODD_SOURCES), result.stdout
    assert "ok.py:6:9: PD101" in result.stdout.replace(str(tmp_path) + "/", "")
