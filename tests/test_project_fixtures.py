"""Whole-project fixtures: each folder under fixtures/projects is checked as one project, and every
`# expect: PDxxx` comment in any of its files must be found there, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_paths
from test_fixtures import expected_findings

PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"
FOLDERS = sorted(p for p in PROJECTS.iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_project(folder: Path):
    result = check_paths([folder], Config())
    actual = {(Path(f.path).resolve(), f.line, f.code) for f in result.findings}
    expected = {(path.resolve(), line, code) for path in folder.rglob("*.py")
                for line, code in expected_findings(path)}
    shown = "\n".join(f"{f.location()}: {f.code} {f.message}" for f in result.findings)
    assert actual == expected, f"expected {sorted(expected)}, got:\n{shown}"


def test_a_file_of_a_project_checked_alone_still_reads_its_imports():
    """Checking one file: its project root (here the folder, found by no marker above: the file's
    folder) is read for the helpers it imports."""
    result = check_paths([PROJECTS / "frozen_helper" / "train.py"], Config())
    assert [(f.code, f.line) for f in result.findings] == [("PD103", 9)]


def test_every_mechanism_has_a_project():
    assert {p.name for p in FOLDERS} >= {"frozen_helper", "trainer_subclass", "tokens_in_helper",
                                         "attributes", "resume_paths", "dispatch_table", "module_wrapper_cast"}


def testimport_statements_are_read_from_the_text():
    from peftdoctor.facts.reading import import_statements

    source = ("import os, sys as system\nfrom . import load_model\nfrom .load_model import (get_model,\n"
              "    save_merged_model as smm)\nfrom src.x import y, \\\n    z\n    from ..a.b import c  # note\n"
              "import a.b.c as d\n")
    assert list(import_statements(source)) == [
        (1, None, [("load_model", "load_model")]),
        (1, "load_model", [("get_model", "get_model"), ("save_merged_model", "smm")]),
        (0, "src.x", [("y", "y"), ("z", "z")]),
        (2, "a.b", [("c", "c")]),
        (0, None, [("os", "os"), ("sys", "system")]),
        (0, None, [("a.b.c", "d")]),
    ]


def test_a_helper_that_cannot_matter_is_told_from_the_text():
    from peftdoctor.facts.reading import _plainly_irrelevant

    source = ("import logging\nfrom transformers import AutoModel, PreTrainedModel\n\n"
              "def get_logger(name):\n    return logging.getLogger(name)\n\n"
              "def load(name):\n    return AutoModel.from_pretrained(name)\n\n"
              "def build(name):\n    return load(name)\n\n"
              "class Head(PreTrainedModel):\n    pass\n")
    assert _plainly_irrelevant(source, "get_logger")
    assert not _plainly_irrelevant(source, "load")  # it builds a model
    assert not _plainly_irrelevant(source, "build")  # it calls one that does
    assert not _plainly_irrelevant(source, "Head")  # a class that may derive from a library class
    assert not _plainly_irrelevant(source, "AutoModel")  # not defined here: the parser decides
