"""A flow-sensitive walk over one module that records what each name holds.

Statements run in order; `if`/`try`/loops run each branch from a copy of the
environment and merge the results, so a name holds one value per path, and a
value made in a branch remembers that branch's condition (conditions.py).
Calls are recorded as `CallEvent`s with the values of their receiver and
arguments at that point. Functions are walked once each with their parameters
unknown; calls of the project's own code are answered by calls.py; imports of
the project's own modules by project.py.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

from peftdoctor.facts import conditions, library
from peftdoctor.facts.calls import LocalCalls, _function_body, has_fresh_head
from peftdoctor.facts.calls import block_statements as _body
from peftdoctor.facts.env import Env
from peftdoctor.facts.names import dotted, import_bindings
from peftdoctor.facts.values import (
    BASE_MODEL,
    CLASS,
    CONST,
    FUNCTION,
    HF_PIPELINE,
    LOCAL,
    MISSING,
    PARAM,
    PARAMS,
    PEFT_MODEL,
    REF,
    SELF,
    TUNER,
    TUPLE,
    UNKNOWN,
    UNKNOWN_VALUE,
    Value,
    Values,
    const,
    const_value,
    union,
    unknown,
)

# A dict literal keeps one version per path; past this many, `d[key] = value` is no longer tracked.
MAX_DICT_PATHS = 4
TERMINATING_CALLS = {"sys.exit", "exit", "quit", "os._exit"}
# An unknown call given one of these returns an object that remembers the call (a trainer of the
# project built from an optimizer, say), so what is done with it later can be traced back.
OPAQUE_INPUTS = frozenset({"optimizer"})


@dataclass
class CallEvent:
    """One call as it runs: what it calls and what flows into and out of it."""

    node: cst.Call
    name: str  # canonical qualified name ("peft.get_peft_model") or ".method" for a method call
    method: str | None  # the attribute name for method calls
    receiver: Values
    args: list[Values]
    kwargs: dict[str, Values]
    star_kwargs: bool
    result: Values
    scope: object  # the FunctionDef (or Module) the call is in
    callees: tuple = ()  # the FunctionDefs of the project the call may run
    unpacked: tuple = ()  # what `*x` / `**x` arguments hold, one value set each
    branches: tuple = ()  # ids of the `if` statements with an unknown test the call runs inside

    def arg(self, index: int, keyword: str | None = None) -> Values | None:
        if keyword is not None and keyword in self.kwargs:
            return self.kwargs[keyword]
        if index is not None and index < len(self.args):
            return self.args[index]
        return None


@dataclass
class ScopeInfo:
    node: object
    backward: bool = False  # a .backward() call happens in this scope
    grad_scaler: bool = False  # a GradScaler is created in this scope


class Interpreter(LocalCalls):
    def __init__(self, module: cst.Module, path: Path | None = None, project=None):
        self.module = module
        self.path = path
        self.project = project
        self.facts = None  # set by build_facts, for positions seen from other modules
        self.events: list[CallEvent] = []
        self.scopes: dict[int, ScopeInfo] = {}
        self.file_backward = False
        self.file_grad_scaler = False
        self._queue: list[tuple[cst.FunctionDef, Value | None]] = []
        self._summaries: dict[int, Values] = {}
        self._in_progress: set[int] = set()
        self._returns: list[Values] | None = None
        self._recording = True
        self._scope: object = module
        self._mutations: list | None = None  # in-place changes of an inlined walk, replayed by its caller
        self._local_budget = 500  # inlined walks when there is no project
        self.inline_stack: tuple = ()
        self.defaults: dict[int, Values] = {}  # id(Param) -> its default, evaluated where defined
        self._relevance: dict[int, bool] = {}  # id(FunctionDef) -> whether inlining it can matter
        self.return_envs: list[Env] | None = None  # the env at each `return` of an inlined walk
        self.module_env = Env()
        self.functions_walked = False
        self._texts: dict[int, str] = {}
        self.branch_tests: tuple = ()  # ids of the `if`s being walked whose test may go either way

    # ----------------------------------------------------------------- driving
    def run(self, walk_functions: bool = True) -> None:
        """The top level, then (for a file whose findings are wanted) every function with unknown
        parameters. A module read only for the names it exports skips the second part."""
        self.enter_scope(self.module)
        self.exec_block(self.module.body, self.module_env)
        if walk_functions:
            self.walk_functions()

    def walk_functions(self, only: set[str] | None = None) -> None:
        """Walk the functions (recording their calls); `only`: just these top-level definitions
        (a class's name covers its methods), for a file read as a caller of the checked ones."""
        if self.functions_walked:
            return
        self.functions_walked = True
        done: set[int] = set()
        while self._queue:
            fn, cls = self._queue.pop(0)
            if id(fn) in done:
                continue
            done.add(id(fn))
            if only is not None:
                owner = cls.node if cls is not None else fn
                if owner.name.value not in only:
                    continue
            self.walk_function(fn, cls, record=True)

    def enter_scope(self, node) -> ScopeInfo:
        info = self.scopes.get(id(node))
        if info is None:
            info = self.scopes[id(node)] = ScopeInfo(node)
        return info

    def scope_info(self, node) -> ScopeInfo:
        return self.scopes.get(id(node)) or ScopeInfo(node)

    def code_for(self, node) -> str:
        """Source text of an expression (a condition's key); names and attributes cost nothing."""
        text = dotted(node)
        if text is not None:
            return text
        key = id(node)
        if key not in self._texts:
            self._texts[key] = " ".join(self.module.code_for_node(node).split())
        return self._texts[key]

    # -------------------------------------------------------------- statements
    def exec_block(self, statements, env: Env) -> bool:
        """Run statements in order; True when the block always leaves (return/raise/exit)."""
        for statement in statements:
            if self.exec_statement(statement, env):
                return True
        return False

    def exec_statement(self, node, env: Env) -> bool:
        if isinstance(node, cst.SimpleStatementLine):
            for small in node.body:
                if self.exec_small(small, env):
                    return True
            return False
        if isinstance(node, cst.If):
            return self._exec_if(node, env)
        if isinstance(node, (cst.For, cst.While)):
            self._exec_loop(node, env)
            return False
        if isinstance(node, cst.With):
            for item in node.items:
                values = self.eval(item.item, env)
                if item.asname is not None:
                    self.assign(item.asname.name, values, env)
            return self.exec_block(_body(node.body), env)
        if isinstance(node, (cst.Try, getattr(cst, "TryStar", cst.Try))):
            return self._exec_try(node, env)
        if isinstance(node, cst.FunctionDef):
            self.define_defaults(node, env)
            env.names[node.name.value] = (Value(FUNCTION, node, cls=None, interp=self),)
            self._queue.append((node, None))
            return False
        if isinstance(node, cst.ClassDef):
            cls = self.define_class(node, env)
            for item in _function_body(node):
                if isinstance(item, cst.FunctionDef):
                    self._queue.append((item, cls))
            env.names[node.name.value] = (cls,)
            return False
        if isinstance(node, cst.Match):
            branches = []
            for case in node.cases:
                branch = env.copy()
                if not self.exec_block(_body(case.body), branch):
                    branches.append(branch)
            branches.append(env.copy())
            env.merge_from(branches)
            return False
        return False

    def exec_small(self, node, env: Env) -> bool:
        if isinstance(node, cst.Assign):
            values = self.eval(node.value, env)
            for target in node.targets:
                self.assign(target.target, values, env)
        elif isinstance(node, cst.AnnAssign):
            if node.value is not None:
                self.assign(node.target, self.eval(node.value, env), env)
            elif isinstance(node.target, (cst.Name, cst.Attribute)):
                typed = self.instance_of_annotation(node.annotation, env)
                if typed and (env.lookup(dotted(node.target) or "") or ()) in ((), unknown()):
                    self.assign(node.target, typed, env)  # `self.args: ModelArguments` declares what it holds
        elif isinstance(node, cst.AugAssign):
            self.eval(node.value, env)
        elif isinstance(node, cst.Expr):
            self.eval(node.value, env)
            if isinstance(node.value, cst.Call) and dotted(node.value.func) in TERMINATING_CALLS:
                return True
        elif isinstance(node, cst.Return):
            values = self.eval(node.value, env) if node.value is not None else const(None)
            if self._returns is not None:
                self._returns.append(values)
            if self.return_envs is not None:
                self.return_envs.append(env.copy())
            return True
        elif isinstance(node, cst.Raise):
            return True
        elif isinstance(node, cst.Assert):
            self.narrow(node.test, env, True)
        elif isinstance(node, (cst.Import, cst.ImportFrom)):
            self._import(node, env)
        return False

    def _import(self, node, env: Env) -> None:
        local = None
        if self.project is not None and self.path is not None:
            local = self.project.import_bindings(self.path, node)
        if local is not None:
            for name, values in local:
                env.names[name] = values
            return
        for name, qualname in import_bindings(node):
            env.names[name] = (Value(REF, qualname=qualname),)

    def _exec_if(self, node: cst.If, env: Env) -> bool:
        taken = _known_truth(self.eval(node.test, env))
        if taken is True:  # `if merge_peft:` with merge_peft=True passed in: only that branch runs
            return self.exec_block(_body(node.body), env)
        if taken is False:
            if isinstance(node.orelse, cst.If):
                return self._exec_if(node.orelse, env)
            if isinstance(node.orelse, cst.Else):
                return self.exec_block(_body(node.orelse.body), env)
            return False
        before = env.guarded_ids()
        outer = self.branch_tests
        self.branch_tests = (*outer, id(node))
        then_env = env.copy()
        self.narrow(node.test, then_env, True)
        then_left = self.exec_block(_body(node.body), then_env)
        else_env = env.copy()
        self.narrow(node.test, else_env, False)
        else_left = False
        if isinstance(node.orelse, cst.If):
            else_left = self._exec_if(node.orelse, else_env)
        elif isinstance(node.orelse, cst.Else):
            else_left = self.exec_block(_body(node.orelse.body), else_env)
        self.branch_tests = outer
        conditions.mark(then_env, before, lambda: conditions.literals(self.code_for, node.test, True))
        conditions.mark(else_env, before, lambda: conditions.literals(self.code_for, node.test, False))
        branches = [b for b, left in ((then_env, then_left), (else_env, else_left)) if not left]
        if not branches:
            return True
        env.merge_from(branches)
        return False

    def _exec_loop(self, node, env: Env) -> None:
        body_env = env.copy()
        if isinstance(node, cst.For):
            iterated = self.eval(node.iter, env)
            self.assign(node.target, unknown(), body_env)
            library.apply_parameter_loop(self, node, iterated, env, body_env)
        else:
            self.eval(node.test, env)
        self.exec_block(_body(node.body), body_env)
        env.merge_from([env.copy(), body_env])
        if node.orelse is not None:
            self.exec_block(_body(node.orelse.body), env)

    def _exec_try(self, node, env: Env) -> bool:
        """A handler starts from the state before the body for the names bound before it (the call
        that raised did not finish: `try: m = load(m) except: m = wrap(m)` wraps the unloaded model),
        and from the body's end for names the body introduced."""
        before = env.copy()
        left = self.exec_block(_body(node.body), env)
        if not left and node.orelse is not None:
            left = self.exec_block(_body(node.orelse.body), env)
        branches = [] if left else [env.copy()]
        for handler in node.handlers:
            branch = env.copy()
            branch.names.update(before.names)
            if handler.name is not None:
                self.assign(handler.name.name, unknown(), branch)
            if not self.exec_block(_body(handler.body), branch):
                branches.append(branch)
        if node.finalbody is not None:
            for branch in branches or [env]:
                self.exec_block(_body(node.finalbody.body), branch)
        if not branches:
            return True
        env.merge_from(branches)
        return False

    def narrow(self, test, env: Env, holds: bool) -> None:
        """What a branch knows: its condition (correlated branches), and `isinstance(x, PeftModel)`."""
        conditions.prune(env, lambda: conditions.literals(self.code_for, test, holds))
        self._narrow_isinstance(test, env, holds)

    def _narrow_isinstance(self, test, env: Env, holds: bool) -> None:
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            self._narrow_isinstance(test.expression, env, not holds)
            return
        if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And) and holds:
            self._narrow_isinstance(test.left, env, True)
            self._narrow_isinstance(test.right, env, True)
            return
        if not (isinstance(test, cst.Call) and dotted(test.func) == "isinstance" and len(test.args) == 2):
            return
        key = dotted(test.args[0].value)
        classes = self.eval(test.args[1].value, env)
        if key is None or not classes or not all(
            v.kind == REF and v.get("qualname", "").startswith("peft.PeftModel") for v in classes
        ):
            return
        values = env.lookup(key)
        if values is None:
            values = self.eval(test.args[0].value, env)
        if not values:
            return
        if holds:
            kept = [v.derive(maybe=False) if v.get("maybe") else v for v in values if v.kind == PEFT_MODEL]
            if len(kept) < len(values) and any(v.kind in (UNKNOWN, PARAM) for v in values):
                kept.append(Value(PEFT_MODEL, test, via="isinstance", base=(), config=(), trainable=None))
        else:
            kept = [v for v in values if v.kind != PEFT_MODEL]
        # no value passes the test: no path runs this branch; the name keeps its values, as `maybe` (no path)
        env.names[key] = tuple(kept) or tuple(v.derive(maybe=True) for v in values)

    def assign(self, target, values: Values, env: Env) -> None:
        if isinstance(target, cst.Name):
            env.names[target.value] = values
        elif isinstance(target, cst.Attribute):
            key = dotted(target)
            owner = self.eval(target.value, env)
            if key is not None:
                env.names[key] = values
            for value in owner:
                if value.kind == SELF and value.get("cls") is not None:
                    self.store_field(value.get("cls"), target.attr.value, values)
                else:
                    library.set_attribute(self, env, value, target.attr.value, values)
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = [e.value for e in target.elements]
            items = None
            if values and all(v.kind == TUPLE and len(v.get("items")) == len(elements) for v in values) and not any(
                    isinstance(e, cst.StarredElement) for e in target.elements):
                # one tuple per path (a helper with several `return a, b`): each name gets its item on every path
                items = [union(*(v.get("items")[index] for v in values)) for index in range(len(elements))]
            for index, element in enumerate(elements):
                self.assign(element, items[index] if items is not None else unknown(), env)
        elif isinstance(target, cst.Subscript):
            self.eval(target.value, env)
            self._store_item(target, values, env)

    # ------------------------------------------------------------- expressions
    def eval(self, node, env: Env) -> Values:
        if node is None:
            return unknown()
        if isinstance(node, cst.Name):
            if node.value in ("True", "False", "None"):
                return const({"True": True, "False": False, "None": None}[node.value])
            found = env.lookup(node.value)
            if found is None and self.project is not None and self.path is not None:
                found = self.project.lookup_own(self.path, node.value)  # a definition read in pieces
            if found is None:
                return (Value(REF, qualname=node.value, builtin=True),)
            return self._resolve_locals(found)
        if isinstance(node, cst.Attribute):
            return self._eval_attribute(node, env)
        if isinstance(node, cst.Call):
            return self.eval_call(node, env)
        if isinstance(node, cst.SimpleString):
            text = string_value(node)
            return const(text) if isinstance(text, str) else unknown()
        if isinstance(node, cst.ConcatenatedString):
            text = node.evaluated_value
            return const(text) if isinstance(text, str) else unknown()
        if isinstance(node, cst.Integer):
            text = node.value
            return const(int(text) if text.isdigit() else node.evaluated_value)
        if isinstance(node, cst.Float):
            try:
                return const(float(node.value.replace("_", "")))
            except ValueError:
                return unknown()
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            return self._eval_sequence(node, env)
        if isinstance(node, cst.Dict):
            return self._eval_dict(node, env)
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            return self._eval_comprehension(node, env)
        if isinstance(node, cst.UnaryOperation):
            inner = self.eval(node.expression, env)
            if isinstance(node.operator, cst.Not):
                value = const_value(inner)
                if value is MISSING:
                    return unknown()
                if any(v.get("default") for v in inner):  # `not args.no_x`: still only the default run's value
                    return (Value(CONST, node, value=not value, default=True),)
                return const(not value)
            return unknown()
        if isinstance(node, cst.IfExp):
            taken = _known_truth(self.eval(node.test, env))  # as for an if statement: a known test picks a side
            if taken is not None:
                return self.eval(node.body if taken else node.orelse, env)
            return union(self.eval(node.body, env), self.eval(node.orelse, env))
        if isinstance(node, cst.BooleanOperation):
            return union(self.eval(node.left, env), self.eval(node.right, env))
        if isinstance(node, cst.Subscript):
            return self._eval_subscript(node, env)
        if isinstance(node, cst.NamedExpr):
            values = self.eval(node.value, env)
            self.assign(node.target, values, env)
            return values
        if isinstance(node, cst.Await):
            return self.eval(node.expression, env)
        if isinstance(node, (cst.BinaryOperation, cst.Comparison)):
            for child in node.children:
                if isinstance(child, cst.BaseExpression):
                    self.eval(child, env)
            return unknown()
        return unknown()

    def _eval_comprehension(self, node, env: Env) -> Values:
        """`[p for p in model.parameters() if p.requires_grad]`: a selection of the model's parameters,
        so an optimizer built from it knows its model."""
        selected = tuple(v for v in self.eval(node.for_in.iter, env) if v.kind == PARAMS)
        return selected or unknown()

    def _resolve_locals(self, values: Values) -> Values:
        """A name imported from the project's own module stands for what that module bound."""
        if self.project is None or not any(v.kind == LOCAL and v.get("name") for v in values):
            return values
        out = []
        for value in values:
            if value.kind == LOCAL and value.get("name"):
                out.append(self.project.resolve_local(value) or unknown())
            else:
                out.append((value,))
        return union(*out)

    def _eval_attribute(self, node: cst.Attribute, env: Env) -> Values:
        key = dotted(node)
        if key is not None:
            found = env.lookup(key)
            if found is not None:
                return self._resolve_locals(found)
        base = self.eval(node.value, env)
        results = []
        attr = node.attr.value
        for value in base:
            if value.kind == REF:
                results.append((Value(REF, qualname=f"{value.get('qualname')}.{attr}",
                                      builtin=value.get("builtin", False)),))
            elif value.kind == LOCAL and self.project is not None:
                results.append(self.project.lookup(value.get("module"), attr) or unknown())
            elif value.kind == SELF and value.get("cls") is not None:
                results.append(self.read_field(value, attr) or unknown())
            else:
                results.append((library.attribute_of(value, attr, node) or UNKNOWN_VALUE,))
        return union(*results)

    def _eval_sequence(self, node, env: Env) -> Values:
        items = [self.eval(e.value, env) for e in node.elements]
        literal = [const_value(v) for v in items]
        if all(v is not MISSING for v in literal) and not any(
            isinstance(e, cst.StarredElement) for e in node.elements
        ):
            return const(tuple(literal) if isinstance(node, cst.Tuple) else list(literal))
        if isinstance(node, cst.Tuple):
            return (Value(TUPLE, node, items=items),)
        return unknown()

    def _eval_dict(self, node: cst.Dict, env: Env) -> Values:
        result = {}
        entries = {}
        complete = True
        for element in node.elements:
            if isinstance(element, cst.DictElement):
                key = const_value(self.eval(element.key, env))
                values = self.eval(element.value, env)
                if isinstance(key, str):
                    result[key] = const_value(values)
                    entries[key] = values
                else:
                    complete = False
            else:
                self.eval(element.value, env)
                complete = False
        return (Value(CONST, node, value=result, complete=complete, entries=entries),)

    def _store_item(self, target: cst.Subscript, values: Values, env: Env) -> None:
        """`kwargs["quantization_config"] = cfg` on a dict literal: later `f(**kwargs)` passes it."""
        key = dotted(target.value)
        held = env.lookup(key) if key is not None else None
        if not held or len(held) > MAX_DICT_PATHS or not all(
                v.kind == CONST and v.get("entries") is not None for v in held):
            return  # not a dict literal, or one assigned on so many paths that tracking it would explode
        if len(target.slice) != 1 or not isinstance(target.slice[0].slice, cst.Index):
            return
        item = const_value(self.eval(target.slice[0].slice.value, env))
        if not isinstance(item, str):
            return
        env.names[key] = tuple(v.derive(value={**v.get("value"), item: const_value(values)},
                                        entries={**v.get("entries"), item: values}) for v in held)

    @staticmethod
    def _spread_kwargs(values: Values, kwargs: dict[str, Values]) -> None:
        """`f(**kwargs)` of dict literals: each key they hold is passed, its values one per path
        (None on a path whose dict lacks it, unknown on a path whose dict is not known here); keys passed
        by name win, as Python would raise otherwise."""
        dicts = [v for v in values if v.kind == CONST and v.get("entries") is not None]
        if not dicts:
            return
        others = unknown() if len(dicts) != len(values) else ()
        for key in {key for d in dicts for key in d.get("entries")} - kwargs.keys():
            kwargs[key] = union(*(d.get("entries").get(key) or const(None) for d in dicts), others)

    def _eval_subscript(self, node: cst.Subscript, env: Env) -> Values:
        base = self.eval(node.value, env)
        if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            index = const_value(self.eval(node.slice[0].slice.value, env))
            if isinstance(index, int) and len(base) == 1 and base[0].kind == TUPLE:
                items = base[0].get("items")
                if -len(items) <= index < len(items):
                    return items[index]
            dispatched = self._dispatch_entry(base, index)
            if dispatched:
                return dispatched
        return library.item_of(base)

    def _dispatch_entry(self, base: Values, key) -> Values:
        """`HANDLERS[name]` on a dict literal of the project's functions or classes (a dispatch table):
        the entry a known key names, else every entry, since the key picks one at run time."""
        tables = [v for v in base if v.kind == CONST and v.get("entries") and v.get("complete")]
        if len(tables) != len(base) or not tables:
            return ()
        picked = []
        for table in tables:
            entries = table.get("entries")
            chosen = [entries[key]] if isinstance(key, str) and key in entries else list(entries.values())
            resolved = [self._resolve_locals(values) for values in chosen]
            if not all(v.kind in (FUNCTION, CLASS) for values in resolved for v in values):
                return ()
            picked.extend(resolved)
        return union(*picked)

    def eval_call(self, node: cst.Call, env: Env) -> Values:
        func = node.func
        receiver: Values = ()
        method = None
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            key = dotted(func)
            looked_up = env.lookup(key) if key is not None else None
            if looked_up is not None:
                callee = self._resolve_locals(looked_up)
            else:
                receiver = self.eval(func.value, env)
                callee = None
                if receiver and all(v.kind == LOCAL for v in receiver) and self.project is not None:
                    callee = union(*(self.project.lookup(v.get("module"), method) or unknown() for v in receiver))
                    receiver = ()
        else:
            callee = self.eval(func, env)
            models = tuple(v for v in callee if v.kind in (BASE_MODEL, PEFT_MODEL))
            pipelines = tuple(v for v in callee if v.kind == HF_PIPELINE)
            if models:  # `model(**inputs)`: a forward pass, recorded as the method `__call__`
                receiver, method = models, "__call__"
            elif pipelines:  # `pipe(prompt)`: the pipeline runs its model (a generate() for generation tasks)
                receiver, method = library.pipeline_run(pipelines)
        args: list[Values] = []
        kwargs: dict[str, Values] = {}
        star_kwargs = False
        unpacked: list[Values] = []
        for arg in node.args:
            values = self.eval(arg.value, env)
            if arg.keyword is not None:
                kwargs[arg.keyword.value] = values
            elif arg.star:
                star_kwargs = True
                unpacked.append(values)
                if arg.star == "**":
                    self._spread_kwargs(values, kwargs)
            else:
                args.append(values)

        name = None
        if callee is None:
            refs = [v for v in receiver if v.kind == REF]
            if refs and len(refs) == len(receiver) and len({r.get("qualname") for r in refs}) == 1:
                name = f"{refs[0].get('qualname')}.{method}"
                receiver = ()
        else:
            refs = [v for v in callee if v.kind == REF]
            if refs and len(refs) == len(callee):
                name = refs[0].get("qualname")
        event = CallEvent(node, name or f".{method}", method, receiver, args, kwargs, star_kwargs, (),
                          self._scope, unpacked=tuple(unpacked), branches=self.branch_tests)
        if self.project is not None:
            self.project.node_paths[id(node)] = self.path
        if name is not None:
            result = library.call_named(self, event, env)
        elif callee is not None:
            result = self.call_local(callee, event, env)
        else:
            result = self._call_method(event, env)
        event.result = result if result else unknown()
        if all(v.kind == UNKNOWN for v in event.result) and any(
                v.kind in OPAQUE_INPUTS for values in (*args, *kwargs.values()) for v in values):
            event.result = (Value(UNKNOWN, node),)  # an object built from a model or an optimizer: trackable
        if self._recording:
            self.events.append(event)
        return event.result

    def _call_method(self, event: CallEvent, env: Env) -> Values:
        """`x.m(...)`: the project's own method when x is a local instance or class, else the library's."""
        results = []
        library_receivers = []
        for value in event.receiver:
            local = self.call_method_of(value, event.method, event, env)
            if local is not None:
                results.append(local)
            elif value.kind == CLASS and (value.get("library_base") or event.method in library.MODEL_CONSTRUCTORS):
                results.append(self._library_classmethod(value, event, env))
            else:
                library_receivers.append(value)
        if library_receivers or not results:
            saved = event.receiver
            event.receiver = tuple(library_receivers)
            results.append(library.call_method(self, event, env))
            event.receiver = saved
        return union(*results)

    def _library_classmethod(self, cls: Value, event: CallEvent, env: Env) -> Values:
        """`MyModel.from_pretrained(...)` on a local subclass: the library call, named by the local class."""
        top = (cls.get("library_base") or "transformers").split(".")[0]  # `from_pretrained`: a model class
        result = self.call_library_as(f"{top}.{cls.get('name')}.{event.method}", event, env)
        if has_fresh_head(cls):
            result = tuple(v.derive(head=True) if v.kind == BASE_MODEL and not v.get("head") else v
                           for v in result)
        return result

    # --------------------------------------------------------------- effects
    def mark_backward(self) -> None:
        self.file_backward = True
        self.enter_scope(self._scope).backward = True

    def mark_grad_scaler(self) -> None:
        self.file_grad_scaler = True
        self.enter_scope(self._scope).grad_scaler = True

    def mutate(self, env: Env, old: Value, new: Value) -> None:
        """An in-place change (`model.half()`, a cast loop): names holding `old` now hold `new`."""
        env.replace(old, new)
        if self._mutations is not None:
            self._mutations.append((old, new))


def _known_truth(values: Values):
    """True/False when a test is a literal on every path (not a field's default, which the command
    line may change); None when it may go either way."""
    if not values or any(v.kind != CONST or v.get("default") for v in values):
        return None
    truths = set()
    for value in values:
        literal = value.get("value")
        if isinstance(literal, dict) and not value.get("complete", True):
            return None
        truths.add(bool(literal))
    return truths.pop() if len(truths) == 1 else None


def string_value(node: cst.SimpleString):
    """A string literal's value without libcst's `evaluated_value` (an `ast.literal_eval`, a compile per
    string): the body between the quotes, escapes decoded as Python does; None for bytes."""
    raw = node.value
    prefix = raw[:len(raw) - len(raw.lstrip("rRuUbB"))].lower()
    if "b" in prefix:
        return None
    text = raw[len(prefix):]
    quote = text[:3] if text[:3] in ('"""', "'''") else text[:1]
    body = text[len(quote):-len(quote)]
    if "r" in prefix or "\\" not in body:
        return body
    try:
        return codecs.decode(body.encode("latin-1", "backslashreplace"), "unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return None  # an escape Python itself rejects




__all__ = ["CallEvent", "Env", "Interpreter", "ScopeInfo", "CONST", "TUNER"]
