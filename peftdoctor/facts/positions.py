"""Where calls are in the source, without libcst's PositionProvider.

PositionProvider regenerates the whole file to count characters (about 14 ms
for a 300-line script). Findings point at calls, and Python's own parser knows
where every call is: the n-th call of libcst's document order is the n-th call
of `ast` sorted by start, outer before inner. A parenthesised call, or any
disagreement in the number of calls, falls back to PositionProvider.
"""

from __future__ import annotations

import ast

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

Position = tuple[int, int, int, int]  # line, column, end line, end column; 1-based columns


def _libcst_calls(module: cst.Module) -> list[cst.Call]:
    calls = []
    stack = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Call):
            calls.append(node)
        stack.extend(reversed(node.children))
    return calls


def _char_column(lines: list[str], line: int, byte_offset: int) -> int:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if text.isascii():
        return byte_offset
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def call_positions(module: cst.Module, source: str, tree: ast.Module | None = None) -> dict[int, Position] | None:
    """id(libcst Call) -> position, or None when the two parsers do not line up."""
    if tree is None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    found.sort(key=lambda n: (n.lineno, n.col_offset, -n.end_lineno, -n.end_col_offset))
    calls = _libcst_calls(module)
    if len(found) != len(calls):
        return None
    lines = source.splitlines()
    positions = {}
    for cst_call, ast_call in zip(calls, found):
        if cst_call.lpar:
            continue  # ast leaves parentheses out; PositionProvider answers for these
        positions[id(cst_call)] = (
            ast_call.lineno,
            _char_column(lines, ast_call.lineno, ast_call.col_offset) + 1,
            ast_call.end_lineno,
            _char_column(lines, ast_call.end_lineno, ast_call.end_col_offset) + 1,
        )
    return positions


def provider_positions(module: cst.Module) -> dict[int, Position]:
    """Every node's position from libcst itself (slow, exact)."""
    resolved = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    return {
        id(node): (r.start.line, r.start.column + 1, r.end.line, r.end.column + 1) for node, r in resolved.items()
    }
