"""The result cache: a warm run answers what a cold run would, and a change anywhere a file's
findings can come from (the file, a module joined to it by imports, a pin, a setting) re-checks it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor.cache import ResultCache
from peftdoctor.cli import cli
from peftdoctor.config import Config
from peftdoctor.engine import check_paths
from pinned_projects import pin_trl, sft_project

PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"


def shown(result) -> list[tuple]:
    return [(Path(f.path).name, f.line, f.code, f.message) for f in result.findings]


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    shutil.copytree(PROJECTS / "frozen_helper", folder)
    return folder


def test_a_warm_run_reads_nothing_and_finds_the_same(project, tmp_path):
    cache = ResultCache(tmp_path / "cache")
    cold = check_paths([project], Config(), cache=cache)
    assert cache.hits == 0 and cold.findings
    warm_cache = ResultCache(tmp_path / "cache")
    warm = check_paths([project], Config(), cache=warm_cache)
    assert warm_cache.hits == cold.files_checked == warm.files_checked
    assert shown(warm) == shown(cold) == shown(check_paths([project], Config()))
    assert warm.lines_checked == cold.lines_checked
    assert [f.extra for f in warm.findings] == [f.extra for f in cold.findings]  # the fixes survive


def test_editing_a_helper_rechecks_its_importers(project, tmp_path):
    cache_folder = tmp_path / "cache"
    before = check_paths([project], Config(), cache=ResultCache(cache_folder))
    assert ("train.py", 9, "PD103") in [f[:3] for f in shown(before)]
    utils = project / "utils.py"
    utils.write_text(utils.read_text().replace("is_trainable=False", "is_trainable=True"))
    cache = ResultCache(cache_folder)
    after = check_paths([project], Config(), cache=cache)
    assert shown(after) == shown(check_paths([project], Config()))
    assert ("train.py", 9, "PD103") not in [f[:3] for f in shown(after)]


def test_a_file_no_import_reaches_keeps_its_entry(project, tmp_path):
    (project / "alone.py").write_text("from peft import PeftModel\n\nmodel = PeftModel.from_pretrained(m, 'a')\n")
    cache_folder = tmp_path / "cache"
    check_paths([project], Config(), cache=ResultCache(cache_folder))
    (project / "alone.py").write_text("from peft import PeftModel\n\nmodel = PeftModel.from_pretrained(m, 'b')\n")
    cache = ResultCache(cache_folder)
    result = check_paths([project], Config(), cache=cache)
    assert cache.hits == result.files_checked - 1  # only alone.py was read again


def test_a_new_pin_changes_a_version_dependent_finding(tmp_path):
    folder = sft_project(tmp_path, "0.8.6")
    cache_folder = tmp_path / "cache"
    old = check_paths([folder], Config(), cache=ResultCache(cache_folder))
    pin_trl(folder, "0.24.0")
    from peftdoctor.versions import clear_caches

    clear_caches()
    new = check_paths([folder], Config(), cache=ResultCache(cache_folder))
    assert shown(new) == shown(check_paths([folder], Config()))
    assert shown(new) != shown(old)


def test_other_settings_do_not_reuse_an_entry(project, tmp_path):
    cache_folder = tmp_path / "cache"
    check_paths([project], Config(), cache=ResultCache(cache_folder))
    cache = ResultCache(cache_folder)
    quiet = check_paths([project], Config(ignore=["PD103"]), cache=cache)
    assert cache.hits == 0 and not [f for f in quiet.findings if f.code == "PD103"]


def test_a_broken_entry_is_a_miss(project, tmp_path):
    cache_folder = tmp_path / "cache"
    cold = check_paths([project], Config(), cache=ResultCache(cache_folder))
    for entry in cache_folder.glob("??/*.json"):
        entry.write_text("{not json")
    cache = ResultCache(cache_folder)
    assert shown(check_paths([project], Config(), cache=cache)) == shown(cold) and cache.hits == 0


def test_an_unwritable_cache_folder_only_turns_the_cache_off(project, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = check_paths([project], Config(), cache=ResultCache(blocker / "cache"))
    assert shown(result) == shown(check_paths([project], Config()))


def test_the_folder_is_trimmed_to_its_bound(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    for number in range(30):
        cache.put(f"{number:064x}", [], [], 1)
    cache.trim(limit=10)
    assert len(list((tmp_path / "cache").glob("??/*.json"))) == 8


def test_the_cli_keeps_its_cache_at_the_project_root_out_of_git(project, monkeypatch):
    monkeypatch.delenv("PEFTDOCTOR_CACHE_DIR", raising=False)
    runner = CliRunner()
    first = runner.invoke(cli, ["check", str(project)])
    folder = project / ".peftdoctor_cache"
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (folder / "CACHEDIR.TAG").is_file()
    second = runner.invoke(cli, ["check", str(project)])
    assert first.exit_code == second.exit_code == 1 and first.output == second.output


def test_no_cache_writes_nothing(project, monkeypatch):
    monkeypatch.delenv("PEFTDOCTOR_CACHE_DIR", raising=False)
    result = CliRunner().invoke(cli, ["check", "--no-cache", str(project)])
    assert result.exit_code == 1 and not (project / ".peftdoctor_cache").exists()


def test_an_entry_is_never_half_written(tmp_path):
    """Entries are renamed into place: the folder never holds a partial entry or a leftover temporary."""
    cache = ResultCache(tmp_path / "cache")
    cache.put("ab" + "0" * 62, [], [], 3)
    names = [p.name for p in (tmp_path / "cache" / "ab").iterdir()]
    assert names == ["ab" + "0" * 62 + ".json"]
    assert json.loads((tmp_path / "cache" / "ab" / names[0]).read_text())["lines"] == 3
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]
    assert os.access(tmp_path / "cache" / ".gitignore", os.R_OK)


def test_workers_find_what_one_process_finds():
    """Parts of a tree that imports do not join go to separate processes; the report is the same, in order."""
    folders = [PROJECTS, PROJECTS.parent / "scripts"]
    alone = check_paths(folders, Config())
    spread = check_paths(folders, Config(), jobs=2)
    assert shown(spread) == shown(alone) and spread.files_checked == alone.files_checked
    assert spread.lines_checked == alone.lines_checked


def test_parts_are_the_files_imports_join(tmp_path):
    from peftdoctor.facts.components import import_components
    from peftdoctor.facts.project import Project

    (tmp_path / "pkg").mkdir()
    files = {
        "train.py": "from pkg.helpers import load\nimport peft\n",
        "pkg/__init__.py": "",
        "pkg/helpers.py": "from transformers import AutoModel\n\ndef load(): ...\n",
        "run.py": "import train\nfrom transformers import Trainer\n",
        "other.py": "import peft\n",
        "plain.py": "import train\n",  # never read by the facts: it mentions no library they model
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    texts = {(tmp_path / name).resolve(): text for name, text in files.items()}
    parts = import_components(texts, Project(tmp_path, reader=None).resolve, lambda p: p.read_text())
    names = {path.relative_to(tmp_path.resolve()).as_posix(): {p.name for p in part} for path, part in parts.items()}
    assert names["train.py"] == {"train.py", "__init__.py", "helpers.py", "run.py"}
    assert names["run.py"] == names["train.py"]
    assert names["other.py"] == {"other.py"} and names["plain.py"] == {"plain.py"}
