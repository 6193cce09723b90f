"""`# noqa` style suppression comments, read once per file.

Forms: `# noqa` (everything on the line), `# noqa: PD101,PD201`,
`# peftdoctor: ignore[PD101]` (same line), and
`# peftdoctor: ignore-file[PD201]` / `# peftdoctor: ignore-file` anywhere.

A code suppresses itself and every code it is a prefix of (`PD1` covers
PD101..PD199). Unused suppressions are only reported for what is ours: codes
starting with PD and `peftdoctor:` comments; a bare `# noqa` or `# noqa: E501`
may belong to another linter and is never reported.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Callable

from peftdoctor.registry import matches

_NOQA = re.compile(r"#\s*noqa\b(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.I)
_IGNORE = re.compile(r"#\s*peftdoctor:\s*ignore(?P<file>-file)?(?:\[(?P<codes>[^\]]*)\])?", re.I)

ALL = ("ALL",)


@dataclass
class Suppression:
    line: int
    codes: tuple[str, ...]  # ("ALL",) for a bare noqa
    text: str
    used: bool = False
    ours: bool = False  # a `peftdoctor:` comment (not a generic noqa)
    used_codes: set = field(default_factory=set)

    def unused_codes(self, enabled: Callable[[str], bool] | None = None) -> list[str]:
        """The PD codes of this comment that suppressed nothing (and could have fired)."""
        if self.codes == ALL:
            return [] if (self.used or not self.ours) else ["ALL"]
        return [
            code
            for code in self.codes
            if code.startswith("PD") and code not in self.used_codes and (enabled is None or enabled(code))
        ]


@dataclass
class Suppressions:
    by_line: dict[int, list[Suppression]] = field(default_factory=dict)
    file_level: list[Suppression] = field(default_factory=list)

    def suppresses(self, code: str, line: int) -> bool:
        hit = False
        for item in (*self.file_level, *self.by_line.get(line, ())):
            for pattern in item.codes:
                if matches(code, [pattern]):
                    item.used = True
                    item.used_codes.add(pattern)
                    hit = True
        return hit

    def unused(self, enabled: Callable[[str], bool] | None = None) -> list[Suppression]:
        """Comments with a PD code (or a bare `peftdoctor: ignore`) that suppressed nothing.

        `enabled(code)` lets the caller leave out codes that were not run at all.
        """
        items = [*self.file_level]
        for line in sorted(self.by_line):
            items.extend(self.by_line[line])
        return [item for item in items if item.unused_codes(enabled)]


def _codes(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ALL
    parts = [p.strip().upper() for p in re.split(r"[\s,]+", raw) if p.strip()]
    return tuple(parts) or ALL


def _comments(source: str):
    """(line, text) of each comment; falls back to a line scan if tokenizing fails."""
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                found.append((tok.start[0], tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # A file that does not tokenize: a plain scan still honours its comments.
        found = [(number, line[line.index("#"):]) for number, line in enumerate(source.splitlines(), 1)
                 if "#" in line]
    return found


def parse_suppressions(source: str) -> Suppressions:
    result = Suppressions()
    lowered = source.lower()
    if "noqa" not in lowered and "peftdoctor:" not in lowered:
        return result
    for line, comment in _comments(source):
        ignore = _IGNORE.search(comment)
        if ignore:
            item = Suppression(line, _codes(ignore.group("codes")), comment.strip(), ours=True)
            if ignore.group("file"):
                result.file_level.append(item)
            else:
                result.by_line.setdefault(line, []).append(item)
        noqa = _NOQA.search(comment)
        if noqa:
            item = Suppression(line, _codes(noqa.group("codes")), comment.strip())
            result.by_line.setdefault(line, []).append(item)
    return result
