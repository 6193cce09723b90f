"""Facts about one parsed file, computed once and read by every rule.

`build_facts(module, path)` walks the module once (see interpreter.py) and
returns a `Facts`: the calls in order with what flowed into them, plus where
backward passes and grad scalers happen. Rules never walk the tree themselves.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import libcst as cst

from peftdoctor.facts.interpreter import CallEvent, Interpreter
from peftdoctor.facts.positions import Position, call_positions, provider_positions


@dataclass
class Facts:
    path: str
    module: cst.Module
    interpreter: Interpreter
    source: str | None = None
    tree: ast.Module | None = None
    _call_positions: dict | None = field(default=None, repr=False)
    _all_positions: dict | None = field(default=None, repr=False)
    _derived: dict = field(default_factory=dict, repr=False)

    def derived(self, key: str, compute):
        """A fact derived from the others, computed once per file and shared by the rules that read it."""
        if key not in self._derived:
            self._derived[key] = compute(self)
        return self._derived[key]

    @property
    def events(self) -> list[CallEvent]:
        return self.interpreter.events

    def calls(self, *names: str) -> list[CallEvent]:
        """Events calling one of `names` (shell-style patterns: `peft.PeftModel*.from_pretrained`)."""
        exact = {name for name in names if not any(char in name for char in "*?[")}
        patterns = [name for name in names if name not in exact]
        return [e for e in self.events
                if e.name in exact or (patterns and any(fnmatchcase(e.name, name) for name in patterns))]

    def method_calls(self, method: str) -> list[CallEvent]:
        return [e for e in self.events if e.method == method and e.name.startswith(".")]

    def has_backward(self, scope=None) -> bool:
        if scope is None:
            return self.interpreter.file_backward
        return self.interpreter.scope_info(scope).backward

    def has_grad_scaler(self, scope=None) -> bool:
        if scope is None:
            return self.interpreter.file_grad_scaler
        return self.interpreter.scope_info(scope).grad_scaler

    def position(self, node: cst.CSTNode) -> Position:
        """(line, column, end_line, end_column), 1-based columns; computed once per file on demand."""
        if isinstance(node, cst.Call) and self.source is not None:
            if self._call_positions is None:
                self._call_positions = call_positions(self.module, self.source, self.tree) or {}
            found = self._call_positions.get(id(node))
            if found is not None:
                return found
        project = self.interpreter.project
        if project is not None and isinstance(node, cst.Call) and self.interpreter.path is not None:
            found = project.piece_position(node, self.interpreter.path)  # a call in a module read in pieces
            if found is not None:
                return found
        if self._all_positions is None:
            self._all_positions = provider_positions(self.module)
        return self._all_positions.get(id(node), (1, 0, 1, 0))

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node)[0]

    def where(self, node: cst.CSTNode) -> str:
        """'line 12' for a node of this file, 'utils.py:12' for one of another module of the project."""
        project = self.interpreter.project
        if project is not None and isinstance(node, cst.Call) and \
                project.node_paths.get(id(node), self.interpreter.path) != self.interpreter.path:
            found = project.position(node)
            if found is not None:
                path, position = found
                return f"{path.name}:{position[0]}"
        return f"line {self.line_of(node)}"

    def code_of(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)


def build_facts(module: cst.Module, path: str, source: str | None = None, tree: ast.Module | None = None) -> Facts:
    """One file alone. `source` and its `ast` tree let positions come from Python's parser."""
    interpreter = Interpreter(module)
    interpreter.run()
    facts = Facts(path=path, module=module, interpreter=interpreter, source=source, tree=tree)
    interpreter.facts = facts
    return facts


def project_facts(project, file_path, display: str) -> Facts | None:
    """A file of a project: its own walk, plus every call into it from the project's other modules.

    Call `project.interpreter(...)` on every checked file first, so the events of calls made
    from other modules are in before the rules read them.
    """
    interpreter = project.interpreter(file_path)
    if interpreter is None:
        return None
    if interpreter.facts is None:
        parsed = project.parsed(file_path)
        interpreter.facts = Facts(path=display, module=parsed.module, interpreter=interpreter,
                                  source=parsed.source, tree=parsed.tree)
    interpreter.facts.path = display  # facts made earlier for a message name the file as given
    return interpreter.facts
