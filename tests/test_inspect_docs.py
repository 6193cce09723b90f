"""The Example / Use instead blocks of rules/PD6xx.md, executed: they build real adapters with peft.

Each Example must give exactly its own code from `inspect`, each Use instead nothing.
PD612 (base not local, info) is ignored except for its own doc: the examples build bases in memory.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.inspect.run import inspect_paths

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "rules").glob("PD6*.md"))


def block(text: str, section: str) -> str:
    match = re.search(rf"^## {section}\n```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


def run_block(source: str, adapter_dir: Path, code: str) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(source, f"{code}.md", "exec"), {"adapter_dir": str(adapter_dir), "__name__": "doc"})
    config = Config(ignore=[] if code == "PD612" else ["PD612"])
    result = inspect_paths([str(adapter_dir)], config=config, show_summary=False)
    return {f.code for f in result.findings}


def test_every_inspect_code_has_a_doc():
    from peftdoctor.registry import rules_of_kind

    assert [d.stem for d in DOCS] == [r.code for r in rules_of_kind("inspect")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.stem)
def test_doc_examples(doc, tmp_path, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    text = doc.read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert sections == ["What it does", "Why is this bad?", "Example", "Use instead", "Versions", "References"]
    assert run_block(block(text, "Example"), tmp_path / "bad", doc.stem) == {doc.stem}
    assert run_block(block(text, "Use instead"), tmp_path / "good", doc.stem) == set()
