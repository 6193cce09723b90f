"""`# noqa` style suppression comments, read once per file.

Forms: `# noqa` (everything on the line), `# noqa: PD101,PD201`,
`# peftdoctor: ignore[PD101]` (same line), and
`# peftdoctor: ignore-file[PD201]` / `# peftdoctor: ignore-file` anywhere.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

from peftdoctor.registry import matches

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]*(?:[\s,]+[A-Z]+[0-9]*)*))?", re.I)
_IGNORE = re.compile(r"#\s*peftdoctor:\s*ignore(?P<file>-file)?(?:\[(?P<codes>[^\]]*)\])?", re.I)

ALL = ("ALL",)


@dataclass
class Suppression:
    line: int
    codes: tuple[str, ...]  # ("ALL",) for a bare noqa
    text: str
    used: bool = False


@dataclass
class Suppressions:
    by_line: dict[int, list[Suppression]] = field(default_factory=dict)
    file_level: list[Suppression] = field(default_factory=list)

    def suppresses(self, code: str, line: int) -> bool:
        hit = False
        for item in (*self.file_level, *self.by_line.get(line, ())):
            if matches(code, item.codes):
                item.used = True
                hit = True
        return hit

    def unused(self) -> list[Suppression]:
        items = [*self.file_level]
        for line_items in self.by_line.values():
            items.extend(line_items)
        return [item for item in items if not item.used]


def _codes(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ALL
    parts = [p.strip().upper() for p in re.split(r"[\s,]+", raw) if p.strip()]
    return tuple(parts) or ALL


def _comments(source: str):
    """(line, text) of each comment; falls back to a line scan if tokenizing fails."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.start[0], tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        for number, line in enumerate(source.splitlines(), 1):
            if "#" in line:
                yield number, line[line.index("#"):]


def parse_suppressions(source: str) -> Suppressions:
    result = Suppressions()
    lowered = source.lower()
    if "noqa" not in lowered and "peftdoctor:" not in lowered:
        return result
    for line, comment in _comments(source):
        ignore = _IGNORE.search(comment)
        if ignore:
            item = Suppression(line, _codes(ignore.group("codes")), comment.strip())
            if ignore.group("file"):
                result.file_level.append(item)
            else:
                result.by_line.setdefault(line, []).append(item)
            continue
        noqa = _NOQA.search(comment)
        if noqa:
            item = Suppression(line, _codes(noqa.group("codes")), comment.strip())
            result.by_line.setdefault(line, []).append(item)
    return result
