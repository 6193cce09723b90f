"""A small flow-sensitive walk over one module that records what each name holds.

Statements run in order; `if`/`try`/loops run each branch from a copy of the
environment and merge the results, so a name holds one value per path. Calls
are recorded as `CallEvent`s with the values of their receiver and arguments at
that point. Functions defined in the file are walked once each (their
parameters unknown), and a call to one yields what its `return`s hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from peftdoctor.facts import library
from peftdoctor.facts.names import dotted, import_bindings
from peftdoctor.facts.values import (
    CLASS,
    CONST,
    FUNCTION,
    MISSING,
    PARAM,
    PEFT_MODEL,
    REF,
    SELF,
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

TERMINATING_CALLS = {"sys.exit", "exit", "quit", "os._exit"}


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
    callees: tuple = ()  # the FunctionDefs of this file the call may run

    def arg(self, index: int, keyword: str | None = None) -> Values | None:
        if keyword is not None and keyword in self.kwargs:
            return self.kwargs[keyword]
        if index is not None and index < len(self.args):
            return self.args[index]
        return None


class Env:
    """Name -> values, with the module's names behind a function's own."""

    def __init__(self, parent: "Env | None" = None, names: dict | None = None):
        self.parent = parent
        self.names: dict[str, Values] = dict(names or {})

    def lookup(self, name: str) -> Values | None:
        if name in self.names:
            return self.names[name]
        return self.parent.lookup(name) if self.parent else None

    def copy(self) -> "Env":
        return Env(self.parent, self.names)

    def replace(self, old: Value, new: Value) -> None:
        """Every local name that may hold `old` now holds `new` (an in-place change)."""
        for key, values in self.names.items():
            if any(v is old for v in values):
                self.names[key] = tuple(new if v is old else v for v in values)

    def merge_from(self, branches: list["Env"]) -> None:
        keys = set()
        for branch in branches:
            keys.update(branch.names)
        merged = {}
        for key in keys:
            merged[key] = union(*(b.names[key] for b in branches if key in b.names))
        self.names = merged


@dataclass
class ScopeInfo:
    node: object
    backward: bool = False  # a .backward() call happens in this scope
    grad_scaler: bool = False  # a GradScaler is created in this scope


class Interpreter:
    def __init__(self, module: cst.Module):
        self.module = module
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
        self.module_env = Env()

    # ----------------------------------------------------------------- driving
    def run(self) -> None:
        self._enter_scope(self.module)
        self.exec_block(self.module.body, self.module_env)
        done: set[int] = set()
        while self._queue:
            fn, cls = self._queue.pop(0)
            if id(fn) in done:
                continue
            done.add(id(fn))
            self._walk_function(fn, cls, record=True)

    def _enter_scope(self, node) -> ScopeInfo:
        info = self.scopes.get(id(node))
        if info is None:
            info = self.scopes[id(node)] = ScopeInfo(node)
        return info

    def scope_info(self, node) -> ScopeInfo:
        return self.scopes.get(id(node)) or ScopeInfo(node)

    def _walk_function(self, fn: cst.FunctionDef, cls: Value | None, record: bool) -> Values:
        env = Env(self.module_env)
        params = fn.params
        positional = [*params.posonly_params, *params.params]
        is_method = cls is not None and not _is_static(fn)
        for index, param in enumerate([*positional, *params.kwonly_params]):
            if index == 0 and is_method:
                env.names[param.name.value] = (Value(SELF, cls=cls),)
            elif index < len(positional):
                env.names[param.name.value] = (Value(PARAM, index=index - is_method, name=param.name.value),)
            else:
                env.names[param.name.value] = (Value(PARAM, index=None, name=param.name.value),)
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                env.names[star.name.value] = unknown()
        saved = (self._returns, self._recording, self._scope)
        self._returns, self._recording, self._scope = [], record, fn
        if record:
            self._enter_scope(fn)
        try:
            self.exec_block(fn.body.body if isinstance(fn.body, cst.IndentedBlock) else [fn.body], env)
            returns = union(*self._returns) if self._returns else const(None)
        finally:
            self._returns, self._recording, self._scope = saved
        return returns

    def summary(self, fn: cst.FunctionDef, cls: Value | None) -> Values:
        """What a call of a local function returns (walked once, without recording)."""
        key = id(fn)
        if key in self._summaries:
            return self._summaries[key]
        if key in self._in_progress:
            return unknown()
        self._in_progress.add(key)
        try:
            result = self._walk_function(fn, cls, record=False)
        finally:
            self._in_progress.discard(key)
        self._summaries[key] = result
        return result

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
            env.names[node.name.value] = (Value(FUNCTION, node, cls=None),)
            self._queue.append((node, None))
            return False
        if isinstance(node, cst.ClassDef):
            cls = Value(CLASS, node, name=node.name.value, methods={})
            for item in _body(node.body):
                if isinstance(item, cst.FunctionDef):
                    cls.attrs["methods"][item.name.value] = item
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
            return True
        elif isinstance(node, cst.Raise):
            return True
        elif isinstance(node, cst.Assert):
            self.narrow(node.test, env, True)
        elif isinstance(node, (cst.Import, cst.ImportFrom)):
            for local, qualname in import_bindings(node):
                env.names[local] = (Value(REF, qualname=qualname),)
        return False

    def _exec_if(self, node: cst.If, env: Env) -> bool:
        self.eval(node.test, env)
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
        before = env.copy()
        left = self.exec_block(_body(node.body), env)
        if not left and node.orelse is not None:
            left = self.exec_block(_body(node.orelse.body), env)
        branches = [] if left else [env.copy()]
        for handler in node.handlers:
            branch = before.copy()
            if not left:
                branch.merge_from([before, env])
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
        """`isinstance(model, PeftModel)` tells which values a name can hold in a branch."""
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            self.narrow(test.expression, env, not holds)
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
        if not values:
            return
        kept = tuple(v for v in values if (v.kind == PEFT_MODEL) == holds or v.kind in (UNKNOWN, PARAM))
        env.names[key] = kept or values

    def assign(self, target, values: Values, env: Env) -> None:
        if isinstance(target, cst.Name):
            env.names[target.value] = values
        elif isinstance(target, cst.Attribute):
            key = dotted(target)
            if key is not None:
                env.names[key] = values
            else:
                self.eval(target.value, env)
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = [e.value for e in target.elements]
            items = None
            if len(values) == 1 and values[0].kind == TUPLE:
                candidate = values[0].get("items")
                if len(candidate) == len(elements) and not any(
                    isinstance(e, cst.StarredElement) for e in target.elements
                ):
                    items = candidate
            for index, element in enumerate(elements):
                self.assign(element, items[index] if items is not None else unknown(), env)
        elif isinstance(target, cst.Subscript):
            self.eval(target.value, env)

    # ------------------------------------------------------------- expressions
    def eval(self, node, env: Env) -> Values:
        if node is None:
            return unknown()
        if isinstance(node, cst.Name):
            if node.value in ("True", "False", "None"):
                return const({"True": True, "False": False, "None": None}[node.value])
            found = env.lookup(node.value)
            return found if found is not None else (Value(REF, qualname=node.value, builtin=True),)
        if isinstance(node, cst.Attribute):
            return self._eval_attribute(node, env)
        if isinstance(node, cst.Call):
            return self.eval_call(node, env)
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            text = node.evaluated_value
            return const(text) if isinstance(text, str) else unknown()
        if isinstance(node, (cst.Integer, cst.Float)):
            return const(node.evaluated_value)
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            return self._eval_sequence(node, env)
        if isinstance(node, cst.Dict):
            return self._eval_dict(node, env)
        if isinstance(node, cst.UnaryOperation):
            inner = self.eval(node.expression, env)
            if isinstance(node.operator, cst.Not):
                value = const_value(inner)
                return const(not value) if value is not MISSING else unknown()
            return unknown()
        if isinstance(node, cst.IfExp):
            self.eval(node.test, env)
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

    def _eval_attribute(self, node: cst.Attribute, env: Env) -> Values:
        key = dotted(node)
        if key is not None:
            found = env.lookup(key)
            if found is not None:
                return found
        base = self.eval(node.value, env)
        results = []
        for value in base:
            if value.kind == REF:
                results.append(Value(REF, qualname=f"{value.get('qualname')}.{node.attr.value}",
                                     builtin=value.get("builtin", False)))
            else:
                results.append(library.attribute_of(value, node.attr.value) or UNKNOWN_VALUE)
        return union(results)

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
        complete = True
        for element in node.elements:
            if isinstance(element, cst.DictElement):
                key = const_value(self.eval(element.key, env))
                value = const_value(self.eval(element.value, env))
                if isinstance(key, str):
                    result[key] = value
                else:
                    complete = False
            else:
                self.eval(element.value, env)
                complete = False
        return (Value(CONST, node, value=result, complete=complete),)

    def _eval_subscript(self, node: cst.Subscript, env: Env) -> Values:
        base = self.eval(node.value, env)
        if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            index = const_value(self.eval(node.slice[0].slice.value, env))
            if isinstance(index, int) and len(base) == 1 and base[0].kind == TUPLE:
                items = base[0].get("items")
                if -len(items) <= index < len(items):
                    return items[index]
        return unknown()

    def eval_call(self, node: cst.Call, env: Env) -> Values:
        func = node.func
        receiver: Values = ()
        method = None
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            key = dotted(func)
            looked_up = env.lookup(key) if key is not None else None
            if looked_up is not None:
                callee = looked_up
            else:
                receiver = self.eval(func.value, env)
                callee = None
        else:
            callee = self.eval(func, env)
        args: list[Values] = []
        kwargs: dict[str, Values] = {}
        star_kwargs = False
        for arg in node.args:
            values = self.eval(arg.value, env)
            if arg.keyword is not None:
                kwargs[arg.keyword.value] = values
            elif arg.star == "**":
                star_kwargs = True
            elif arg.star == "*":
                star_kwargs = True
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
                          self._scope)
        if name is not None:
            result = library.call_named(self, event, env)
        elif callee is not None:
            result = self._call_local(callee, event)
        else:
            result = library.call_method(self, event, env)
        event.result = result if result else unknown()
        if self._recording:
            self.events.append(event)
        return event.result

    def _call_local(self, callee: Values, event: CallEvent) -> Values:
        results = []
        for value in callee:
            if value.kind == FUNCTION:
                results.append(self._call_function(value.node, value.get("cls"), event))
            else:
                results.append(unknown())
        return union(*results)

    def call_method_of_self(self, receiver: Value, method: str, event: CallEvent) -> Values:
        cls = receiver.get("cls")
        fn = cls.get("methods", {}).get(method) if cls is not None else None
        if fn is None:
            return unknown()
        return self._call_function(fn, cls, event)

    def _call_function(self, fn: cst.FunctionDef, cls: Value | None, event: CallEvent) -> Values:
        """What the call returns, with the function's parameters replaced by this call's arguments."""
        event.callees = (*event.callees, fn)
        results = []
        for value in self.summary(fn, cls):
            if value.kind == PARAM:
                passed = event.arg(value.get("index"), value.get("name"))
                results.append(passed if passed is not None else unknown())
            else:
                results.append((value,))
        return union(*results)

    # --------------------------------------------------------------- effects
    def mark_backward(self) -> None:
        self.file_backward = True
        self._enter_scope(self._scope).backward = True

    def mark_grad_scaler(self) -> None:
        self.file_grad_scaler = True
        self._enter_scope(self._scope).grad_scaler = True

    def mutate(self, env: Env, old: Value, new: Value) -> None:
        """An in-place change (`model.half()`, a cast loop): names holding `old` now hold `new`."""
        env.replace(old, new)


def _body(block):
    if isinstance(block, cst.IndentedBlock):
        return block.body
    if isinstance(block, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(body=block.body)]
    return getattr(block, "body", [])


def _is_static(fn: cst.FunctionDef) -> bool:
    return any(dotted(d.decorator) == "staticmethod" for d in fn.decorators)


__all__ = ["CallEvent", "Env", "Interpreter", "ScopeInfo", "CONST"]
