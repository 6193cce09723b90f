"""The record of a whole `check` run: the same command on an unchanged tree is answered from it without
parsing, and any change to what the run read (a file, a helper it imports, a new file, a config, a pin) is
seen, through the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor import run_record
from peftdoctor.cli import cli
from pinned_projects import pin_trl, sft_project

PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    shutil.copytree(PROJECTS / "frozen_helper", folder)
    return folder


@pytest.fixture
def trusting(monkeypatch, tmp_path):
    """Records kept even for files written a moment ago (the tests' files are all new), in a cache of their own."""
    monkeypatch.setattr(run_record, "RACY_NS", 0)
    monkeypatch.setenv("PEFTDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / run_record.FOLDER


def check(*args: str):
    result = CliRunner().invoke(cli, ["check", *map(str, args)])
    assert result.exit_code in (0, 1), result.output
    return result.output


def records(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_a_repeated_run_is_answered_without_parsing(project, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PEFTDOCTOR_CACHE_DIR": str(tmp_path / "cache")}
    (project / ".git").mkdir()  # pins are looked for up to the checkout's top (else up to /, as busy as /tmp)
    time.sleep(run_record.RACY_NS / 1e9 + 0.1)  # older than a record trusts: what was just written is not

    def run():
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "peftdoctor", "check", str(project)],
                              capture_output=True, text=True, env=environment, timeout=120)
        assert done.returncode == 1, done.stderr
        return done.stdout, {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}

    cold_output, cold_imports = run()
    warm_output, warm_imports = run()
    assert "PD103" in cold_output and warm_output == cold_output
    assert "libcst" in cold_imports and "libcst" not in warm_imports
    assert len(records(tmp_path / "cache" / run_record.FOLDER)) == 1


def test_an_edit_of_the_same_size_is_seen(project, trusting):
    before = check(project)
    utils = project / "utils.py"
    utils.write_text(utils.read_text().replace("is_trainable=False", "is_trainable=True "))
    after = check(project)
    assert "PD103" in before and "PD103" not in after
    assert after == check(project) == CliRunner().invoke(cli, ["check", "--no-cache", str(project)]).output


def test_a_helper_outside_the_checked_file_is_an_input(project, trusting):
    before = check(project / "train.py")
    utils = project / "utils.py"
    utils.write_text(utils.read_text().replace("is_trainable=False", "is_trainable=True"))
    assert "PD103" in before and "PD103" not in check(project / "train.py")


def test_a_new_file_in_a_walked_folder_is_found(project, trusting):
    before = check(project)
    (project / "more").mkdir()
    (project / "more" / "again.py").write_text("from peft import PeftModel\n")
    assert "in 4 files" in before and "in 5 files" in check(project)


def test_a_new_config_file_is_seen(project, trusting):
    before = check(project / "train.py")
    (project / "peftdoctor.toml").write_text('ignore = ["PD103"]\n')
    assert "PD103" in before and "PD103" not in check(project / "train.py")


def test_a_new_pin_is_seen(tmp_path, trusting):
    folder = sft_project(tmp_path, "0.8.6")
    old = check(folder)
    pin_trl(folder, "0.24.0")
    assert check(folder) != old


def test_each_command_line_has_its_own_record(project, trusting):
    everything, only_pd1 = check(project), check("--ignore", "PD103", project)
    assert len(records(trusting)) == 2
    assert check(project) == everything and check("--ignore", "PD103", project) == only_pd1 != everything


def test_a_run_that_read_something_just_changed_is_not_recorded(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    check(project)  # every file was copied a moment ago
    assert records(tmp_path / "cache" / run_record.FOLDER) == []


def test_no_cache_and_fix_keep_no_record(project, trusting):
    CliRunner().invoke(cli, ["check", "--no-cache", str(project)])
    CliRunner().invoke(cli, ["check", "--diff", str(project)])
    assert records(trusting) == []


def test_a_broken_record_is_a_miss(project, trusting):
    first = check(project)
    for record in records(trusting):
        record.write_text("{not json")
    assert check(project) == first
