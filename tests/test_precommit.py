"""The pre-commit hooks, for real: `pre-commit try-repo <this checkout>` on a throwaway git repo.

pre-commit builds the hook environment by pip-installing this checkout (core
dependencies only, from the package registry). try-repo uses the checkout's
committed files plus changes to tracked files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

BUGGY = '''from transformers import AutoModelForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

base = AutoModelForCausalLM.from_pretrained("base")
model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj"]))
model = PeftModel.from_pretrained(model, "out")
'''
FIXED = BUGGY.replace("PeftModel.from_pretrained(model,", "PeftModel.from_pretrained(base,").replace(
    'model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj"]))\n', "")


def _git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def _try_repo(repo: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PRE_COMMIT_COLOR": "never"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(REPO_ROOT), "--all-files"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_llama

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    folder = tmp_path_factory.mktemp("adapter") / "good"
    model.save_pretrained(folder)
    return folder


def _notebook(source: str) -> str:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def test_hooks_fail_on_findings_and_pass_after_the_fix(tmp_path, trained_adapter):
    if importlib.util.find_spec("pre_commit") is None:
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    if not (REPO_ROOT / ".git").exists():
        pytest.skip(f"{REPO_ROOT} is not a git checkout; pre-commit try-repo needs one")

    repo = tmp_path / "project"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "train.py").write_text(BUGGY)
    (repo / "explore.ipynb").write_text(_notebook("!nvidia-smi\n" + BUGGY))
    shutil.copytree(trained_adapter, repo / "adapters" / "good")
    broken = repo / "adapters" / "broken"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{not json")
    _git("add", "-A", cwd=repo)

    home = tmp_path / "pre-commit-home"
    first = _try_repo(repo, home)
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    assert "peftdoctor check" in output and "peftdoctor inspect" in output
    assert "train.py:6:9: PD101" in output
    assert "explore.ipynb:cell 1:7:9: PD101" in output  # notebooks are passed to the hook too
    assert "PD600" in output and "adapters/broken" in output
    # the good adapter is checked (its summary is shown) but has no error
    assert "adapters/good" in output
    assert not [line for line in output.splitlines() if line.startswith("adapters/good") and ": PD6" in line
                and "PD612" not in line]
    assert "Traceback" not in output

    (repo / "train.py").write_text(FIXED)
    (repo / "explore.ipynb").write_text(_notebook(FIXED))
    shutil.rmtree(broken)
    shutil.copytree(trained_adapter, broken)
    _git("add", "-A", cwd=repo)
    second = _try_repo(repo, home)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert output.count("Passed") == 2, output



def test_hook_environment_is_light():
    """The hooks are `language: python`: pre-commit pip-installs the package with its core
    dependencies (try-repo throws that environment away, so check what it installs)."""
    import tomllib

    hooks = (REPO_ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "additional_dependencies" not in hooks
    core = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {dep.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for dep in core}
    assert not names & {"torch", "transformers", "peft", "accelerate", "trl"}, names


def test_the_readme_pins_the_release_tag_of_this_version():
    """pre-commit's `rev:` is a git tag; the release tags are `v<version>`, so the README's must be this one's."""
    from peftdoctor import __version__

    revs = [line.split("rev:")[1].strip() for line in (REPO_ROOT / "README.md").read_text().splitlines()
            if line.strip().startswith("rev:")]
    assert revs == [f"v{__version__}"]
