"""Discovery and flags as a user meets them, with ruff as the yardstick: ignore files, the nearest config
for each file, standard input, exit status, quiet, color, statistics, fixable marks; `inspect`'s flags.

Everything runs through the real CLI (click's runner, or a subprocess where the environment or stdin matter)
on real files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor.cli import cli
from peftdoctor.engine import iter_python_files

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "fixtures" / "adapters"

# PD103 at line 5 (fixable: add is_trainable=True), PD101 at line 8 (not fixable).
SCRIPT = """\
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, Trainer

base = AutoModelForCausalLM.from_pretrained("base")
model = PeftModel.from_pretrained(base, "adapter")
Trainer(model=model).train()
other = get_peft_model(AutoModelForCausalLM.from_pretrained("b"), LoraConfig(r=8))
other = PeftModel.from_pretrained(other, "adapter2")
"""
ESCAPE = "\x1b["


def write(path: Path, text: str = SCRIPT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def invoke(*args, cwd: Path | None = None):
    """The CLI in-process; --no-cache so that every run reads the files."""
    if cwd is not None:
        old = Path.cwd()
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [*args[:1], "--no-cache", *args[1:]] if args[:1] == ("check",) else list(args))
    finally:
        if cwd is not None:
            os.chdir(old)


def run(*args, cwd: Path, stdin: str | None = None, **env):
    """The CLI in a subprocess, with `env` on top of this one's (minus color variables unless given)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin, env=environ)


def walked(folder: Path, *paths: str) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path, _ in iter_python_files([folder / p for p in paths]
                                                                                       or [folder]))


# --- .gitignore / .ignore ---------------------------------------------------------------------------

def test_ignore_files_follow_gits_pattern_rules(tmp_path):
    for name in ["train.py", "outputs/train.py", "wandb/run/train.py", "scratch.tmp.py", "keep.tmp.py",
                 "build_local/x.py", "src/build_local/x.py", "docs/a/b/x.py", "docs/x.py", "docs/y.py", "sub/gen_a.py",
                 "sub/real.py", "sub/deep/gen_b.py", "cache.py"]:
        write(tmp_path / name, "x = 1\n")
    # `name/` matches folders only: the file cache.py stays
    write(tmp_path / ".gitignore", "# copies\noutputs/\n*.tmp.py\n!keep.tmp.py\n/build_local/\ndocs/**/x.py\n"
                                   "cache.py/\n")
    write(tmp_path / ".ignore", "wandb\n")
    write(tmp_path / "sub" / ".gitignore", "gen_*.py\n")
    # `docs/**/x.py` matches docs/x.py too, as in git; `/build_local/` only at the top
    assert walked(tmp_path) == ["cache.py", "docs/y.py", "keep.tmp.py", "src/build_local/x.py", "sub/real.py",
                                "train.py"]


def test_a_deeper_file_or_a_negation_takes_a_path_back(tmp_path):
    write(tmp_path / "a" / "gen.py", "x = 1\n")
    write(tmp_path / "b" / "gen.py", "x = 1\n")
    write(tmp_path / ".gitignore", "gen.py\n")
    write(tmp_path / "b" / ".gitignore", "!gen.py\n")
    assert walked(tmp_path) == ["b/gen.py"]


def test_the_repositorys_ignore_files_apply_to_a_walked_subfolder(tmp_path):
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".gitignore", "src/generated/\n")
    write(tmp_path / "src" / "generated" / "x.py", "x = 1\n")
    write(tmp_path / "src" / "train.py", "x = 1\n")
    assert walked(tmp_path, "src") == ["src/train.py"]
    # ...but a folder named on the command line is walked whatever an outer file says of it
    assert walked(tmp_path, "src/generated") == ["src/generated/x.py"]
    write(tmp_path / ".git" / "info" / "exclude", "train.py\n")  # the repository's own list counts too
    assert walked(tmp_path, "src") == []
    # a repository inside another one is not governed by the outer one's files
    (tmp_path / "src" / "generated" / ".git").mkdir()
    write(tmp_path / "src" / "generated" / "sub" / "y.py", "x = 1\n")
    write(tmp_path / ".gitignore", "src/generated/\ny.py\n")
    assert walked(tmp_path, "src/generated/sub") == ["src/generated/sub/y.py"]
    assert walked(tmp_path, "src/generated") == ["src/generated/sub/y.py", "src/generated/x.py"]


def test_copies_under_ignored_folders_are_not_reported_again(tmp_path):
    """The issue's case: `outputs/` and `wandb/` copies of a script tripled the findings."""
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".gitignore", "outputs/\nwandb/\n")
    for folder in ("", "outputs/", "wandb/run-1/files/"):
        write(tmp_path / f"{folder}train.py")
    result = invoke("check", "--format", "json", ".", cwd=tmp_path)
    assert result.exit_code == 1
    assert {f["path"] for f in json.loads(result.stdout)["findings"]} == {"train.py"}
    result = invoke("check", "--format", "json", "--no-respect-gitignore", ".", cwd=tmp_path)
    assert {f["path"] for f in json.loads(result.stdout)["findings"]} == {
        "train.py", "outputs/train.py", "wandb/run-1/files/train.py"}
    # the config can say the same as the flag
    write(tmp_path / "peftdoctor.toml", "respect-gitignore = false\n")
    result = invoke("check", "--format", "json", ".", cwd=tmp_path)
    assert len({f["path"] for f in json.loads(result.stdout)["findings"]}) == 3


def test_a_file_named_explicitly_is_checked_even_if_ignored(tmp_path):
    write(tmp_path / ".gitignore", "outputs/\n")
    write(tmp_path / "outputs" / "train.py")
    result = invoke("check", "outputs/train.py", cwd=tmp_path)
    assert result.exit_code == 1 and "outputs/train.py:5:9: PD103" in result.stdout


# --- config per file ----------------------------------------------------------------------------------

def codes_by_file(result) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in json.loads(result.stdout)["findings"]:
        found.setdefault(item["path"], set()).add(item["code"])
    return found


def test_each_file_gets_its_nearest_config_in_any_order(tmp_path):
    write(tmp_path / "src" / "a.py")
    write(tmp_path / "src" / "pyproject.toml", '[tool.peftdoctor]\nignore = ["PD103"]\n')
    write(tmp_path / "other" / "b.py")
    write(tmp_path / "other" / "peftdoctor.toml", 'ignore = ["PD101"]\n')  # top-level keys
    write(tmp_path / "plain" / "c.py")
    expected = {"src/a.py": {"PD101"}, "other/b.py": {"PD103"}, "plain/c.py": {"PD101", "PD103"}}
    for order in (["src/a.py", "other/b.py", "plain/c.py"], ["plain/c.py", "other/b.py", "src/a.py"]):
        result = invoke("check", "--format", "json", *order, cwd=tmp_path)
        assert codes_by_file(result) == expected, order
    # a folder walk too; the command line still overrides every file's config
    result = invoke("check", "--format", "json", ".", cwd=tmp_path)
    assert codes_by_file(result) == expected
    result = invoke("check", "--format", "json", "--select", "PD103", ".", cwd=tmp_path)
    assert codes_by_file(result) == {"other/b.py": {"PD103"}, "plain/c.py": {"PD103"}}


def test_dot_peftdoctor_toml_wins_in_its_folder_and_a_broken_one_is_one_line(tmp_path):
    write(tmp_path / "train.py")
    write(tmp_path / "pyproject.toml", '[tool.peftdoctor]\nignore = ["PD101"]\n')
    write(tmp_path / ".peftdoctor.toml", 'ignore = ["PD103"]\n')
    result = invoke("check", "--format", "json", "train.py", cwd=tmp_path)
    assert codes_by_file(result) == {"train.py": {"PD101"}}
    write(tmp_path / "sub" / "x.py")
    write(tmp_path / "sub" / "peftdoctor.toml", "ignore = [1\n")
    result = invoke("check", ".", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "sub/peftdoctor.toml: invalid TOML" in result.output


def test_the_cache_keys_each_file_by_its_own_config(tmp_path, monkeypatch):
    """A change to one folder's config changes that folder's findings only, with the cache on."""
    write(tmp_path / "a" / "train.py")
    write(tmp_path / "b" / "train.py")
    write(tmp_path / "b" / "peftdoctor.toml", 'ignore = ["PD101"]\n')
    cache = ["--cache-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(cli, ["check", *cache, "--format", "json", "a", "b"])
    assert codes_by_file(first) == {"a/train.py": {"PD101", "PD103"}, "b/train.py": {"PD103"}}
    assert runner.invoke(cli, ["check", *cache, "--format", "json", "a", "b"]).stdout == first.stdout
    write(tmp_path / "b" / "peftdoctor.toml", 'ignore = ["PD103"]\n')
    again = runner.invoke(cli, ["check", *cache, "--format", "json", "b", "a"])
    assert codes_by_file(again) == {"a/train.py": {"PD101", "PD103"}, "b/train.py": {"PD101"}}


# --- paths, codes -------------------------------------------------------------------------------------

def test_no_path_means_the_current_folder(tmp_path):
    write(tmp_path / "train.py")
    result = invoke("check", cwd=tmp_path)
    assert result.exit_code == 1 and "train.py:5:9: PD103" in result.stdout


def test_no_python_file_found_is_a_warning(tmp_path):
    write(tmp_path / "notes.txt", "hello\n")
    result = invoke("check", str(tmp_path))
    assert result.exit_code == 0
    assert result.stderr == f"peftdoctor: warning: no Python files found under {tmp_path}\n"


@pytest.mark.parametrize("flag, code", [("--select", "PD9"), ("--ignore", "PD199"), ("--extend-select", "PD10,X")])
def test_a_code_that_matches_no_rule_is_a_usage_error(tmp_path, flag, code):
    write(tmp_path / "train.py")
    result = invoke("check", flag, code, str(tmp_path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("peftdoctor: error: '")
    assert invoke("check", "--select", "PD10", str(tmp_path)).exit_code == 1  # a prefix of real codes is fine
    assert invoke("inspect", "--select", "PD9", str(ADAPTERS / "good-llama")).exit_code == 2


# --- standard input -----------------------------------------------------------------------------------

def test_stdin_is_checked_under_its_stdin_filename_and_config(tmp_path):
    write(tmp_path / "sub" / "peftdoctor.toml", 'ignore = ["PD101"]\n')
    result = run("check", "-", cwd=tmp_path, stdin=SCRIPT)
    assert result.returncode == 1 and "-:5:9: PD103" in result.stdout and "-:8:9: PD101" in result.stdout
    result = run("check", "-", "--stdin-filename", "sub/train.py", cwd=tmp_path, stdin=SCRIPT)
    assert "sub/train.py:5:9: PD103" in result.stdout and "PD101" not in result.stdout
    assert not (tmp_path / "sub" / "train.py").exists()
    alone = run("check", "--stdin-filename", "sub/train.py", cwd=tmp_path, stdin=SCRIPT)
    assert alone.returncode == 1 and alone.stdout == result.stdout


def test_stdin_fix_prints_the_fixed_text(tmp_path):
    fixed = SCRIPT.replace('(base, "adapter")', '(base, "adapter", is_trainable=True)')
    result = run("check", "-", "--fix", cwd=tmp_path, stdin=SCRIPT)
    assert result.returncode == 1  # PD101 has no fix and is left
    assert result.stdout == fixed
    result = run("check", "-", "--fix", "--select", "PD103", cwd=tmp_path, stdin=SCRIPT)
    assert result.returncode == 0 and result.stdout == fixed
    result = run("check", "-", "--diff", cwd=tmp_path, stdin=SCRIPT)
    assert result.returncode == 1
    assert '+model = PeftModel.from_pretrained(base, "adapter", is_trainable=True)' in result.stdout
    result = run("check", "-", "--diff", cwd=tmp_path, stdin=fixed)
    assert result.returncode == 0 and result.stdout == ""
    result = run("check", "-", "other.py", cwd=tmp_path, stdin=SCRIPT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


# --- exit status, quiet, color ------------------------------------------------------------------------

def test_exit_zero_quiet_and_version(tmp_path):
    write(tmp_path / "train.py")
    result = invoke("check", "--exit-zero", "-q", "train.py", cwd=tmp_path)
    assert result.exit_code == 0
    assert [line.split(": ")[1].split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        "PD103", "PD101"]
    assert "Found" not in result.stdout and "fixable" not in result.stdout
    assert invoke("check", "--exit-zero", "missing.py", cwd=tmp_path).exit_code == 2  # errors are still errors
    for flag in ("-V", "--version"):
        assert invoke(flag).stdout.startswith("peftdoctor, version ")


@pytest.mark.parametrize("flag, env, colored", [
    ("auto", {}, False),                      # a pipe
    ("auto", {"FORCE_COLOR": "1"}, True),
    ("auto", {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
    ("always", {"NO_COLOR": "1"}, True),
    ("never", {"FORCE_COLOR": "1"}, False),
])
def test_color_flag_and_environment(tmp_path, flag, env, colored):
    write(tmp_path / "train.py")
    result = run("check", "--no-cache", "--color", flag, "train.py", cwd=tmp_path, **env)
    assert result.returncode == 1 and "PD103" in result.stdout
    assert (ESCAPE in result.stdout) is colored


# --- statistics, fixable marks, fixes -----------------------------------------------------------------

def test_findings_carry_a_fixable_mark_and_a_count_line(tmp_path):
    write(tmp_path / "train.py")
    lines = invoke("check", "train.py", cwd=tmp_path).stdout.splitlines()
    assert lines[0].startswith("train.py:5:9: PD103 [*] adapter loaded without is_trainable=True")
    assert lines[2].startswith("train.py:8:9: PD101 the model passed")
    assert lines[-2:] == ["Found 2 findings in 1 file (2 errors).", "[*] 1 fixable with `--fix`."]


def test_statistics_like_ruff(tmp_path):
    write(tmp_path / "a.py")
    write(tmp_path / "b.py", SCRIPT.split("other =")[0])
    result = invoke("check", "--statistics", ".", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "2  PD103  [*] frozen-adapter-trained",
        "1  PD101  [ ] adapter-wrapped-twice",
        "Found 3 findings in 2 files (3 errors).",
        "[*] 2 fixable with `--fix`.",
    ]


def test_show_fixes_says_what_fix_changes_and_what_it_changed(tmp_path):
    script = write(tmp_path / "train.py")
    result = invoke("check", "--show-fixes", "train.py", cwd=tmp_path)
    assert "  fix: add `is_trainable=True` in the call at line 5" in result.stdout.splitlines()
    result = invoke("check", "--fix", "--show-fixes", "train.py", cwd=tmp_path)
    assert result.stderr.splitlines() == ["peftdoctor: fixed 1 finding in 1 file", "- train.py:",
                                          "    1 \N{MULTIPLICATION SIGN} PD103 (frozen-adapter-trained)"]
    assert "is_trainable=True" in script.read_text()
    assert "PD103" not in result.stdout and "PD101" in result.stdout


# --- inspect ------------------------------------------------------------------------------------------

def test_inspect_quiet_statistics_and_json_summary():
    nan, good = str(ADAPTERS / "nan"), str(ADAPTERS / "good-llama")
    loud = invoke("inspect", nan, good)
    assert "peft type" in loud.stdout and "r / alpha" in loud.stdout
    quiet = invoke("inspect", "--quiet", nan, good)
    assert quiet.exit_code == 1
    assert [line.split(": ")[1].split()[0] for line in quiet.stdout.splitlines() if not line.startswith(" ")] == [
        "PD606"]
    stats = invoke("inspect", "--statistics", nan, good)
    assert stats.stdout.splitlines() == ["1  PD606  adapter-non-finite", "Found 1 finding in 2 adapters (1 error)."]
    data = json.loads(invoke("inspect", "--format", "json", good).stdout)
    assert data["kind"] == "inspect" and data["findings"] == []
    assert data["adapters"] == [{
        "path": good, "weights": str(Path(good) / "adapter_model.safetensors"), "peft_type": "LORA",
        "task_type": data["adapters"][0]["task_type"], "base_model": "fixtures/bases/tiny-llama", "r": 4,
        "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "tensors": 8, "parameters": 512,
        "dtypes": {"F32": 8}, "bytes": 2048,
    }]


def test_inspect_reads_each_adapters_nearest_config(tmp_path):
    import shutil

    for folder in ("a", "b"):
        target = tmp_path / folder / "nan"
        shutil.copytree(ADAPTERS / "nan", target)
        config = json.loads((target / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(ROOT / config["base_model_name_or_path"])
        (target / "adapter_config.json").write_text(json.dumps(config))
    write(tmp_path / "b" / "peftdoctor.toml", 'ignore = ["PD606"]\n')
    for order in (["a", "b"], ["b", "a"]):
        result = invoke("inspect", "--format", "json", *order, cwd=tmp_path)
        assert [(f["code"], f["path"].split("/")[0]) for f in json.loads(result.stdout)["findings"]] == [
            ("PD606", "a")], order
