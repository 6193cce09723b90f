"""The wheel as the package index would serve it: built from this checkout, its contents read, installed alone and run.

Someone who ran `pip install peftdoctor` has no clone: the README they read on the index, the rule docs,
the license and the demo must all come with the wheel.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "fixtures" / "demo" / "train_lora.py"


def _run(args, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")  # the dev extra has it: built without isolation, so offline and quick
    out = tmp_path_factory.mktemp("wheel")
    done = _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(out)], cwd=out)
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("peftdoctor-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> dict:
    """The wheel installed into a folder of its own; the environment that imports peftdoctor from there only."""
    target = tmp_path_factory.mktemp("site")
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                cwd=target)
    assert done.returncode == 0, done.stderr
    return {**os.environ, "PYTHONPATH": str(target)}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def test_metadata_has_classifiers_urls_license_and_extras(wheel: Path):
    metadata = _metadata(wheel)
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: Pytest" in classifiers and "License :: OSI Approved" not in " ".join(classifiers)
    assert metadata["License-Expression"] == "Apache-2.0" and metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert urls["Source"] == "https://github.com/peftdoctor/peftdoctor" and urls["Rules"].endswith("/tree/main/rules")
    assert "lsp" in metadata.get_all("Provides-Extra")
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("pygls") and "extra == 'lsp'" in r for r in requires)
    assert not [r for r in requires if "extra" not in r and r.split(">")[0].split("<")[0] in ("pygls", "torch")]


def test_long_description_works_without_a_clone(wheel: Path):
    description = _metadata(wheel).get_payload()
    assert description.startswith("# peftdoctor") and "pip install peftdoctor && peftdoctor demo" in description
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets and all(t.startswith("https://") for t in targets), [t for t in targets if "://" not in t]
    assert "https://github.com/peftdoctor/peftdoctor/tree/main/rules" in targets


def test_wheel_ships_license_rule_docs_and_demo(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert archive.read(license_name) == (REPO / "LICENSE").read_bytes()
        assert archive.read("peftdoctor/demo_project/train_lora.py") == DEMO.read_bytes()
        for doc in (REPO / "rules").glob("PD*.md"):
            assert archive.read(f"peftdoctor/rule_docs/{doc.name}") == doc.read_bytes()
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")[:200]
    assert not [n for n in names if n.startswith(("tests/", "fixtures/", "peftdoctor/__pycache__"))]


def _readme_demo_output() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```console\n\$ peftdoctor demo\n(.*?)```", readme, re.DOTALL)
    return block.group(1)


def test_installed_demo_prints_what_the_readme_shows(installed: dict, tmp_path: Path):
    where = _run([sys.executable, "-c", "import peftdoctor; print(peftdoctor.__file__)"], tmp_path, installed)
    assert where.stdout.startswith(installed["PYTHONPATH"])  # the installed copy, not this checkout
    done = _run([sys.executable, "-m", "peftdoctor.demo"], tmp_path, installed)
    assert done.returncode == 0, done.stderr
    assert done.stdout == _readme_demo_output()
    assert (tmp_path / "peftdoctor-demo" / "train_lora.py").read_bytes() == DEMO.read_bytes()
    explain = _run([sys.executable, "-m", "peftdoctor", "explain", "PD101"], tmp_path, installed)
    assert explain.stdout.rstrip("\n") == (REPO / "rules" / "PD101.md").read_text(encoding="utf-8").rstrip("\n")


def test_demo_never_overwrites(tmp_path: Path):
    first = _run([sys.executable, "-m", "peftdoctor", "demo", "here"], tmp_path)
    assert first.returncode == 0 and "PD101" in first.stdout
    (tmp_path / "here" / "train_lora.py").write_text("# mine\n", encoding="utf-8")
    again = _run([sys.executable, "-m", "peftdoctor", "demo", "here"], tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == "peftdoctor: error: here/train_lora.py: already exists; pass another folder " \
                           "(peftdoctor demo FOLDER)\n"
    assert (tmp_path / "here" / "train_lora.py").read_text(encoding="utf-8") == "# mine\n"
    (tmp_path / "plain").write_text("", encoding="utf-8")
    blocked = _run([sys.executable, "-m", "peftdoctor", "demo", "plain/inside"], tmp_path)
    assert blocked.returncode == 2 and blocked.stderr.startswith("peftdoctor: error: plain/inside")
    assert blocked.stderr.count("\n") == 1 and "Traceback" not in blocked.stderr


def test_a_wheel_built_from_the_sdist_ships_the_same_files(wheel: Path, tmp_path: Path):
    """pip builds from the sdist when no wheel fits: the license, docs and demo must be in the sdist too."""
    done = _run([sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)], cwd=REPO)
    assert done.returncode == 0, done.stderr
    (sdist,) = tmp_path.glob("peftdoctor-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # 3.10.12+
    (unpacked,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    done = _run([sys.executable, "-m", "pip", "wheel", str(unpacked), "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(tmp_path / "out")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (rebuilt,) = (tmp_path / "out").glob("peftdoctor-*.whl")
    with zipfile.ZipFile(wheel) as direct, zipfile.ZipFile(rebuilt) as from_sdist:
        assert sorted(from_sdist.namelist()) == sorted(direct.namelist())
