"""The one registry of rules: static rules, inspect checks and runtime checks.

Every rule has a code, a short name, a one-line summary, a default severity and
a doc `rules/<CODE>.md`. Static rules also carry a `check(facts, ctx)` callable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from peftdoctor.finding import Severity

DOCS_URL = "https://github.com/peftdoctor/peftdoctor/blob/main/rules/{code}.md"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    summary: str
    severity: Severity = Severity.ERROR
    kind: str = "static"  # "static" | "inspect" | "deep"
    check: Callable | None = None
    # Strings of which at least one must occur in a file's text for the rule to
    # be able to fire; lets the engine skip parsing files no rule cares about.
    needs_any: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return DOCS_URL.format(code=self.code)


_RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    existing = _RULES.get(rule.code)
    # A module imported again (pytester restores sys.modules between runs) re-registers
    # the same rule; a different rule claiming a taken code is a bug.
    if existing is not None and existing.name != rule.name:
        raise ValueError(f"rule {rule.code} registered twice ({existing.name}, {rule.name})")
    _RULES[rule.code] = rule
    return rule


# Which package registers which code family. Importing one registers its
# rules; none imports torch, transformers or peft. The static rules import
# libcst, so inspect's reporters load only the family they need.
_FAMILIES = {"PD6": "peftdoctor.inspect.codes", "PD7": "peftdoctor.runtime.codes"}
_STATIC_PACKAGE = "peftdoctor.rules"


def _load(package: str) -> None:
    importlib.import_module(package)


def _load_all() -> None:
    for package in (_STATIC_PACKAGE, *_FAMILIES.values()):
        _load(package)


def all_rules() -> list[Rule]:
    _load_all()
    return sorted(_RULES.values(), key=lambda r: r.code)


def get_rule(code: str) -> Rule | None:
    code = code.upper()
    if code not in _RULES:
        _load(_FAMILIES.get(code[:3], _STATIC_PACKAGE))
    return _RULES.get(code)


def rules_of_kind(kind: str) -> list[Rule]:
    return [r for r in all_rules() if r.kind == kind]


def doc_path(code: str) -> Path | None:
    """The markdown doc of a rule: bundled in the wheel, or the repo's rules/."""
    here = Path(__file__).resolve().parent
    for folder in (here / "rule_docs", here.parent / "rules"):
        candidate = folder / f"{code.upper()}.md"
        if candidate.is_file():
            return candidate
    return None


def matches(code: str, patterns: Iterable[str]) -> bool:
    """True when `code` equals or starts with one of `patterns` ("ALL" matches all)."""
    code = code.upper()
    for pattern in patterns:
        pattern = pattern.strip().upper()
        if pattern == "ALL" or (pattern and code.startswith(pattern)):
            return True
    return False
