"""How a module of the project is read for the facts: once, and no more of it than the facts can use.

A file being checked is parsed whole. A module read only for the names it exports (a helper
module a checked file imports) keeps its top-level statements and the definitions that
mention something the facts model (RELEVANT_WORDS), plus the definitions those call;
every other definition becomes blank lines, so line numbers stay true and libcst, the slow
part, parses a fraction of the file. Python's own parser (fast) decides what to keep.
"""

from __future__ import annotations

import ast
from pathlib import Path

import libcst as cst

from peftdoctor.facts.library import RELEVANT_WORDS
from peftdoctor.facts.project import ParsedModule

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def read_module(path: Path, source: str, whole: bool) -> ParsedModule | None:
    """The parsed module, or None when it cannot be parsed or (read for its names) has nothing to offer."""
    if not whole and path.name != "__init__.py" and not any(word in source for word in RELEVANT_WORDS):
        return None
    try:
        tree = ast.parse(source)
        text = source if whole else _relevant_part(source, tree)
        return ParsedModule(path, source, cst.parse_module(text), tree if whole else None)
    except (SyntaxError, ValueError, RecursionError, MemoryError, cst.ParserSyntaxError):
        return None


def _relevant_part(source: str, tree: ast.Module) -> str:
    lines = source.splitlines(keepends=True)
    definitions = {}
    for node in tree.body:
        if isinstance(node, DEFINITIONS):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            definitions[node.name] = (node, start, node.end_lineno)
    library_names = _names_from_libraries(tree)
    kept = {name for name, (node, start, end) in definitions.items()
            if any(word in "".join(lines[start - 1:end]) for word in RELEVANT_WORDS)
            or (isinstance(node, ast.ClassDef) and _derives_from(node, library_names))}
    pending = list(kept)
    while pending:  # the module's own helpers that a kept definition uses
        node = definitions[pending.pop()][0]
        for used in ast.walk(node):
            if isinstance(used, ast.Name) and used.id in definitions and used.id not in kept:
                kept.add(used.id)
                pending.append(used.id)
    out = list(lines)
    for name, (_, start, end) in definitions.items():
        if name not in kept:
            for index in range(start - 1, end):
                out[index] = "\n"
    return "".join(out)


MODELLED_TOPS = ("transformers", "peft", "trl")


def _names_from_libraries(tree: ast.Module) -> set[str]:
    """Names a module binds from the libraries whose classes the facts model (a subclass acts as one)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in MODELLED_TOPS:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] in MODELLED_TOPS)
    return names


def _derives_from(node: ast.ClassDef, names: set[str]) -> bool:
    for base in node.bases:
        while isinstance(base, ast.Attribute):
            base = base.value
        if isinstance(base, ast.Name) and base.id in names:
            return True
    return False
