"""The project layer: a project's own modules, each parsed and interpreted once per run.

Imports of the project's own modules (`from .utils import load_model`, `import utils`,
`from src.trainer import MyTrainer`, re-exports through a package `__init__`) resolve
to its files. A module is parsed, and its top level interpreted, the first time a name
of it is used, never twice; a call into it reads the summary of the called function
(see calls.py). Names of the libraries peftdoctor models are never resolved locally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

from peftdoctor.facts.names import FLAT_LIBRARIES, dotted
from peftdoctor.facts.positions import call_positions
from peftdoctor.facts.values import LOCAL, Value, Values
from peftdoctor.run_record import note

FILE, FOLDER, LINK = "file", "folder", "link"  # kinds of folder entries

# Never a project module, even when a folder of that name exists (vendored copies).
LIBRARY_TOPS = FLAT_LIBRARIES | {"torch", "safetensors", "datasets", "deepspeed", "diffusers", "numpy"}


@dataclass
class ParsedModule:
    path: Path
    source: str
    module: cst.Module
    tree: object  # the ast tree when Python's parser read it (exact call positions), else None
    line_map: list | None = None  # a piece of a module: its line i+1 is line line_map[i] of the file




class Project:
    """All local modules of one checked project; `interpreter(path)` runs a module once."""

    def __init__(self, root: Path, reader):
        """`reader` reads a module for the facts (see reading.ModuleReader): `parsed(path)` and
        `worth_reading(path, name)`."""
        self.root = root.resolve()
        self._reader = reader
        self._parsed: dict[Path, ParsedModule | None] = {}
        self._interpreters: dict[Path, object] = {}
        self._resolved: dict[tuple, Path | None] = {}
        self._listings: dict[str, dict[str, str]] = {}
        self._real: dict[Path, Path] = {}
        self._real_folders: dict[Path, Path] = {}
        self._folder_chains: dict[str, list[str]] = {}
        self._defined: set[tuple] = set()  # (module, name) of definitions read in pieces
        self._pieces: list = []  # (module, ParsedModule) of modules read in pieces, for positions
        self._pieces_mapped: set[int] = set()
        self._piece_positions: dict[int, tuple] = {}
        self.node_paths: dict[int, Path] = {}  # id(call node) -> the module it was evaluated in
        self.inline_budget = 4000  # context-sensitive walks per run; beyond it, summaries only

    def close(self) -> None:
        """Drop everything the run built. Interpreters, their facts and the values they hold refer
        to one another; cutting those links frees the trees as soon as the run ends, where the cyclic
        collector would have to scan the whole heap to find them."""
        for interp in self._interpreters.values():
            interp.__dict__.clear()
        for table in (self._parsed, self._interpreters, self._pieces, self._piece_positions, self.node_paths):
            table.clear()

    def real(self, path: Path) -> Path:
        """`path` resolved (symbolic links, `..`), once per path per run: lookups ask for it often, and a
        warm run asks for every file of the tree. Each folder is resolved once; a file costs one lstat."""
        found = self._real.get(path)
        if found is None:
            if path.is_symlink():
                found = path.resolve()
            else:
                folder = self._real_folders.get(path.parent)
                if folder is None:
                    folder = self._real_folders[path.parent] = path.parent.resolve()
                found = folder / path.name
            self._real[path] = found
        return found

    # ------------------------------------------------------------------ modules
    def parsed(self, path: Path) -> ParsedModule | None:
        path = self.real(path)
        if path not in self._parsed:
            parsed = self._parsed[path] = self._reader.parsed(path)
            if parsed is not None and parsed.line_map is not None:
                self._pieces.append((path, parsed))
        return self._parsed[path]

    def interpreter(self, path: Path, walk_functions: bool = True):
        """The module's interpreter after its top level ran, and its functions when `walk_functions`
        (a file whose findings are wanted; a module read for its names skips them); None if unreadable."""
        from peftdoctor.facts.interpreter import Interpreter

        path = self.real(path)
        interp = self._interpreters.get(path)
        if interp is None:
            parsed = self.parsed(path)
            if parsed is None:
                return None
            interp = Interpreter(parsed.module, path=path, project=self)
            self._interpreters[path] = interp
            interp.run(walk_functions=False)
        if walk_functions and not interp.functions_walked:
            only = self._reader.walked_definitions(path)
            for name in sorted(only or ()):
                self.lookup(path, name)  # a caller's definitions that use the checked files' code
            interp.walk_functions(only)
        return interp

    def interpreters(self) -> list:
        """Every module interpreted so far: a rule that needs the whole project's calls reads their events."""
        return list(self._interpreters.values())

    def relevant_functions(self, path: Path):
        return self._reader.relevant_functions(path)

    def walked(self, path: Path) -> bool:
        """The file was interpreted in full (checked, or a caller of a checked module): rules may read it."""
        interp = self._interpreters.get(self.real(path))
        return interp is not None and interp.functions_walked

    def lookup(self, path: Path, name: str) -> Values | None:
        """What `name` holds at the end of module `path`'s top level (a cycle sees what ran so far)."""
        path = self.real(path)
        interp = self._interpreters.get(path)
        if interp is None:
            if not self._reader.worth_reading(path, name):
                return self._unread_submodule(path, name)
            interp = self.interpreter(path, walk_functions=False)
        if interp is None:
            return None
        found = interp.module_env.names.get(name)
        if found is None:
            found = self._define(interp, path, name)
        return found if found is not None else self._unread_submodule(path, name)

    def lookup_own(self, path: Path, name: str) -> Values | None:
        """A module's own name not bound yet: one of its definitions read in pieces, if any."""
        if (path, name) in self._defined or self._reader.is_whole(path):
            return None
        interp = self._interpreters.get(path)
        return self._define(interp, path, name) if interp is not None else None

    def _define(self, interp, path: Path, name: str) -> Values | None:
        """A definition of a module read in pieces, parsed and defined the first time it is used."""
        key = (path, name)
        if key in self._defined:
            return interp.module_env.names.get(name)
        self._defined.add(key)
        parsed = self._reader.definition(path, name)
        if parsed is None:
            return None
        self._pieces.append((path, parsed))
        for statement in parsed.module.body:
            interp.exec_statement(statement, interp.module_env)
        return interp.module_env.names.get(name)

    def _unread_submodule(self, path: Path, name: str) -> Values | None:
        """`name` as a submodule of package `path` (`from pkg import module`), if there is one."""
        submodule = self.submodule(path, name)
        return (Value(LOCAL, module=submodule, name=None),) if submodule is not None else None

    # ---------------------------------------------------------------- imports
    def submodule(self, package_file: Path, name: str) -> Path | None:
        if package_file.name != "__init__.py":
            return None
        return self._module_file(os.path.dirname(package_file), [name])

    def resolve(self, importer: Path, module: str | None, level: int) -> Path | None:
        """The file of module `module` imported from `importer` (relative when `level` > 0).
        Paths are handled as strings here: a large tree resolves tens of thousands of imports."""
        folder = os.path.dirname(importer)
        key = (folder, module, level)
        if key in self._resolved:
            return self._resolved[key]
        found = None
        parts = module.split(".") if module else []
        if level > 0:
            for _ in range(level - 1):
                folder = os.path.dirname(folder)
            found = self._module_file(folder, parts) if parts else \
                self._module_file(os.path.dirname(folder), [os.path.basename(folder)])
        elif parts and parts[0] not in LIBRARY_TOPS:
            for start in self._search_folders(folder):
                found = self._module_file(start, parts)
                if found is not None:
                    break
        self._resolved[key] = found
        return found

    def _module_file(self, folder: str, parts: list[str]) -> Path | None:
        """`folder/a/b.py`, or the package `folder/a/b/__init__.py`, for parts [a, b]: looked up in folder
        listings read once per run (stat calls for every import of a large tree cost more than reading
        it). `folder` is resolved, so only a symbolic link on the way needs resolving."""
        linked = False
        for part in parts[:-1]:
            kind = self._listing(folder).get(part)
            if kind not in (FOLDER, LINK):
                return None
            linked = linked or kind == LINK
            folder = os.path.join(folder, part)
        name = parts[-1] if parts else ""
        if not name:
            return None
        entries = self._listing(folder)
        kind = entries.get(name + ".py")
        if kind in (FILE, LINK):
            found = Path(folder, name + ".py")
        elif entries.get(name) in (FOLDER, LINK) and \
                self._listing(os.path.join(folder, name)).get("__init__.py") in (FILE, LINK):
            kind = entries.get(name)
            found = Path(folder, name, "__init__.py")
        else:
            return None
        return found.resolve() if linked or kind == LINK else found

    def _listing(self, folder: str) -> dict[str, str]:
        """name -> FILE, FOLDER or LINK, for the entries of `folder` ({} when it is not one)."""
        found = self._listings.get(folder)
        if found is None:
            found = {}
            note(folder)
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        found[entry.name] = LINK if entry.is_symlink() else FOLDER if entry.is_dir() else FILE
            except OSError:
                pass
            self._listings[folder] = found
        return found

    def _search_folders(self, folder: str) -> list[str]:
        """The script's folder, then every folder up to the project root (a `src/` layout included)."""
        found = self._folder_chains.get(folder)
        if found is None:
            root = str(self.root)
            chain = [folder]
            current = folder
            while current != root and current.startswith(root.rstrip(os.sep) + os.sep):
                current = os.path.dirname(current)
                chain.append(current)
            if self._listing(root).get("src") in (FOLDER, LINK):
                chain.append(os.path.join(root, "src"))
            found = self._folder_chains[folder] = chain
        return found

    def import_bindings(self, importer: Path, node) -> list[tuple[str, Values]] | None:
        """(local name, values) for an import of the project's own modules; None when not local."""
        if isinstance(node, cst.Import):
            bindings = []
            for alias in node.names:
                full = dotted(alias.name) or ""
                target = self.resolve(importer, full, 0)
                if target is None:
                    return None
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    bindings.append((alias.asname.name.value, (Value(LOCAL, module=target, name=None),)))
                else:
                    top = full.split(".")[0]
                    top_file = self.resolve(importer, top, 0)
                    bindings.append((top, (Value(LOCAL, module=top_file or target, name=None),)))
            return bindings
        if isinstance(node.names, cst.ImportStar):
            return None
        level = len(node.relative)
        module = dotted(node.module) if node.module is not None else None
        target = self.resolve(importer, module, level)
        if target is None:
            return [] if level > 0 else None  # an unresolved relative import binds unknowns
        bindings = []
        for alias in node.names:
            name = dotted(alias.name) or ""
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            bindings.append((local, (Value(LOCAL, module=target, name=name),)))
        return bindings

    def resolve_local(self, value: Value, depth: int = 0) -> Values | None:
        """What a LOCAL value stands for: a module (kept as is) or a name in that module,
        followed through re-exports (`from .modeling import X` in a package `__init__`)."""
        name = value.get("name")
        if name is None:
            return (value,)
        found = self.lookup(value.get("module"), name)
        if found is None or depth > 8:
            return found
        out = []
        for item in found:
            if item.kind == LOCAL and item.get("name") is not None:
                out.extend(self.resolve_local(item, depth + 1) or ())
            else:
                out.append(item)
        return tuple(out) or None

    # --------------------------------------------------------------- positions
    def position(self, node) -> tuple[Path, tuple[int, int, int, int]] | None:
        """The file and position of a call evaluated in any module of the project."""
        from peftdoctor.facts import Facts

        path = self.node_paths.get(id(node))
        if path is None:
            return None
        parsed = self.parsed(path)
        if parsed is None:
            return None
        if parsed.line_map is not None:
            found = self.piece_position(node, path)
            return (path, found) if found is not None else None
        interp = self._interpreters[path]
        if interp.facts is None:
            interp.facts = Facts(path=str(path), module=parsed.module, interpreter=interp,
                                 source=parsed.source, tree=parsed.tree)
        return path, interp.facts.position(node)

    def piece_position(self, node, path: Path) -> tuple[int, int, int, int] | None:
        """The position of a call in module `path` read in pieces, in the file's own line numbers."""
        found = self._piece_positions.get(id(node))
        if found is not None:
            return found
        for piece_path, parsed in self._pieces:
            if piece_path != path or id(parsed) in self._pieces_mapped:
                continue
            self._pieces_mapped.add(id(parsed))
            lines = parsed.line_map
            for key, (line, column, end_line, end_column) in (call_positions(parsed.module, parsed.source)
                                                              or {}).items():
                self._piece_positions[key] = (lines[line - 1], column, lines[end_line - 1], end_column)
            if id(node) in self._piece_positions:
                return self._piece_positions[id(node)]
        return None
