"""What every static rule shares: the context it runs in and how it reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from peftdoctor.config import Config
from peftdoctor.facts import Facts
from peftdoctor.facts.api_versions import implied_versions
from peftdoctor.facts.values import BASE_MODEL, CONST, PEFT_CONFIG, Value
from peftdoctor.finding import Finding, Severity
from peftdoctor.versions import ProjectVersion, project_version

# Every static rule needs a file that mentions peft (an import, get_peft_model,
# peft_config=...): the engine skips parsing files without it.
NEEDS_PEFT = ("peft",)
PEFT_LOADERS = ("peft.PeftModel*.from_pretrained", "peft.PeftMixedModel.from_pretrained")


@dataclass
class Context:
    config: Config = field(default_factory=Config)

    def version(self, library: str, where: Facts | str) -> ProjectVersion:
        """The version of `library` the checked project runs on (see peftdoctor.versions).

        Pass the file's Facts: then, when the project pins nothing, the file's own API use
        (`SFTTrainer(tokenizer=...)`: trl < 0.16) implies a range. A path (the old form) skips that step.
        """
        if isinstance(where, Facts):
            implied = implied_versions(where).get(library)
            return project_version(library, where.path, self.config.versions, implied)
        return project_version(library, str(where), self.config.versions)


def finding(facts: Facts, node: cst.CSTNode, code: str, message: str, hint: str,
            severity: Severity = Severity.ERROR, versions: str = "", fix: dict | None = None,
            fix_node: cst.Call | None = None) -> Finding:
    """A finding at `node`; `fix` edits the call at `fix_node` (default: `node`), see peftdoctor.fix."""
    line, column, end_line, end_column = facts.position(node)
    extra = {}
    if fix is not None:
        fix_line, fix_column = (line, column) if fix_node is None else facts.position(fix_node)[:2]
        extra["fix"] = {**fix, "line": fix_line, "column": fix_column}
    return Finding(code=code, message=message, path=facts.path, line=line, column=column, hint=hint,
                   severity=severity, end_line=end_line, end_column=end_column, versions=versions, extra=extra)


def describe(facts: Facts, value: Value) -> str:
    """'get_peft_model(...) at line 12' for messages."""
    if value.node is None:
        return "an earlier call"
    node = value.node
    name = facts.code_of(node.func) if isinstance(node, cst.Call) else facts.code_of(node)
    return f"{name}(...) at {facts.where(node)}"


def known_configs(values) -> list[Value] | None:
    """The literal peft configs a value set holds, or None if any path's config is not known here."""
    if not values or not all(v.kind == PEFT_CONFIG and v.get("known") for v in values):
        return None
    return list(values)


def all_base(values) -> bool:
    return bool(values) and all(v.kind == BASE_MODEL for v in values)


def arg_code(facts: Facts, event, index: int, keyword: str) -> str | None:
    """The source text of a call's argument (`out_dir`, `"runs/lora"`), to match one path with another."""
    positional = [a for a in event.node.args if a.keyword is None and not a.star]
    for arg in event.node.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return facts.code_of(arg.value)
    if index < len(positional):
        return facts.code_of(positional[index].value)
    return None


def on_some_path(values, *kinds: str) -> Value | None:
    """The first value of one of `kinds` that some real path brings here, or None.

    Paths that cannot reach the call were already pruned by the facts (early exits,
    if/else, correlated conditions, isinstance guards), so one value is enough. A `maybe`
    value is not a path: `self.x` that only another method assigns (it may never run
    first), or one of several returns of a helper that picks one by its arguments.
    """
    for value in values or ():
        if value.kind in kinds and not value.get("maybe"):
            return value
    return None


def local_anchor(facts: Facts, node) -> tuple[object, str | None]:
    """Where, in this file, to report something made at `node`: `node` itself (None for the second
    item), or, when it was made in another module of the project, the call in this file that brought
    it here, with the other place described ('utils.py:12'). (None, None) when no call here did."""
    project = facts.interpreter.project
    if project is None or project.node_paths.get(id(node), facts.interpreter.path) == facts.interpreter.path:
        return node, None
    for event in facts.events:
        if event.callees and any(v.node is node for v in event.result):
            return event.node, facts.where(node)
    return None, None


# ----------------------------------------------------------------- where a path points
def _literal(values) -> str | None:
    found = {v.get("value") for v in values or () if v.kind == CONST}
    if values and len(found) == 1 and all(v.kind == CONST for v in values):
        text = found.pop()
        return text.rstrip("/") if isinstance(text, str) else None
    return None


def path_string(node) -> str | None:
    """The value of a string literal, without a trailing slash."""
    if isinstance(node, cst.SimpleString) and isinstance(node.evaluated_value, str):
        return node.evaluated_value.rstrip("/")
    return None


def path_keys(facts: Facts, node, values=None) -> set:
    """How a path expression is recognised elsewhere: its source text and, when known, its literal value."""
    keys = {("text", facts.code_of(node))}
    literal = _literal(values) if values is not None else path_string(node)
    if literal is not None:
        keys.add(("literal", literal))
    return keys


def argument_node(event, index: int, keyword: str):
    """The expression a call passes as one argument, by keyword or position; None when absent."""
    positional = [a for a in event.node.args if a.keyword is None and not a.star]
    for arg in event.node.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg.value
    return positional[index].value if index < len(positional) else None


def folder_keys(facts: Facts, event, index: int, keyword: str) -> set:
    """path_keys of a call's path argument; empty when the call has none."""
    node = argument_node(event, index, keyword)
    return path_keys(facts, node, event.arg(index, keyword)) if node is not None else set()


def same_path(keys, scope, other_keys, other_scope) -> bool:
    """The same literal anywhere, the same source text in the same function, or the same attribute
    (`args.output_dir`, `self.save_dir`) anywhere in the file: a local name such as `tmp_dir` in two
    functions is two folders."""
    shared = keys & other_keys
    return any(kind == "literal" or (kind == "text" and "." in text and text.replace(".", "").replace("_", "")
                                     .isalnum()) for kind, text in shared) \
        or (bool(shared) and scope is other_scope)
