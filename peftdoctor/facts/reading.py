"""How a module of the project is read for the facts: once, and no more of it than the facts can use.

A file being checked is parsed whole. Any other module of the project (a helper module a
checked file imports, or a caller of one) is parsed in pieces: its top level without its
definitions first, then each definition alone, the first time it is used, and only if it can
matter (it mentions something the facts model, derives from a library class, or, in a caller,
uses the checked files' code). Each piece keeps a map to the file's line numbers. Python's own parser (fast) decides what to keep; libcst, the slow part, parses a fraction.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import libcst as cst

from peftdoctor.facts.library import RELEVANT_IN_DEFINITIONS, RELEVANT_WORDS
from peftdoctor.facts.project import LIBRARY_TOPS, ParsedModule
from peftdoctor.source import parse_module_guarded

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ModuleReader:
    """Reads the project's modules for the facts; `read_source` decodes a file as the engine does."""

    def __init__(self, read_source, whole: set[Path], texts: dict[Path, str] | None = None):
        """`whole`: the files checked, parsed whole. Callers (see `find_callers`) are kept to the
        definitions that use what they import from those. `texts`: files the engine already read."""
        self._read_source_uncached = read_source
        self._texts: dict[Path, str] = dict(texts or {})
        self._whole = whole
        self._callers: dict[Path, set[str]] = {}  # caller -> names it imports from the checked files
        self._caller_classes: dict[Path, set[str]] = {}  # caller -> which of those names are classes
        self._indexes: dict[Path, "_Index | None"] = {}
        self._trees: dict[Path, tuple] = {}
        self._relevant_functions: dict[Path, set | None] = {}

    def _read_source(self, path: Path) -> str:
        """A module's text, read from disk once per run."""
        text = self._texts.get(path)
        if text is None:
            text = self._texts[path] = self._read_source_uncached(path)
        return text

    def source_and_tree(self, path: Path) -> tuple[str, ast.Module] | None:
        """The text and Python's tree of a module, read once (None when unreadable or not Python)."""
        if path not in self._trees:
            try:
                source = self._read_source(path)
                self._trees[path] = (source, ast.parse(source))
            except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
                self._trees[path] = None
        return self._trees[path]

    def relevant_functions(self, path: Path) -> set[tuple] | None:
        """(class name or None, function name) of the functions whose text mentions something the facts
        model: calls of the others are answered by summaries. None when the module cannot be read."""
        found = self._relevant_functions.get(path)
        if found is None and path not in self._relevant_functions:
            read = self.source_and_tree(path)
            if read is not None:
                lines = read[0].splitlines(keepends=True)
                found = set()
                for node in read[1].body:
                    owner, members = (node.name, node.body) if isinstance(node, ast.ClassDef) else (None, [node])
                    for member in members:
                        if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            text = "".join(lines[member.lineno - 1:member.end_lineno])
                            if any(word in text for word in RELEVANT_IN_DEFINITIONS):
                                found.add((owner, member.name))
            self._relevant_functions[path] = found
        return found

    def find_callers(self, candidates, resolve) -> list[Path]:
        """The candidate files that import, from a checked file, a definition the facts read there.
        `resolve(importer, module, level)` is the project's import resolution."""
        found = []
        stems = {path.stem if path.name != "__init__.py" else path.parent.name for path in self._whole}
        for path in candidates:
            path = path.resolve()
            try:
                if not _imports_one_of(self._read_source(path), stems):  # a cheap test before any parse
                    continue
            except OSError:
                continue
            names, classes = set(), set()
            script = _is_script(self._read_source(path))
            for level, module, imported in import_statements(self._read_source(path)):
                if module is None and level == 0:  # `import a.b as c`: the names are modules
                    for name, local in imported:
                        if resolve(path, name, 0) in self._whole:
                            names.add(local.split(".")[0])
                    continue
                target = resolve(path, module, level)
                for name, local in imported:
                    found_in = target
                    if target is None or target.name == "__init__.py":
                        found_in = resolve(path, f"{module}.{name}" if module else name, level) or target
                    if found_in not in self._whole:
                        continue
                    if found_in != target:  # a submodule, or a name re-exported by a package __init__
                        names.add(local)
                        continue
                    definition = self._kept_definition(found_in, name)
                    if isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(local)  # its callers pass it values
                    elif script and isinstance(definition, ast.ClassDef):
                        names.add(local)  # what a script does with an instance happens only there
                        classes.add(local)
            if names:
                self._callers[path] = names
                self._caller_classes[path] = classes
                found.append(path)
        return found

    def _kept_definition(self, module: Path, name: str):
        """The top-level function or class `name` of that checked module when the facts read it, else None.
        A script's import of a class makes it a caller (it casts, prepares, trains the instance); a library
        module importing a class mostly checks or subclasses it, so only its function imports count."""
        index = self._index(module)
        found = index.definitions.get(name) if index is not None else None
        return found[0] if found is not None and name in index.kept else None

    def parsed(self, path: Path) -> ParsedModule | None:
        """The parsed module (whole, or its relevant part), or None when it cannot be read or parsed."""
        if path in self._whole:
            read = self.source_and_tree(path)
            if read is None:
                return None
            try:
                return ParsedModule(path, read[0], parse_module_guarded(read[0]), read[1])
            except (cst.ParserSyntaxError, RecursionError, MemoryError):
                return None
        index = self._index(path)
        if index is None:
            return None
        try:
            text, line_map = index.header()  # its definitions come one by one, when used (`definition`)
            return ParsedModule(path, text, parse_module_guarded(text), None, line_map)
        except (cst.ParserSyntaxError, RecursionError, MemoryError):
            return None

    def definition(self, path: Path, name: str) -> ParsedModule | None:
        """One kept top-level definition of a module read in part, parsed alone (blank lines before it,
        so its line numbers are true); None when it is not one."""
        index = None if path in self._whole else self._index(path)
        if index is None or name not in index.kept:
            return None
        try:
            text, line_map = index.definition(name)
            return ParsedModule(path, text, parse_module_guarded(text), None, line_map)
        except (cst.ParserSyntaxError, RecursionError, MemoryError):
            return None

    def walked_definitions(self, path: Path) -> set[str] | None:
        """For a caller, the top-level definitions that use what it imports from the checked modules
        (the only ones walked for their calls); None for a file walked in full."""
        if path not in self._callers:
            return None
        index = self._index(path)
        return index.using_imported if index is not None else set()

    def is_whole(self, path: Path) -> bool:
        return path in self._whole

    def worth_reading(self, path: Path, name: str) -> bool:
        """Whether `name` of module `path` can matter to the facts (else it stays unknown, unparsed)."""
        if path in self._whole:
            return True
        if path not in self._indexes and path not in self._callers:
            try:
                source = self._read_source(path)
            except OSError:
                return False
            if _plainly_irrelevant(source, name):
                return False  # told from the text alone, without parsing the module
        index = self._index(path)
        return index is not None and name in index.worth

    def _index(self, path: Path):
        if path not in self._indexes or (path in self._callers and self._indexes[path] is not None
                                         and not self._indexes[path].using_imported_known):
            self._indexes[path] = self._make_index(path)
        return self._indexes[path]

    def _make_index(self, path: Path):
        try:
            source = self._read_source(path)
        except OSError:
            return None
        if path.name != "__init__.py" and path not in self._whole and \
                not any(word in source for word in RELEVANT_WORDS):
            return None
        read = self.source_and_tree(path)
        return _Index(read[0], read[1], self._callers.get(path, frozenset()),
                      self._caller_classes.get(path, frozenset())) if read is not None else None


class _Index:
    """What Python's parser tells about a module read for its names: which to keep."""

    def __init__(self, source: str, tree: ast.Module, imported: set[str] = frozenset(),
                 classes: set[str] = frozenset()):
        """`imported`: a caller's names from the checked files; `classes`: those that are classes, whose
        users are kept only when they also do something the facts model (train, cast, save, ...)."""
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.using_imported_known = bool(imported)  # `imported`: a caller's names from the checked files
        self.definitions = {}
        for node in tree.body:
            if isinstance(node, DEFINITIONS):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                self.definitions[node.name] = (node, start, node.end_lineno)
        library_names = _names_from_libraries(tree)
        words = {name: set(WORD.findall("".join(self.lines[start - 1:end])))  # the names each one uses
                 for name, (_, start, end) in self.definitions.items()}
        imported = _with_tables_of(tree, self.lines, imported)
        functions = imported - classes
        self.using_imported = {name for name, (_, start, end) in self.definitions.items()
                               if words[name] & functions
                               or (words[name] & classes and self._mentions_relevant(start, end))}
        if imported:  # a caller: what uses the checked files' code, and the helpers that uses
            self.kept = set(self.using_imported)
        else:
            self.kept = {name for name, (node, start, end) in self.definitions.items()
                         if self._mentions_relevant(start, end)
                         or (isinstance(node, ast.ClassDef) and _derives_from(node, library_names))}
        pending = list(self.kept)
        while pending:  # the module's own helpers that a kept definition uses
            for used in words[pending.pop()] & self.definitions.keys() - self.kept:
                self.kept.add(used)
                pending.append(used)
        self.worth = set(self.kept)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.level or node.module.split(".")[0] not in MODELLED_TOPS):
                self.worth.update(alias.asname or alias.name for alias in node.names)  # re-exports
            elif isinstance(node, ast.Import):
                self.worth.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and self._mentions_relevant(node.lineno,
                                                                                         node.end_lineno):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                self.worth.update(t.id for t in targets if isinstance(t, ast.Name))

    def _mentions_relevant(self, start: int, end: int) -> bool:
        text = "".join(self.lines[start - 1:end])
        return any(word in text for word in RELEVANT_IN_DEFINITIONS)

    def header(self) -> tuple[str, list[int]]:
        """The top level without its definitions, and the file's line number of each of its lines
        (libcst spends as much on a blank line as on code, so nothing stands in for what is left out)."""
        skipped = set()
        for _, start, end in self.definitions.values():
            skipped.update(range(start, end + 1))
        kept = [number for number in range(1, len(self.lines) + 1) if number not in skipped]
        return "".join(self.lines[number - 1] for number in kept), kept

    def definition(self, name: str) -> tuple[str, list[int]]:
        _, start, end = self.definitions[name]
        return "".join(self.lines[start - 1:end]), list(range(start, end + 1))


MODELLED_TOPS = ("transformers", "peft", "trl")


def _with_tables_of(tree: ast.Module, lines: list[str], imported: set[str]) -> set[str]:
    """A caller's imported names plus the top-level names bound from them (`HANDLERS = {"lora": train_lora}`),
    so the code that calls through such a table is kept as a caller too."""
    if not imported:
        return imported
    names = set(imported)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            used = set(WORD.findall("".join(lines[node.lineno - 1:node.end_lineno])))
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if used & names:
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


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


def _is_script(source: str) -> bool:
    """A file run as a program (`if __name__ == "__main__":`): where a project's objects are put to work."""
    return "__main__" in source and "__name__" in source


def _imports_one_of(source: str, stems: set[str]) -> bool:
    """An import line naming one of the modules `stems`."""
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("import ", "from ")):
            words = re.split(r"[\s.,()]+", stripped)
            if len(words) > 1 and words[1] in LIBRARY_TOPS:
                continue  # `from transformers.models.llama import ...` is not the project's llama.py
            if set(words) & stems:
                return True
    return False


IMPORT_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)", re.MULTILINE)
IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.MULTILINE)


def import_statements(source: str):
    """(level, module or None, [(name, local name)]) for each import statement, read from the text
    (finding callers needs no parse: a wrong guess here only means one file more or less is walked)."""
    source = source.replace("\\\n", " ")  # backslash continuations
    for match in IMPORT_FROM.finditer(source):
        level, module, body = len(match.group(1)), match.group(2) or None, match.group(3)
        yield level, module, _aliases(body.strip("()"))
    for match in IMPORT.finditer(source):
        yield 0, None, _aliases(match.group(1))


def _aliases(body: str) -> list[tuple[str, str]]:
    out = []
    for part in body.split(","):
        words = part.split()
        if not words or words[0] == "*":
            continue
        out.append((words[0], words[2] if len(words) == 3 and words[1] == "as" else words[0]))
    return out


TOP_LEVEL_DEFINITION = re.compile(r"^(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)", re.MULTILINE)
TOP_LEVEL_LINE = re.compile(r"^[^\s#]", re.MULTILINE)


def _plainly_irrelevant(source: str, name: str) -> bool:
    """`name` is a top-level function or class whose text mentions nothing the facts model and no
    other top-level definition of its module (so nothing it calls there can matter either). A cheap
    reading of the text; when in doubt (not found as a definition), False."""
    definitions = {match.group(1): match for match in TOP_LEVEL_DEFINITION.finditer(source)}
    match = definitions.get(name)
    if match is None:
        return False
    if source.startswith("class", match.start()) and any(f"{top}" in source for top in MODELLED_TOPS):
        return False  # it may derive from a transformers/peft/trl class: Python's parser decides
    following = TOP_LEVEL_LINE.search(source, match.end())
    while following is not None and source.startswith(("def ", "class ", "async "), following.start()) is False \
            and source[following.start()] in ")]}":  # a closing bracket of the signature
        following = TOP_LEVEL_LINE.search(source, following.end())
    block = source[match.start():following.start() if following else len(source)]
    if any(word in block for word in RELEVANT_IN_DEFINITIONS):
        return False
    used = set(WORD.findall(block))
    return not (used & (definitions.keys() - {name}))
