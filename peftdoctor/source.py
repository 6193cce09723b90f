"""A checked file's text: bytes -> str as Python decodes it, then one parse that any Python 3 grammar accepts.

Why this is its own step, and not just `ast.parse`:

* Decoding follows PEP 263, as the interpreter does: a UTF-8 byte-order mark is dropped and a coding cookie on
  line 1 or 2 is honoured (`tokenize.detect_encoding`). A file that is not text (a NUL byte, bytes that its
  declared encoding cannot decode, an unknown codec) gets one PD000 saying so, never "invalid syntax".
* The grammar is the newest that the installed libcst knows, not the one of the interpreter running peftdoctor:
  a repository may be written for Python 3.12+ (`type X = int`, `def f[T]()`, PEP 701 f-strings) while
  peftdoctor runs on 3.11. `ast.parse` stays the fast first try, since it is exact about where a syntax error
  is and its tree gives call positions cheaply; when it fails, libcst decides, and only a file both reject is
  PD000 (with Python's message and position, or "Python 2 source" when the failing line is Python 2).
* libcst's native parser crashes the whole process (a stack overflow, not an exception) on deeply nested
  input, e.g. 3000 parentheses or a few thousand chained `lambda`s. Whenever Python's parser has not already
  bounded the input, a tokenize pre-scan refuses input nested beyond what libcst survives, so the guard does
  not depend on which interpreter runs peftdoctor. The same pre-scan names the other known limits: more than
  3000 adjacent string literals (libcst's grammar gives up) and one statement of more than 500,000 tokens
  (minutes of parsing). Each is one PD000 naming the construct and its line; `parse_module_guarded` applies
  the guard where a module is parsed directly. A failure of libcst on valid Python for any other reason is
  PD002 (ours to fix).
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
import warnings
from typing import NamedTuple

import libcst as cst

from peftdoctor.finding import Finding, Severity

# Python refuses more than 200 nested brackets; libcst crashes near 1200 (8 MiB stack).
MAX_BRACKET_DEPTH = 200
# Estimated recursion of one expression: tokens of the unfinished operands at every open bracket level, plus
# BRACKET_COST per open bracket. libcst crashes near 3500 chained lambdas (7000 tokens), 7000 `and`s, 8000 `not`s.
MAX_EXPRESSION_COST = 3000
BRACKET_COST = 6
# libcst nests `elif` in `else`; it crashes somewhere between 5000 and 20000 of them.
MAX_ELIFS = 2000
# libcst's grammar gives up (a syntax error at the next string) after 3000 adjacent string literals.
MAX_ADJACENT_STRINGS = 3000
# libcst spends ~50 us per token: one statement of a million tokens (a 5 MB data literal on one line) is minutes
# of parsing for no training logic, so past this a file is named as not read instead.
MAX_STATEMENT_TOKENS = 500_000
# Python keeps these chains flat (or bounds them loosely), libcst nests them: when a file Python accepted has
# this many of them, it is pre-scanned too.
_CHAIN_WORDS = (" and ", " or ", "lambda", "not ", "elif ")
_CHAIN_WORDS_TRIGGER = 1000

SYNTAX_HINT = "fix the syntax error; nothing else in this file was checked"
NOT_TEXT_HINT = ("nothing in this file was checked: a .py file must be text in its declared encoding "
                 "(PEP 263); exclude it if it is not a script")
PY2_HINT = "port it to Python 3, or exclude it with [tool.peftdoctor] exclude = [...]; nothing in it was checked"
# Errors that no newer grammar lifts (bad string contents), so libcst, which does not check them, is not asked.
_ALWAYS_ERRORS = ("(unicode error)", "(value error)", "bytes can only contain ASCII")


class Parsed(NamedTuple):
    """`module` is None when the file does not parse, or when Python parsed it and no module was needed."""

    module: cst.Module | None
    tree: ast.Module | None
    findings: list[Finding]


class Decoded(NamedTuple):
    text: str | None  # None: not text; `finding` says why
    finding: Finding | None


# ---------------------------------------------------------------------------------------------------- decoding


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _not_text(path: str, data: bytes, offset: int, why: str) -> Finding:
    line, column = _position(data, offset)
    return Finding(code="PD000", message=f"not a Python source file: {why}", path=path, line=line,
                   column=column, hint=NOT_TEXT_HINT)


def decode_source(data: bytes, path: str) -> Decoded:
    """The text Python would read from `data` (PEP 263), or one PD000 finding saying why there is none."""
    nul = data.find(b"\x00")
    if nul != -1:
        return Decoded(None, _not_text(path, data, nul, f"binary data (a NUL byte at byte {nul})"))
    encoding = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:  # an unknown codec, or a BOM with another cookie; else undecodable line 1 or 2
        if "unknown encoding" in str(exc):
            name = str(exc).rsplit(": ", 1)[-1]
            return Decoded(None, _not_text(path, data, 0, f"unknown encoding {name!r} in its coding cookie"))
        if "encoding problem" in str(exc):
            return Decoded(None, _not_text(path, data, 0, "a UTF-8 byte-order mark and a coding cookie for "
                                                          "another encoding"))
    try:
        return Decoded(data.decode(encoding), None)
    except UnicodeDecodeError as exc:
        name = "utf-8" if encoding == "utf-8-sig" else encoding
        byte = data[exc.start:exc.start + 1].hex()
        return Decoded(None, _not_text(path, data, exc.start,
                                       f"undecodable as {name} at byte {exc.start} (0x{byte})"))
    except LookupError as exc:  # a codec that is not a text encoding
        return Decoded(None, _not_text(path, data, 0, f"its coding cookie names no text encoding ({exc})"))


# ----------------------------------------------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=1)
def newest_grammar() -> cst.PartialParserConfig:
    """libcst's newest known grammar (3.15 in libcst 1.9; older releases stop earlier)."""
    for minor in range(20, 7, -1):
        try:
            return cst.PartialParserConfig(python_version=f"3.{minor}")
        except ValueError:  # not a version this libcst knows
            continue
    return cst.PartialParserConfig()


def _fstring_depth(token: str) -> int:
    """Deepest bracket nesting inside an f-string token (Python < 3.12 tokenizes an f-string as one STRING)."""
    quote = min((i for i in (token.find("'"), token.find('"')) if i >= 0), default=0)
    if "f" not in token[:quote].lower():
        return 0
    depth = deepest = 0
    for char in token[quote:]:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}" and depth:
            depth -= 1
    return deepest


def nesting_problem(source: str) -> str | None:
    """Why libcst must not be given `source` (it would overflow the stack), or None when it is safe.

    A cheap tokenize pass. Input the tokenizer itself rejects (EOF in a string or bracket, a bad dedent) is
    refused too: it is not valid Python in any version, so Python's own message about it stands.
    """
    depth = 0
    costs = [0]  # per open bracket level: tokens of the unfinished operand so far
    total = 0
    elifs = 0
    adjacent_strings = strings_from = 0  # string literals in a row (one implicit concatenation), from line
    statement_tokens = statement_from = 0  # tokens of the current logical line, from line
    fstring_depth = 0  # Python 3.12+ tokenizes an f-string in pieces, its expressions included
    skip = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            kind, text = token.type, token.string
            name = tokenize.tok_name.get(kind, "")
            if kind == tokenize.NEWLINE:
                statement_tokens = 0
            elif kind not in skip:
                statement_tokens += 1
                if statement_tokens == 1:
                    statement_from = token.start[0]
                elif statement_tokens > MAX_STATEMENT_TOKENS:
                    return f"one statement of more than {MAX_STATEMENT_TOKENS:,} tokens (line {statement_from})"
            if fstring_depth == 0 and name in ("STRING", "FSTRING_START"):
                adjacent_strings += 1
                if adjacent_strings == 1:
                    strings_from = token.start[0]
                elif adjacent_strings > MAX_ADJACENT_STRINGS:
                    return f"more than {MAX_ADJACENT_STRINGS} adjacent string literals (line {strings_from})"
                if adjacent_strings > 1:  # one more piece of the same literal: no deeper than the first
                    fstring_depth += name == "FSTRING_START"
                    continue
            elif fstring_depth == 0 and kind not in (tokenize.NL, tokenize.COMMENT):
                adjacent_strings = 0
            if name == "FSTRING_START":
                fstring_depth += 1
            elif name == "FSTRING_END":
                fstring_depth -= 1
            if kind == tokenize.OP and text in ("(", "[", "{"):
                depth += 1
                if depth > MAX_BRACKET_DEPTH:
                    return f"brackets nested more than {MAX_BRACKET_DEPTH} deep (line {token.start[0]})"
                costs[-1] += 1
                total += 1
                costs.append(0)
            elif kind == tokenize.OP and text in (")", "]", "}"):
                if depth:
                    depth -= 1
                    total -= costs.pop()
            elif kind == tokenize.OP and text in (",", ";"):
                total -= costs[-1]
                costs[-1] = 0
            elif kind == tokenize.NEWLINE:
                depth, costs, total = 0, [0], 0
            elif kind not in skip:
                if kind == tokenize.STRING and depth + _fstring_depth(text) > MAX_BRACKET_DEPTH:
                    return f"brackets nested more than {MAX_BRACKET_DEPTH} deep (line {token.start[0]})"
                if kind == tokenize.NAME and text == "elif":
                    elifs += 1
                    if elifs > MAX_ELIFS:
                        return f"more than {MAX_ELIFS} elif branches (line {token.start[0]})"
                costs[-1] += 1
                total += 1
            if total + BRACKET_COST * depth > MAX_EXPRESSION_COST:
                return f"an expression nested too deeply (line {token.start[0]})"
    except (tokenize.TokenError, SyntaxError) as exc:  # IndentationError is a SyntaxError
        return f"the tokenizer rejects it ({exc.args[0] if exc.args else exc})"
    return None


class BeyondLibcst(RecursionError):
    """Input that would overflow libcst's native parser (see nesting_problem): refused before it is parsed."""


def parse_module_guarded(source: str) -> cst.Module:
    """`cst.parse_module(source)` for a module read directly (not through parse_source), with the same guard:
    BeyondLibcst instead of a crash of the whole process."""
    problem = nesting_problem(source) if _needs_pre_scan(source) else None
    if problem is not None:
        raise BeyondLibcst(problem)
    return cst.parse_module(source)


def _libcst_parse(source: str) -> cst.Module | tuple[str, int, int]:
    """The module, or libcst's one-line reason, line and column (its panics included) when it does not parse."""
    try:
        return cst.parse_module(source, config=newest_grammar())
    except cst.ParserSyntaxError as exc:
        message = str(exc.message).strip().splitlines()[0] if exc.message else "parser error"
        return message, exc.raw_line, exc.raw_column + 1
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 panics derive from BaseException
        return f"{type(exc).__name__}: {exc}", 1, 0


# A line of Python 2: the first match, on the line where Python's parser stopped, names the construct.
_PY2 = (
    ("print statement", re.compile(r"^\s*print(?:\s*>>|\s+(?!(?:if|else|and|or|in|is|not|for)\b)[\w\"'`(\[{-])")),
    ("exec statement", re.compile(r"^\s*exec\s+[\w\"'(]")),
    ("`except X, e:`", re.compile(r"^\s*except\s+[\w.]+\s*,\s*\w+\s*:")),
    ("backtick repr", re.compile(r"`[^`]*`")),
    ("octal literal without 0o", re.compile(r"(?<![\w.])0+[1-7][0-7]*[lL]?(?![\w.])")),
    ("ur'' string prefix", re.compile(r"(?<!\w)[uU][rR][\"']")),
)


def python2_construct(source: str, line: int) -> str | None:
    """The Python 2 construct on `line` (1-based), e.g. "print statement", or None."""
    lines = source.splitlines()
    if not 0 < line <= len(lines):
        return None
    text = lines[line - 1]
    code = text.split("#", 1)[0]  # a crude comment strip: enough for a line that failed to parse
    for what, pattern in _PY2:
        if pattern.search(code):
            return what
    return None


def _python_parse(source: str, path: str) -> tuple[ast.Module | None, tuple[str, int, int] | None, bool]:
    """Python's tree, or its (message, line, column); the flag says whether newer grammars may still accept it."""
    try:
        with warnings.catch_warnings():  # invalid escapes etc. are the script's business, not our stderr's
            warnings.simplefilter("ignore")
            return ast.parse(source, filename=path), None, False
    except SyntaxError as exc:
        message = str(exc.msg)
        return None, (message, exc.lineno or 1, exc.offset or 1), not message.startswith(_ALWAYS_ERRORS)
    except (RecursionError, MemoryError):  # a resource limit, not grammar: no newer Python lifts it far
        return None, ("nested too deeply for Python's parser", 1, 1), False
    except ValueError as exc:
        return None, (str(exc), 1, 1), False


def _syntax_error(source: str, path: str, message: str, line: int, column: int) -> Finding:
    construct = python2_construct(source, line)
    if construct:
        return Finding(code="PD000", message=f"file does not parse: Python 2 source ({construct} at line {line}); "
                       "peftdoctor checks Python 3", path=path, line=line, column=column, hint=PY2_HINT)
    return Finding(code="PD000", message=f"file does not parse: {message}", path=path, line=line, column=column,
                   hint=SYNTAX_HINT)


def _unreadable(path: str, why: str, line: int = 1, column: int = 0) -> Finding:
    """Valid Python that libcst fails on for a reason we do not know: ours to fix, not the user's."""
    return Finding(
        code="PD002", message=f"peftdoctor's parser (libcst) cannot read this file, which Python accepts: {why}",
        path=path, line=line, column=column, severity=Severity.WARNING,
        hint="nothing in this file was checked; please report it; the other files were checked",
    )


def _beyond_limits(path: str, problem: str) -> Finding:
    """Valid Python past a known limit of libcst (see nesting_problem): the construct and its line, named."""
    match = re.search(r"\(line (\d+)\)$", problem)
    line = int(match.group(1)) if match else 1
    what = problem[:match.start()].rstrip() if match else problem
    return Finding(
        code="PD000", message=f"valid Python that peftdoctor cannot read: {what} at line {line} is beyond what "
        "its parser (libcst) handles", path=path, line=line, column=1, severity=Severity.WARNING,
        hint="nothing in this file was checked; split the construct (or exclude a generated file); the other "
        "files were checked",
    )


def _needs_pre_scan(source: str) -> bool:
    """Whether `source`, which Python accepted, has enough of what libcst nests to be scanned first."""
    if sum(source.count(word) for word in _CHAIN_WORDS) > _CHAIN_WORDS_TRIGGER:
        return True
    return source.count("'") + source.count('"') > MAX_ADJACENT_STRINGS or len(source) > MAX_STATEMENT_TOKENS


def parse_source(source: str, path: str = "<string>", need_module: bool = True) -> Parsed:
    """Parse `source` once: PD000 when no Python 3 grammar accepts it or it is past a known limit of libcst,
    PD002 when only libcst fails for another reason.

    `tree` is Python's `ast` tree when the running interpreter accepts the file (None for newer syntax);
    `module` is libcst's, parsed when `need_module` or when Python alone cannot decide.
    """
    nul = source.find("\x00")
    if nul != -1:
        line = source.count("\n", 0, nul) + 1
        return Parsed(None, None, [Finding(code="PD000", message="not a Python source file: binary data (a NUL "
                                           "character)", path=path, line=line, column=1, hint=NOT_TEXT_HINT)])
    tree, error, newer_may_accept = _python_parse(source, path)
    if tree is not None:
        if not need_module:
            return Parsed(None, tree, [])
        problem = nesting_problem(source) if _needs_pre_scan(source) else None
        if problem is not None:
            return Parsed(None, tree, [_beyond_limits(path, problem)])
        result = _libcst_parse(source)
        if isinstance(result, tuple):
            return Parsed(None, tree, [_unreadable(path, *result)])
        return Parsed(result, tree, [])
    assert error is not None
    if newer_may_accept and nesting_problem(source) is None:
        result = _libcst_parse(source)
        if isinstance(result, cst.Module):
            return Parsed(result, None, [])  # valid in a newer Python than the one running peftdoctor
    return Parsed(None, None, [_syntax_error(source, path, *error)])
