"""Helpers the machine-readable reporters share: repo-relative paths, rule docs."""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from peftdoctor.finding import Finding


def repo_root(start: Path | None = None) -> Path:
    """The git work tree holding `start` (default: cwd), else `start` itself."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def relative_path(path: str, root: Path) -> str | None:
    """`path` relative to `root` in POSIX form, or None when it lies outside."""
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return None


def statistics(findings: list[Finding]) -> dict[str, int]:
    counts = Counter(f.code for f in findings)
    return dict(sorted(counts.items()))


@lru_cache(maxsize=None)
def rule_doc(code: str) -> str | None:
    """The markdown doc of a rule (rules/<CODE>.md), or None."""
    from peftdoctor.registry import doc_path

    path = doc_path(code)
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def doc_section(markdown: str, title: str) -> str | None:
    """The text under `## title` up to the next `##` heading, stripped."""
    match = re.search(rf"^##\s+{re.escape(title)}\s*$(.*?)(?=^##\s|\Z)", markdown, re.M | re.S)
    if not match:
        return None
    text = match.group(1).strip()
    return text or None
