"""Which files of a project can change each other's findings: the parts the import graph joins.

The facts cross a module boundary only through an import (a helper inlined into its caller, a
caller's values flowing into a checked helper), in either direction. Two files no chain of imports
joins never see each other, so a cached result of one stays true whatever happens to the other.
Imports are read from the text, as when finding callers (see reading.py), without a parse.
"""

from __future__ import annotations

from pathlib import Path

from peftdoctor.facts.library import RELEVANT_WORDS
from peftdoctor.facts.reading import import_statements


def import_components(texts: dict[Path, str], resolve, read_text) -> dict[Path, frozenset[Path]]:
    """Each file of `texts` (resolved path -> text) -> the files joined to it by imports, itself included.

    `resolve(importer, module, level)` is the project's import resolution; a module it finds outside
    `texts` (the project's code beyond the checked paths) joins too, read with `read_text(path)`.
    """
    parent: dict[Path, Path] = {}

    def root(path: Path) -> Path:
        while parent.setdefault(path, path) != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    pending = list(texts)
    read: dict[Path, str | None] = dict(texts)
    while pending:
        path = pending.pop()
        root(path)
        text = read[path]
        if text is None or not (path.name == "__init__.py" or any(word in text for word in RELEVANT_WORDS)):
            continue  # never read by the facts: its imports lead nowhere
        for target in _imported_files(path, text, resolve):
            if target not in read:
                read[target] = read_text(target)
                pending.append(target)
            parent[root(target)] = root(path)
    members: dict[Path, set[Path]] = {}
    for path in read:
        members.setdefault(root(path), set()).add(path)
    joined = {top: frozenset(paths) for top, paths in members.items()}  # one object per part
    return {path: joined[root(path)] for path in texts}


def _imported_files(importer: Path, text: str, resolve):
    for level, module, names in import_statements(text):
        if module is None and level == 0:  # `import a.b.c`
            for name, _ in names:
                yield from _packages_on_the_way(importer, name, resolve)
            continue
        if level == 0:
            yield from _packages_on_the_way(importer, module, resolve)
        else:
            target = resolve(importer, module, level)
            if target is not None:
                yield target
        for name, _ in names:  # `from pkg import module`
            found = resolve(importer, f"{module}.{name}" if module else name, level)
            if found is not None:
                yield found


def _packages_on_the_way(importer: Path, dotted_name: str, resolve):
    """`a.b.c` runs a, a.b and a.b.c: the files of those that are the project's."""
    parts = dotted_name.split(".")
    for end in range(1, len(parts) + 1):
        found = resolve(importer, ".".join(parts[:end]), 0)
        if found is not None:
            yield found
