"""Jupyter notebooks (`.ipynb`) read as one script: their code cells in order, IPython syntax masked.

Why a script: the cells of a notebook run, in order, in one namespace, so a model wrapped in cell 3 and
trained in cell 7 is the same flow the rules follow in a `.py` file. Each code cell contributes its lines
(plus a closing newline when its last line has none), so a line of the script belongs to exactly one cell.
Cells are numbered as ruff numbers them and a notebook shows them: 1-based among all the cells, markdown ones
included.

IPython lines are not Python; each is replaced by a placeholder of one line, so the script parses and no
position moves:

* a line magic or shell line at the start of a statement (`%pip install peft`, `!nvidia-smi`,
  `files = !ls`, `t = %timeit f()`, and `pip install peft` or `cd ~/data`, which IPython runs as magics when
  they are not Python) and a help line (`model?`, `??get_peft_model`) become `pass`, at their indent; but a
  timing magic that runs one Python statement (`%time trainer.train()`) keeps it: only the magic's own
  characters become `_=` and spaces, so the statement runs for the rules at its own columns;
* a cell magic whose body is Python (`%%time`, `%%capture`, ...) has its first line made a comment; any
  other cell magic (`%%bash`, `%%writefile`, ...) has every line made a comment.

Lines inside a string, brackets or a backslash continuation are never masked. A cell that still does not parse
fails alone when Jupyter runs it, and the others run: it is left out of the script (its lines made comments),
and reported once, in its cell. A notebook in another language
(its kernel says so) has no Python cells. Findings come back located in their cell and line within it;
`--fix` edits one cell's text and puts the masked lines back.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from peftdoctor.finding import Finding

SUFFIX = ".ipynb"

# Cell magics whose body IPython runs as Python in the notebook's namespace.
PYTHON_BODY_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug", "memit"}
_LINE_MAGIC = re.compile(r"(?:[!%]|(?:[\w.\[\]'\", ]+=\s*[!%]))")
# IPython's automagic runs these magics without their `%` (`pip install peft`, `cd /content`) when the line is
# not Python.
_AUTOMAGIC = re.compile(r"(?:pip|conda|mamba|cd|env|load_ext|matplotlib|pwd|ls|mkdir|cat|rm|cp|mv)\s+\S")
# `%time <statement>` and the like: the magic and the spaces after it, when no option follows.
_STATEMENT_MAGIC = re.compile(r"%(?:time|timeit|prun|memit|debug)\s+(?=[^\s-])")
_LINE_REFERENCE = re.compile(r"\bline (\d+)\b")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
BROKEN_CELL_HINT = "fix the syntax error; this cell was left out, the notebook's other cells were checked"
LINE_PLACEHOLDER = "pass  # masked IPython line"
CELL_PLACEHOLDER = "# masked IPython line"


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python splits them (str.splitlines also splits at a form feed)."""
    return _LINE.findall(text)


class NotebookError(ValueError):
    """The file is not a notebook peftdoctor can read; the message says why, without the file's name."""


def is_notebook(path) -> bool:
    return str(path).endswith(SUFFIX)


@dataclass
class CodeCell:
    """One code cell: where it sits in the notebook and in the script, and what was masked in it."""

    index: int  # position in the notebook's "cells" list
    number: int  # 1-based among all the notebook's cells, as Jupyter shows them
    first_line: int  # 1-based line of the script where it starts
    source: str  # the cell's own text
    masked: str  # the same lines, IPython lines replaced
    # (what the masked line starts with, what the original started with), in order; a whole line for most
    placeholders: list[tuple[str, str]] = field(default_factory=list)

    @property
    def line_count(self) -> int:
        return len(split_lines(self.masked))


class JsonLayout(NamedTuple):
    """How the file's JSON was written, so that a fixed notebook differs only in the fixed cells."""

    indent: int | None
    ascii_only: bool  # non-ASCII characters written as \u escapes
    newline: str
    final_newline: bool

    @classmethod
    def of(cls, text: str) -> JsonLayout:
        match = re.match(r"\s*\{\r?\n( *)\"", text)  # Jupyter writes an indent of 1
        return cls(len(match.group(1)) if match else None, text.isascii() and "\\u" in text,
                   "\r\n" if "\r\n" in text else "\n", text.endswith("\n"))


@dataclass
class Notebook:
    data: dict
    cells: list[CodeCell]
    layout: JsonLayout
    broken: list[Finding] = field(default_factory=list)  # PD000 of each cell left out, at its script line

    @property
    def script(self) -> str:
        return "".join(cell.masked for cell in self.cells)

    def locate(self, line: int) -> tuple[int, int] | None:
        """(cell number, line in that cell) of a 1-based script line, or None for "the whole file"."""
        if line <= 0 or not self.cells:
            return None
        for cell in self.cells:
            if line < cell.first_line + cell.line_count:
                return cell.number, line - cell.first_line + 1
        last = self.cells[-1]
        return last.number, max(1, line - last.first_line + 1)

    def cell(self, number: int) -> CodeCell:
        return next(cell for cell in self.cells if cell.number == number)

    def dumps(self, new_sources: dict[int, str]) -> str:
        """The notebook's JSON with the given cells' sources (cell number -> text) replaced, all else kept."""
        for number, text in new_sources.items():
            cell = self.data["cells"][self.cell(number).index]
            lines = split_lines(text)
            cell["source"] = lines if isinstance(cell["source"], list) else text
        layout = self.layout
        text = json.dumps(self.data, indent=layout.indent, ensure_ascii=layout.ascii_only)
        return (text + ("\n" if layout.final_newline else "")).replace("\n", layout.newline)


def read_notebook(data: bytes, path: str = "<notebook>") -> Notebook:
    """The notebook in `data`, or NotebookError saying in one line why it cannot be read."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not a notebook: undecodable as UTF-8 at byte {exc.start}") from None
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"not a notebook: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except RecursionError:
        raise NotebookError("not a notebook: JSON nested too deeply") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        if isinstance(notebook, dict) and "worksheets" in notebook:
            raise NotebookError("a notebook in the old nbformat 3 layout; save it again with Jupyter (nbformat 4)")
        raise NotebookError("not a notebook: the JSON has no \"cells\" list")
    cells: list[CodeCell] = []
    if _is_python(notebook):
        line = 1
        for index, raw in enumerate(notebook["cells"]):
            if not isinstance(raw, dict) or raw.get("cell_type") != "code":
                continue
            source = _cell_text(raw.get("source", ""), index)
            masked, placeholders = mask_cell(source)
            cells.append(CodeCell(index, index + 1, line, source, masked, placeholders))
            line += cells[-1].line_count
    read = Notebook(notebook, cells, JsonLayout.of(text))
    _leave_out_broken_cells(read, path)
    return read


def _leave_out_broken_cells(notebook: Notebook, path: str) -> None:
    """Each cell that does not parse by itself (Jupyter compiles each cell alone) is made comments, so that
    the others are checked, and reported at its script line."""
    # libcst decides for syntax newer than this Python's
    from peftdoctor.source import parse_source

    for cell in notebook.cells:
        # Not the file's name: Python would take the error's line text, and so its column, from that file.
        _, _, found = parse_source(cell.masked, f"<cell {cell.number}>", need_module=False)
        error = next((f for f in found if f.code == "PD000"), None)
        if error is None:
            continue
        offset = cell.first_line - 1
        message = _LINE_REFERENCE.sub(lambda match, by=offset: f"line {int(match.group(1)) + by}", error.message).replace("file does not parse", "cell does not parse")
        notebook.broken.append(replace(error, path=path, line=error.line + offset, hint=BROKEN_CELL_HINT,
                                       message=message))
        # Its noqa comments are still read; a NUL, which no comment may hold, becomes a space.
        cell.masked = "".join(f"#{line.rstrip(chr(13) + chr(10))}\n".replace("\0", " ")
                              for line in split_lines(cell.masked))


def notebook_of_cells(cells: list[tuple[str, str]], path: str = "<notebook>") -> Notebook:
    """An editor's unsaved notebook, given as (cell type, text) of each cell in order ("code" for a Python cell),
    read as a file's cells are read: the same script, masking, broken cells and cell numbers."""
    data = {"cells": [{"cell_type": kind, "source": text} for kind, text in cells], "metadata": {}}
    return read_notebook(json.dumps(data).encode("utf-8"), path)


def script_of(data: bytes) -> str:
    """The notebook's script, or "" when it cannot be read (which its own check reports)."""
    try:
        return read_notebook(data).script
    except NotebookError:
        return ""


def _cell_text(source, index: int) -> str:
    if isinstance(source, list) and all(isinstance(part, str) for part in source):
        source = "".join(source)
    if not isinstance(source, str):
        raise NotebookError(f"not a notebook: cell {index + 1} has a source that is not text")
    return source


def _is_python(notebook: dict) -> bool:
    """False only when the notebook says it is in another language (an R or Julia kernel)."""
    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), dict) else {}
    for key in ("language_info", "kernelspec"):
        section = metadata.get(key)
        if isinstance(section, dict):
            name = section.get("name" if key == "language_info" else "language")
            if isinstance(name, str) and name:
                return name.lower() == "python"
    return True


# ------------------------------------------------------------------------------------------------- masking


def mask_cell(source: str) -> tuple[str, list[tuple[str, str]]]:
    """The cell's text with IPython lines replaced (one line each), and the (masked, original) starts of the
    lines it changed."""
    lines = split_lines(source)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    placeholders: list[tuple[str, str]] = []

    def mask(number: int, placeholder: str) -> None:
        original = lines[number]
        ending = original[len(original.rstrip("\r\n")):]
        placeholders.append((placeholder, original.rstrip("\r\n")))
        lines[number] = placeholder + ending

    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(maxsplit=1)
        if magic and magic[0] in PYTHON_BODY_CELL_MAGICS:
            mask(first, CELL_PLACEHOLDER)
        else:  # a body in another language (%%bash, %%writefile, %%html...)
            for number in range(first, len(lines)):
                mask(number, CELL_PLACEHOLDER)
            return "".join(lines), placeholders
    for number, placeholder in _ipython_lines(lines):
        line = lines[number]
        indent = line[:len(line) - len(line.lstrip())]
        magic = _STATEMENT_MAGIC.match(line, len(indent))
        if magic and _one_statement(line[magic.end():]):
            prefix = "_=".ljust(len(magic.group(0)))
            placeholders.append((indent + prefix, indent + magic.group(0)))
            lines[number] = indent + prefix + line[magic.end():]
        else:
            mask(number, indent + placeholder)
    return "".join(lines), placeholders


def _parses(line: str) -> bool:
    try:
        ast.parse(line)
    except (SyntaxError, ValueError, RecursionError):
        return False
    return True


def _one_statement(text: str) -> bool:
    """Whether `text` is one expression or assignment, which `_= ` can precede."""
    try:
        body = ast.parse(text.strip()).body
    except (SyntaxError, ValueError, RecursionError):
        return False
    return len(body) == 1 and isinstance(body[0], (ast.Expr, ast.Assign))


def _ipython_lines(lines: list[str]):
    """(number, placeholder) of each IPython line: a magic, shell or help line where a statement starts, and
    the lines a trailing backslash continues it onto. Where statements start comes from a cheap scan of
    brackets, strings and backslash continuations."""
    quote: str | None = None
    depth = 0
    continued = in_magic = False
    for number, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if in_magic:
            yield number, CELL_PLACEHOLDER
            in_magic = body.endswith("\\")
            continue
        starts = quote is None and depth == 0 and not continued
        stripped = body.strip()
        if starts and stripped and (_LINE_MAGIC.match(stripped) or _AUTOMAGIC.match(stripped)
                                    and not _parses(stripped)):
            yield number, LINE_PLACEHOLDER
            in_magic = body.endswith("\\")
            continue
        code, quote, depth = _scan(body, quote, depth)
        if starts and (code.strip().startswith("?") or code.strip().endswith("?")):  # obj?, obj??, ?obj
            yield number, LINE_PLACEHOLDER
        continued = quote is None and code == body and body.endswith("\\")


def _scan(line: str, quote: str | None, depth: int) -> tuple[str, str | None, int]:
    """The line's code before any comment, and the open string and bracket depth after it."""
    i = 0
    while i < len(line):
        char = line[i]
        if quote is not None:
            if char == "\\":
                i += 2
            elif line.startswith(quote, i):
                i += len(quote)
                quote = None
            else:
                i += 1
            continue
        if char == "#":
            return line[:i], None, depth
        if char in "\"'":
            quote = line[i:i + 3] if line[i:i + 3] in ('"""', "'''") else char
            i += len(quote)
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        i += 1
    if quote is not None and len(quote) == 1:
        quote = None  # a one-line string left open: not Python either way
    return line, quote, depth


def unmask(masked: str, placeholders: list[tuple[str, str]]) -> str:
    """A (fixed) masked cell with its IPython lines put back, matched in order; the closing newline that
    `mask_cell` added is dropped again by the caller."""
    pending = list(placeholders)
    out = []
    for line in split_lines(masked):
        body = line.rstrip("\r\n")
        if pending and body.startswith(pending[0][0]):
            masked_start, original_start = pending.pop(0)
            out.append(original_start + line[len(masked_start):])
        else:
            out.append(line)
    return "".join(out)


def fixed_cell_source(cell: CodeCell, new_masked: str) -> str:
    """The cell's new own text after a fix of its masked text: IPython lines restored, its last line's
    missing newline kept missing."""
    text = unmask(new_masked, cell.placeholders)
    if not cell.source.endswith(("\n", "\r")) and text.endswith("\n"):
        text = text[:-1]
    return text


# ---------------------------------------------------------------------------------------------- positions

def in_cells(notebook: Notebook, finding: Finding) -> Finding:
    """`finding` (script lines) located in its cell; "line N" in its message, hint and versions names the cell
    too."""
    where = notebook.locate(finding.line)
    if where is None:
        return finding
    cell, line = where
    end_line = finding.end_line - finding.line + line if finding.end_line else finding.end_line

    def cell_reference(match: re.Match) -> str:
        found = notebook.locate(int(match.group(1)))
        return f"cell {found[0]}, line {found[1]}" if found else match.group(0)

    return replace(finding, cell=cell, line=line, end_line=end_line,
                   message=_LINE_REFERENCE.sub(cell_reference, finding.message),
                   hint=_LINE_REFERENCE.sub(cell_reference, finding.hint),
                   versions=_LINE_REFERENCE.sub(cell_reference, finding.versions))
