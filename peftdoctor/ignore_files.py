"""What `.gitignore`, `.ignore` and `.git/info/exclude` files leave out of a folder walk (git's pattern rules,
as ruff applies them).

A copy of a script under `outputs/`, `wandb/` or a checkpoint folder would otherwise be reported once per
copy. Each folder's ignore files are read when the walk enters it; the files of the folders above the walked
one (up to the repository root) count too. A later pattern overrides an earlier one, a deeper file a
shallower one, `.ignore` a `.gitignore` beside it; `!pattern` takes a path back in. A file named on the
command line is checked whatever these files say.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.run_record import note

# Read in this order in each folder, so a later one overrides: a repository's own exclude list (in its root
# only), then `.gitignore`, then `.ignore`.
IGNORE_FILES = (".git/info/exclude", ".gitignore", ".ignore")


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern
    negated: bool
    dir_only: bool


def _translate(glob: str) -> str:
    """A gitignore glob (no leading or trailing slash) as a regex over a POSIX relative path."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and "]" in glob[i + 2:]:
            end = glob.index("]", i + 2)
            body = glob[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        elif glob[i] == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def parse_line(line: str) -> _Pattern | None:
    """One line of an ignore file; None for blanks and comments."""
    line = line.rstrip("\r\n")
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    elif line.startswith("\\"):  # `\#name`, `\!name`
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line  # a slash at the start or in the middle ties the pattern to the file's folder
    body = _translate(line.lstrip("/"))
    return _Pattern(re.compile(("" if anchored else "(?:.*/)?") + body + r"\Z", re.S), negated, dir_only)


def _read_patterns(folder: Path) -> list[_Pattern]:
    patterns: list[_Pattern] = []
    for name in IGNORE_FILES:
        try:
            text = regular_file.read_bytes(folder / name).decode("utf-8", "replace")
        except OSError:  # absent or unreadable: nothing to ignore
            continue
        patterns.extend(p for p in map(parse_line, text.splitlines()) if p is not None)
    return patterns


def _absolute(path: Path) -> Path:
    """`path` made absolute without following links (patterns match the path as walked)."""
    return Path(os.path.abspath(path))


@dataclass(frozen=True)
class IgnoreRules:
    """The ignore files that apply inside one folder: (folder, its patterns), outermost first."""

    layers: tuple[tuple[Path, tuple[_Pattern, ...]], ...] = ()

    @classmethod
    def above(cls, folder: Path) -> "IgnoreRules":
        """The rules in force at `folder` from the folders above it, up to its repository root."""
        folder = _absolute(folder)
        above = []  # the folders above `folder`, innermost first, up to its repository's root
        for candidate in (folder, *folder.parents):
            note(candidate / ".git")
            if (candidate / ".git").exists():  # a nested repository owes nothing to the one around it
                break
            above.append(candidate.parent)
        else:
            above = []  # not in a repository: only the walked folders' own files count
        rules = cls()
        for parent in reversed(above):
            rules = rules.enter(parent)
        return rules

    def enter(self, folder: Path) -> "IgnoreRules":
        """These rules plus the ignore files of `folder` (a folder the walk enters)."""
        patterns = _read_patterns(folder)
        return IgnoreRules((*self.layers, (_absolute(folder), tuple(patterns)))) if patterns else self

    def ignores(self, path: Path, is_dir: bool) -> bool:
        """Whether the last pattern matching `path` (deepest file last) leaves it out."""
        ignored = False
        absolute = _absolute(path)
        for folder, patterns in self.layers:
            try:
                relative = absolute.relative_to(folder).as_posix()
            except ValueError:
                continue
            for pattern in patterns:
                if (is_dir or not pattern.dir_only) and pattern.regex.match(relative):
                    ignored = not pattern.negated
        return ignored
