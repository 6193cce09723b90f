"""`check --fix` / `--diff`: apply the edits that rules mark as certainly safe.

A fixable finding carries `extra["fix"]`, a dict naming one edit on one call:

    {"kind": "add_keyword", "line": L, "column": C, "keyword": "is_trainable", "value": "True"}
    {"kind": "replace_keyword", "line": L, "column": C, "keyword": "task_type", "value": '"CAUSAL_LM"'}

(L, C) is where the Call starts: 1-based line, 1-based column of its first
character. When calls nest with the same start (`f(x).g()`), the innermost one
is meant unless the edit names `"callee"` (the last part of the called name,
e.g. "from_pretrained"). `add_keyword` does nothing when the keyword is already
there, or when the call has `**kwargs` (which might carry it); `replace_keyword`
does nothing when it is absent. Edits are libcst node rewrites, so comments and
layout survive; files are written atomically and only when they changed.

Writing goes through `peftdoctor.safe_write`: a symlink's target is fixed (the link
stays), a read-only file, another user's file or one that is not a regular file is
refused, and so is a file that changed between reading it and writing the fix. Every
file to write is checked before any is written, so a refusal leaves all files as they were
(bar a concurrent change, which is only seen at its own write).
"""

from __future__ import annotations

import ast
import difflib
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from peftdoctor.notebook import NotebookError, fixed_cell_source, is_notebook, read_notebook
from peftdoctor.safe_write import Refused, Snapshot, check_target, read_snapshot, real_path, reason, replace_file
from peftdoctor.source import parse_module_guarded

KINDS = ("add_keyword", "replace_keyword")


class FixError(Exception):
    """An edit that is malformed; the rule that made it has a bug."""


def _callee_name(call: cst.Call) -> str | None:
    func = call.func
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


class _CallFinder(cst.CSTVisitor):
    """Find, for each edit position, the Call node it means."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, edits: list[dict]):
        self.wanted = {(e["line"], e["column"]): e.get("callee") for e in edits}
        self.found: dict[tuple[int, int], cst.Call] = {}

    def visit_Call(self, node: cst.Call) -> None:
        start = self.get_metadata(PositionProvider, node).start
        key = (start.line, start.column + 1)
        if key not in self.wanted:
            return
        callee = self.wanted[key]
        if callee is not None and _callee_name(node) != callee:
            return
        # Visiting goes outside-in, so a later hit at the same start is the inner call.
        self.found[key] = node


def _has_keyword(call: cst.Call, keyword: str) -> bool:
    return any(arg.keyword is not None and arg.keyword.value == keyword for arg in call.args)


def _has_double_star(call: cst.Call) -> bool:
    return any(arg.star == "**" for arg in call.args)


def _separator(call: cst.Call) -> cst.BaseParenthesizableWhitespace:
    """The whitespace between arguments in this call's own style, without any comment."""
    if len(call.args) >= 2 and isinstance(call.args[-2].comma, cst.Comma):
        found = call.args[-2].comma.whitespace_after
    elif isinstance(call.whitespace_before_args, cst.ParenthesizedWhitespace):
        found = call.whitespace_before_args
    else:
        return cst.SimpleWhitespace(" ")
    if isinstance(found, cst.ParenthesizedWhitespace):
        return found.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=[])
    return found


def _split(after_last, separator):
    """(whitespace after the old last argument's new comma, whitespace after the new argument).

    A comment (or newline) that followed the old last argument stays with it; what
    led up to the closing paren moves behind the new argument.
    """
    if isinstance(after_last, cst.ParenthesizedWhitespace) and (
        isinstance(separator, cst.ParenthesizedWhitespace) or after_last.first_line.comment is not None
    ):
        if isinstance(separator, cst.ParenthesizedWhitespace):
            indent = separator.last_line
        else:  # one-line arguments, then a comment: indent one level past the closing paren
            indent = cst.SimpleWhitespace(after_last.last_line.value + "    ")
        between = after_last.with_changes(last_line=indent)
        closing = cst.ParenthesizedWhitespace(first_line=cst.TrailingWhitespace(), empty_lines=[],
                                              indent=after_last.indent, last_line=after_last.last_line)
        return between, closing
    return separator, after_last


def add_keyword(call: cst.Call, keyword: str, value: cst.BaseExpression) -> cst.Call:
    """`call` with `keyword=value` appended, keeping its layout, comments and trailing comma."""
    new_arg = cst.Arg(
        value=value,
        keyword=cst.Name(keyword),
        equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                              whitespace_after=cst.SimpleWhitespace("")),
    )
    if not call.args:
        return call.with_changes(args=[new_arg])
    args = list(call.args)
    last = args[-1]
    separator = _separator(call)
    if isinstance(last.comma, cst.Comma):
        between, closing = _split(last.comma.whitespace_after, separator)
        args[-1] = last.with_changes(comma=last.comma.with_changes(whitespace_after=between))
        args.append(new_arg.with_changes(comma=last.comma.with_changes(whitespace_after=closing)))
    else:
        between, closing = _split(last.whitespace_after_arg, separator)
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=between),
                                     whitespace_after_arg=cst.SimpleWhitespace(""))
        args.append(new_arg.with_changes(whitespace_after_arg=closing))
    return call.with_changes(args=args)


def replace_keyword(call: cst.Call, keyword: str, value: cst.BaseExpression) -> cst.Call:
    args = [
        arg.with_changes(value=value) if arg.keyword is not None and arg.keyword.value == keyword else arg
        for arg in call.args
    ]
    return call.with_changes(args=args)


class _Rewriter(cst.CSTTransformer):
    def __init__(self, targets: dict[int, list[dict]]):
        self.targets = targets  # id(original Call) -> edits

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        for edit in self.targets.get(id(original), ()):
            value = cst.parse_expression(edit["value"])
            if edit["kind"] == "add_keyword":
                if not _has_keyword(updated, edit["keyword"]) and not _has_double_star(updated):
                    updated = add_keyword(updated, edit["keyword"], value)
            elif _has_keyword(updated, edit["keyword"]):
                updated = replace_keyword(updated, edit["keyword"], value)
        return updated


def _check_edit(edit: dict) -> dict:
    try:
        if edit["kind"] not in KINDS:
            raise FixError(f"unknown fix kind {edit['kind']!r}")
        cst.parse_expression(edit["value"])
        if not str(edit["keyword"]).isidentifier():
            raise FixError(f"bad keyword {edit['keyword']!r}")
        return {**edit, "line": int(edit["line"]), "column": int(edit["column"])}
    except (KeyError, TypeError, ValueError, cst.ParserSyntaxError) as exc:
        raise FixError(f"malformed fix {edit!r}: {exc}") from None


def apply_edits(source: str, edits: list[dict]) -> str:
    """`source` with `edits` applied (the same text when none applies)."""
    edits = [_check_edit(edit) for edit in edits]
    if not edits:
        return source
    try:
        return _apply_checked_edits(source, edits)
    except Exception as exc:
        # libcst's visitors and code generator recurse per nesting level (a chain of 199 calls, a list 199
        # deep, 999 nested lambdas); `check` reads such files, but rewriting one is refused, not half-done.
        # The RecursionError may surface as another error raised while libcst's context managers unwind.
        if not _from_recursion(exc):
            raise
        raise FixError("the code is nested too deeply for libcst to rewrite it; apply the fix by hand") from None


def _from_recursion(exc: BaseException | None) -> bool:
    """Whether `exc` is a RecursionError or was raised while handling one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RecursionError):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


# Python's line ends (a form feed or U+2028 ends no line, unlike str.splitlines).
_LINE_END = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")


def _top_level_spans(source: str) -> list[tuple[int, int]] | None:
    """1-based inclusive line ranges of the module's top-level statements (decorators included; statements
    sharing a line are one range), or None when Python's own parser cannot read `source`."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    spans: list[tuple[int, int]] = []
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], node.end_lineno))
        else:
            spans.append((start, node.end_lineno))
    return spans


def _apply_checked_edits(source: str, edits: list[dict]) -> str:
    """Rewrite only the top-level statements that hold an edit: each is valid Python on its own lines, so
    libcst parses, walks and regenerates a few lines, not the whole file (a 5 MB data line elsewhere costs
    nothing). When Python cannot read the file (newer syntax), the whole module is rewritten."""
    spans = _top_level_spans(source)
    if spans is None:
        return _rewrite(source, edits)
    lines = _LINE_END.split(source)
    for start, end in reversed(spans):
        inside = [{**edit, "line": edit["line"] - start + 1} for edit in edits if start <= edit["line"] <= end]
        if inside:
            chunk = "".join(lines[start - 1:end])
            lines[start - 1:end] = [_rewrite(chunk, inside)]
    return "".join(lines)


def _rewrite(source: str, edits: list[dict]) -> str:
    wrapper = MetadataWrapper(parse_module_guarded(source), unsafe_skip_copy=True)
    finder = _CallFinder(edits)
    wrapper.visit(finder)
    targets: dict[int, list[dict]] = defaultdict(list)
    for edit in edits:
        node = finder.found.get((edit["line"], edit["column"]))
        if node is not None and edit not in targets[id(node)]:
            targets[id(node)].append(edit)
    if not targets:
        return source
    return wrapper.module.visit(_Rewriter(targets)).code


def _fix_notebook(name: str, text: str, edits: list[dict]) -> tuple[str, list[tuple[str, str, str]]]:
    """A notebook's JSON with `edits` (lines of its script) applied cell by cell, and (cell label, old, new) for
    each cell that changed. Outputs, metadata and the other cells are kept as they were."""
    notebook = read_notebook(text.encode("utf-8"))
    by_cell: dict[int, list[dict]] = defaultdict(list)
    for edit in edits:
        where = notebook.locate(int(edit["line"]))
        if where is not None:
            by_cell[where[0]].append({**edit, "line": where[1]})
    new_sources: dict[int, str] = {}
    changed = []
    for number, cell_edits in sorted(by_cell.items()):
        cell = notebook.cell(number)
        new_masked = apply_edits(cell.masked, cell_edits)
        if new_masked != cell.masked:
            new_sources[number] = fixed_cell_source(cell, new_masked)
            changed.append((f"{name}:cell {number}", cell.source, new_sources[number]))
    if not new_sources:
        return text, []
    return notebook.dumps(new_sources), changed


def _read(path: Path) -> tuple[str, str, Snapshot]:
    data, snapshot = read_snapshot(path)
    try:
        return data.decode("utf-8"), "utf-8", snapshot
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1", snapshot


def write_atomically(path: Path, text: str, encoding: str = "utf-8", expect: Snapshot | None = None) -> None:
    """Replace `path` in one step, keeping its mode and owner; a symlink's target is written (see safe_write).

    Raises `Refused` for a file a careful editor would not write, or that changed since `expect`.
    """
    data = text.encode(encoding)
    replace_file(path, lambda stream: stream.write(data), expect)


def apply_fixes(paths, config, *, write: bool, stream, show: bool = False, cache=None,
                report_unused_noqa: bool = False, jobs: int = 1):
    """Fix (write=True) or show as a unified diff (write=False) every safe fix: (whether anything changes,
    the check that found the fixes). `cache`, `report_unused_noqa`, `jobs`: as for engine.check_paths.

    `show`: after writing, list on stderr what was fixed in each file (`--show-fixes`).
    """
    from peftdoctor.engine import PathError, check_paths

    result = check_paths(paths, config, report_unused_noqa=report_unused_noqa, cache=cache, jobs=jobs)
    by_file: dict[str, list[dict]] = defaultdict(list)
    codes: dict[str, Counter] = defaultdict(Counter)
    for finding in result.findings:
        fix = finding.extra.get("fix")
        if fix:
            by_file[finding.path].append(fix)
            codes[finding.path][finding.code] += 1
    # A file met twice (a symlink and its target, two links) is edited once, under its first name.
    by_real: dict[Path, tuple[str, list[dict]]] = {}
    for name in sorted(by_file):
        real = real_path(name)
        if real in by_real:
            by_real[real][1].extend(e for e in by_file[name] if e not in by_real[real][1])
        else:
            by_real[real] = (name, list(by_file[name]))
    changed_files = 0
    fixed = 0
    pending: list[tuple[str, str, str, Snapshot, int, list[tuple[str, str, str]]]] = []
    for name, edits in by_real.values():
        path = Path(name)
        try:
            source, encoding, snapshot = _read(path)
        except Refused as exc:
            raise PathError(f"{name}: cannot fix: {exc}") from None
        except OSError as exc:
            raise PathError(f"{name}: cannot read: {exc.strerror or exc}") from None
        try:
            if is_notebook(path):
                new, diffs = _fix_notebook(name, source, edits)
            else:
                new = apply_edits(source, edits)
                diffs = [(name, source, new)]
        except (FixError, NotebookError, cst.ParserSyntaxError) as exc:
            print(f"peftdoctor: warning: {name}: fix skipped: {exc}", file=sys.stderr)
            continue
        if new == source:
            continue
        pending.append((name, new, encoding, snapshot, len(edits), diffs))
    if write:
        for name, _, _, snapshot, _, _ in pending:  # refuse before anything is written
            try:
                check_target(name, snapshot)
            except (Refused, OSError) as exc:
                raise PathError(f"{name}: cannot write fix: {reason(exc)}") from None
    for name, new, encoding, snapshot, count, diffs in pending:
        changed_files += 1
        fixed += count
        if write:
            try:
                write_atomically(Path(name), new, encoding, expect=snapshot)
            except (Refused, OSError) as exc:
                raise PathError(f"{name}: cannot write fix: {reason(exc)}") from None
        else:
            for label, old_text, new_text in diffs:  # a notebook: one diff per changed cell
                stream.writelines(difflib.unified_diff(
                    _lines(old_text), _lines(new_text),
                    fromfile=f"a/{Path(label).as_posix()}", tofile=f"b/{Path(label).as_posix()}",
                ))
    if write and changed_files:
        # stderr: stdout may be carrying a JSON or SARIF report.
        print(f"peftdoctor: fixed {fixed} finding{'s' if fixed != 1 else ''} in {changed_files} "
              f"file{'s' if changed_files != 1 else ''}", file=sys.stderr)
        if show:
            _show_fixed([(name, codes[name]) for name, *_ in pending])
    return changed_files > 0, result


def _show_fixed(fixed: list[tuple[str, Counter]]) -> None:
    """`- path:` then `    N × CODE (name)` per fixed code, as ruff's --show-fixes (stderr)."""
    from peftdoctor.registry import get_rule

    for name, counts in fixed:
        print(f"- {name}:", file=sys.stderr)
        for code, count in sorted(counts.items()):
            rule = get_rule(code)
            print(f"    {count} \N{MULTIPLICATION SIGN} {code} ({rule.name if rule else code})", file=sys.stderr)


def _lines(text: str) -> list[str]:
    """Lines for a diff; a last line without a newline (a notebook cell's) gets one, so the diff stays valid."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
