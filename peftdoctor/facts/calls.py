"""Calls of the project's own functions and classes, in this module or another.

A call is answered in one of two ways:
- *inlined*: when an argument carries something peftdoctor tracks (a model, a
  tokenizer, a peft config, a flag), the callee is walked again with this call's
  values bound to its parameters, and its defaults where none is passed. Its calls
  are recorded as events of the callee's file, so a rule sees, inside a helper,
  what the caller gave it. What the callee changes in place (a resize, an added
  token, a freeze) flows back to the caller.
- *summarised*: otherwise the callee's one walk with unknown parameters gives what
  it returns, a returned parameter replaced by the argument passed for it.
Depth, recursion and a per-run budget bound the inlined walks.
"""

from __future__ import annotations

import libcst as cst

from peftdoctor.facts import library
from peftdoctor.facts.env import Env
from peftdoctor.facts.names import dotted
from peftdoctor.facts.values import (
    ACCELERATOR,
    BASE_MODEL,
    CLASS,
    CONST,
    DIFFUSERS_MODEL,
    FUNCTION,
    GUARDED_KINDS,
    LOCAL,
    NAMESPACE,
    OPTIMIZER,
    PARAM,
    PEFT_CONFIG,
    PEFT_MODEL,
    QUANT_CONFIG,
    REF,
    SELF,
    TOKENIZER,
    TRAINER,
    TRAINING_ARGS,
    TUNER,
    UNKNOWN,
    UNKNOWN_VALUE,
    VOCAB,
    Value,
    Values,
    const,
    union,
    unknown,
)

MAX_INLINE_DEPTH = 4
# Argument kinds worth a context-sensitive walk of the callee.
TRACKED_KINDS = frozenset({
    BASE_MODEL, PEFT_MODEL, PEFT_CONFIG, TOKENIZER, TRAINING_ARGS, TRAINER, OPTIMIZER, ACCELERATOR, TUNER, VOCAB,
    SELF, QUANT_CONFIG, DIFFUSERS_MODEL, NAMESPACE,
})


class LocalCalls:
    """Mixed into Interpreter: everything about calling code of the checked project."""

    # ------------------------------------------------------------ dispatch
    def call_local(self, callee: Values, event, env: Env) -> Values:
        results = []
        for value in callee:
            if value.kind == FUNCTION:
                results.append(self.call_function(value, event, env))
            elif value.kind == CLASS:
                results.append(self.instantiate(value, event, env))
            else:
                results.append(library.call_value(self, value, event))
        return union(*results)

    def call_method_of(self, receiver: Value, method: str, event, env: Env) -> Values | None:
        """`obj.m(...)` on an instance of a local class, or `Cls.m(...)`; None when not local code."""
        if receiver.kind == SELF:
            cls, bound = receiver.get("cls"), receiver
        elif receiver.kind == CLASS:
            cls, bound = receiver, None
        else:
            return None
        found = find_method(cls, method)
        if found is None:
            return self._call_stored_callable(receiver, method, event, env) if bound is not None else None
        owner_cls, fn = found
        fn_value = Value(FUNCTION, fn, cls=owner_cls, interp=owner_cls.get("interp"))
        if bound is None and not (_decorated(fn, "staticmethod") or _decorated(fn, "classmethod")):
            return self.call_function(fn_value, event, env, skip_self=False)
        return self.call_function(fn_value, event, env, bound_self=bound)

    def _call_stored_callable(self, instance: Value, name: str, event, env: Env) -> Values | None:
        """`self.step_fn(...)` where `self.step_fn = train_lora` was stored: the stored function or class is
        called (unbound, as Python does for a function held in an instance attribute)."""
        stored = self.read_field(instance, name)
        callables = tuple(v for v in stored or () if v.kind in (FUNCTION, CLASS))
        return self.call_local(callables, event, env) if callables else None

    def instantiate(self, cls: Value, event, env: Env) -> Values:
        """`MyClass(...)`: a local subclass of a library class acts as that class; else an instance."""
        library = cls.get("library_base")
        if library is not None:
            for name in (f"{library.split('.')[0]}.{cls.get('name')}", library):
                result = self.call_library_as(name, event, env)
                if result and any(v.kind != UNKNOWN for v in result):
                    return result
            return unknown()
        found = find_method(cls, "__init__")
        if found is None:
            return (Value(SELF, event.node, cls=cls, state=_fields_passed(cls, event)),)
        instance = Value(SELF, event.node, cls=cls, state={})
        owner_cls, fn = found
        holder = Env(None, {"instance": (instance,)})  # catches the instance as __init__ leaves it
        self.call_function(Value(FUNCTION, fn, cls=owner_cls, interp=owner_cls.get("interp")), event, holder,
                           bound_self=instance)
        return holder.names["instance"]

    def call_library_as(self, name: str, event, env: Env) -> Values:
        """What the library call `name` does with this call's arguments (a local class acting as one)."""
        from peftdoctor.facts import library

        saved = event.name
        event.name = name
        try:
            return library.call_named(self, event, env)
        finally:
            event.name = saved

    # ------------------------------------------------------------ functions
    def call_function(self, fn_value: Value, event, env: Env, bound_self: Value | None = None,
                      skip_self: bool = True) -> Values:
        owner = fn_value.get("interp") or self
        fn = fn_value.node
        cls = fn_value.get("cls")
        event.callees = (*event.callees, fn)
        if self._worth_inlining(owner, fn, cls, event, bound_self):
            return owner.inline(fn, cls, event, env, self, bound_self, skip_self)
        results = []
        for value in owner.summary(fn, cls):
            if value.kind == PARAM:
                passed = event.arg(value.get("index"), value.get("name"))
                results.append(passed if passed is not None else unknown())
            elif value.kind in (BASE_MODEL, PEFT_MODEL):
                results.append((value.derive(),))  # each call makes its own model object
            else:
                results.append((value,))
        return union(*results)

    def returned(self) -> Values:
        """What the walk's `return`s give. Several returns that disagree on whether a PeftModel comes
        back pick one by the arguments (`if name == "base": return base`): each is only a maybe."""
        if not self._returns:
            return ()
        wraps = {any(v.kind == PEFT_MODEL for v in values) for values in self._returns}
        merged = union(*self._returns)
        if len(wraps) > 1:
            return tuple(mark_maybe(v) for v in merged)
        return merged

    def _worth_inlining(self, owner, fn, cls, event, bound_self) -> bool:
        if not owner.can_matter(fn, cls):
            return False  # nothing in it creates, wraps, trains, saves or merges a model: its summary will do
        project = self.project
        budget_left = project.inline_budget > 0 if project is not None else self._local_budget > 0
        if not budget_left or len(self.inline_stack) >= MAX_INLINE_DEPTH or fn in self.inline_stack:
            return False
        if not self._recording:
            return False  # inside a summary walk, summaries all the way down: linear cost
        if bound_self is not None and (_holds_tracked(bound_self) or fn.name.value == "__init__"):
            return True  # a constructor, or a method of an instance that holds a model along this path
        if self._uses_a_default(fn, event):
            return True
        passed = [*event.args, *event.kwargs.values()]
        return any(v.kind in TRACKED_KINDS or (v.kind == CONST and isinstance(v.get("value"), bool))
                   for values in passed for v in values)

    def can_matter(self, fn: cst.FunctionDef, cls: Value | None = None) -> bool:
        """Whether a function's text mentions something the facts model (library.RELEVANT_IN_DEFINITIONS):
        found once per function. Others are answered by their summary, never walked again per call."""
        from peftdoctor.facts.library import RELEVANT_IN_DEFINITIONS

        if self.project is not None and self.path is not None:
            relevant = self.project.relevant_functions(self.path)
            if relevant is not None:
                return (cls.get("name") if cls is not None else None, fn.name.value) in relevant or \
                    (cls is not None and (None, fn.name.value) in relevant)
        key = id(fn)
        found = self._relevance.get(key)
        if found is None:  # a file checked alone: the function's own text
            text = self.module.code_for_node(fn.body)
            found = self._relevance[key] = any(word in text for word in RELEVANT_IN_DEFINITIONS)
        return found

    def _uses_a_default(self, fn: cst.FunctionDef, event) -> bool:
        """The call leaves out a parameter whose default is a literal the callee may decide on."""
        if event.star_kwargs:
            return False
        positional = [*fn.params.posonly_params, *fn.params.params]
        offset = 1 if positional and positional[0].name.value in ("self", "cls") else 0
        for index, param in enumerate([*positional[offset:], *fn.params.kwonly_params]):
            if param.default is None or param.name.value in event.kwargs:
                continue
            if index < len(positional) - offset and index < len(event.args):
                continue
            default = self.defaults.get(id(param)) or ()
            if any(v.kind == CONST and (v.get("value") is None or isinstance(v.get("value"), (bool, list)))
                   for v in default):
                return True
        return False

    def inline(self, fn: cst.FunctionDef, cls: Value | None, event, caller_env: Env, caller,
               bound_self: Value | None, skip_self: bool) -> Values:
        """Walk `fn` (of this module) with the call's values; record its events; return what it returns."""
        if self.project is not None:
            self.project.inline_budget -= 1
        else:
            self._local_budget -= 1
        env = Env(self.module_env)
        self.bind_arguments(fn, cls, env, event, bound_self, skip_self)
        if bound_self is None and not skip_self and _self_name(fn) is not None:
            passed = env.names.get(_self_name(fn)) or ()  # `Base.__init__(self, ...)`: the instance passed
            if len(passed) == 1 and passed[0].kind == SELF:
                bound_self = passed[0]
        stack = caller.inline_stack + (fn,)
        saved = (self._returns, self._recording, self._scope, self.inline_stack, self._mutations, self.return_envs)
        self._returns, self._recording, self._scope, self.inline_stack, self._mutations = [], True, fn, stack, []
        self.return_envs = []
        self.enter_scope(fn)
        try:
            if not self.exec_block(_function_body(fn), env):
                self.return_envs.append(env)
            returns = self.returned() or unknown()
            mutations = self._mutations
            exits = self.return_envs
        finally:
            (self._returns, self._recording, self._scope, self.inline_stack, self._mutations,
             self.return_envs) = saved
        for old, new in mutations:  # in-place changes reach the caller's names
            caller.mutate(caller_env, old, new)
        if bound_self is not None and bound_self.kind == SELF:
            updated = _instance_after(bound_self, fn, exits)
            if updated is not bound_self:
                caller.mutate(caller_env, bound_self, updated)
        return tuple(v if v.kind != PARAM else UNKNOWN_VALUE for v in returns)

    def bind_arguments(self, fn, cls, env: Env, event, bound_self, skip_self) -> None:
        params = fn.params
        positional = [*params.posonly_params, *params.params]
        has_self = cls is not None and skip_self and not _decorated(fn, "staticmethod")
        offset = 1 if has_self else 0
        if has_self and positional:
            first = positional[0].name.value
            if _decorated(fn, "classmethod"):
                env.names[first] = (cls,)
            else:
                env.names[first] = (bound_self or Value(SELF, cls=cls),)
        for index, param in enumerate(positional[offset:]):
            passed = event.arg(index, param.name.value)
            env.names[param.name.value] = passed if passed is not None else self._default(param, event)
        for param in params.kwonly_params:
            passed = event.kwargs.get(param.name.value)
            env.names[param.name.value] = passed if passed is not None else self._default(param, event)
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                env.names[star.name.value] = unknown()

    def _default(self, param: cst.Param, event) -> Values:
        if param.default is None or event.star_kwargs:
            return unknown()
        return self.defaults.get(id(param)) or unknown()

    def define_defaults(self, fn: cst.FunctionDef, env: Env) -> None:
        """Defaults are evaluated once, where the function is defined, as Python does."""
        params = fn.params
        for param in (*params.posonly_params, *params.params, *params.kwonly_params):
            if param.default is not None:
                self.defaults[id(param)] = self.eval(param.default, env)

    def _parameter(self, param: cst.Param, index) -> Values:
        """A parameter in the walk with no caller: whatever is passed, or its default when that is
        tracked, or an instance of the config class it is annotated with."""
        value = (Value(PARAM, index=index, name=param.name.value),)
        default = self.defaults.get(id(param)) or ()
        if any(v.kind in TRACKED_KINDS for v in default):
            value = union(value, default)
        typed = self.instance_of_annotation(param.annotation, self.module_env)
        return union(value, typed) if typed else value

    def summary(self, fn: cst.FunctionDef, cls: Value | None) -> Values:
        """What a call of a function of this module returns (walked once, without recording)."""
        key = id(fn)
        if key in self._summaries:
            return self._summaries[key]
        if key in self._in_progress:
            return unknown()
        self._in_progress.add(key)
        try:
            result = self.walk_function(fn, cls, record=False)
        finally:
            self._in_progress.discard(key)
        self._summaries[key] = result
        return result

    def walk_function(self, fn: cst.FunctionDef, cls: Value | None, record: bool) -> Values:
        """One walk with the parameters unknown (PARAM values)."""
        env = Env(self.module_env)
        params = fn.params
        positional = [*params.posonly_params, *params.params]
        is_method = cls is not None and not _decorated(fn, "staticmethod")
        for index, param in enumerate([*positional, *params.kwonly_params]):
            if index == 0 and is_method:
                env.names[param.name.value] = (cls,) if _decorated(fn, "classmethod") else (Value(SELF, cls=cls),)
            elif index < len(positional):
                env.names[param.name.value] = self._parameter(param, index - is_method)
            else:
                env.names[param.name.value] = self._parameter(param, None)
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                env.names[star.name.value] = unknown()
        saved = (self._returns, self._recording, self._scope, self._mutations, self.return_envs)
        self._returns, self._recording, self._scope, self._mutations, self.return_envs = [], record, fn, None, None
        if record:
            self.enter_scope(fn)
        try:
            self.exec_block(_function_body(fn), env)
            returns = self.returned() or const(None)
        finally:
            self._returns, self._recording, self._scope, self._mutations, self.return_envs = saved
        return returns

    # -------------------------------------------------------------- classes
    def define_class(self, node: cst.ClassDef, env: Env) -> Value:
        bases = [self.eval(arg.value, env) for arg in node.bases if arg.keyword is None]
        cls = Value(CLASS, node, name=node.name.value, methods={}, fields={}, interp=self,
                    bases=tuple(v for values in bases for v in values if v.kind == CLASS),
                    library_base=_library_base(bases))
        class_attrs: dict[str, Values] = {}
        for item in _function_body(node):
            if isinstance(item, cst.FunctionDef):
                cls.attrs["methods"][item.name.value] = item
                self.define_defaults(item, env)
            elif isinstance(item, cst.SimpleStatementLine):
                for small in item.body:
                    self._class_attribute(small, env, class_attrs)
        cls.attrs["class_attrs"] = class_attrs
        return cls

    def _class_attribute(self, small, env: Env, class_attrs: dict) -> None:
        """`x: int = 3` / `x = field(default=...)` in a class body: a dataclass (or pydantic) field's default.
        A field annotated with a config class (`model: ModelConfig`, `bnb: BnbConfig = Field(None)`) may also
        hold an instance of it, its own fields at their defaults: a config file usually fills it in."""
        if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
            declared = self.eval(small.value, env) if small.value is not None else ()
            typed = self.instance_of_annotation(small.annotation, env)
            class_attrs[small.target.value] = union(declared, typed) or unknown()
        elif isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
            class_attrs[small.targets[0].target.value] = self.eval(small.value, env)

    def instance_of_annotation(self, annotation, env: Env) -> Values:
        """`args: ModelArguments` with a local config class (annotated fields: a dataclass, a pydantic
        model): an instance whose fields hold their defaults until something sets them."""
        if annotation is None:
            return ()
        found = []
        for node in _annotated_types(annotation.annotation):
            for value in self.eval(node, env):
                if value.kind == CLASS and is_config_class(value):
                    found.append(Value(SELF, annotation, cls=value, state={}))
        return tuple(found)

    def read_field(self, instance: Value, name: str) -> Values | None:
        """`self.name` not assigned yet in this walk: what the instance holds along this call path,
        else every other method's assignments, marked `field` (they may never run before this one)."""
        state = instance.get("state") or {}
        if name in state:
            return state[name]
        cls = instance.get("cls")
        self.collect_fields(cls, name)
        for owner in _mro(cls):
            stored = owner.get("fields").get(name)
            if stored:
                values = [vals for fn, vals in stored if fn is not self._scope]
                return tuple(mark_maybe(v) for v in union(*values)) if values else None
        return class_default(cls, name)

    def store_field(self, cls: Value, name: str, values: Values) -> None:
        kept = tuple(v if v.kind != PARAM else UNKNOWN_VALUE for v in values)
        cls.get("fields").setdefault(name, []).append((self._scope, kept))

    def collect_fields(self, cls: Value, name: str | None = None) -> None:
        """Walk (once, not recorded) the methods that assign `self.<name>` (all of them when name is None),
        so what they store is known to the others."""
        collected = cls.attrs.setdefault("collected", set())
        for owner in _mro(cls):
            interp = owner.get("interp") or self
            for attr, methods in _assigners(owner).items():
                if name is not None and attr != name:
                    continue
                for fn in methods:
                    if id(fn) not in collected:
                        collected.add(id(fn))
                        interp.summary(fn, owner)


def mark_maybe(value: Value) -> Value:
    """A value that reaches here only on a path the caller cannot confirm (see rules.base.on_some_path)."""
    if value.kind in GUARDED_KINDS and not value.get("maybe"):
        return value.derive(maybe=True)
    return value


def _instance_after(instance: Value, fn, exits: list[Env]) -> Value:
    """The instance with what the method left in `self.x` on every way out of it."""
    self_name = _self_name(fn)
    if self_name is None or not exits:
        return instance
    prefix = self_name + "."
    changed: dict[str, list] = {}
    for exit_env in exits:
        for key, values in exit_env.names.items():
            if key.startswith(prefix) and "." not in key[len(prefix):]:
                changed.setdefault(key[len(prefix):], []).append(values)
    if not changed:
        return instance
    state = dict(instance.get("state") or {})
    for attr, seen in changed.items():
        # a way out that did not assign keeps the old value
        if len(seen) < len(exits):
            seen.append(state.get(attr) or unknown())
        state[attr] = union(*seen)
    return instance.derive(state=state)


def _self_name(fn) -> str | None:
    params = [*fn.params.posonly_params, *fn.params.params]
    return params[0].name.value if params else None


def has_fresh_head(cls: Value) -> bool:
    """The class's `__init__` (or a local base's) makes a new `nn.Linear` task head: assigned to
    `self.<name>`, or `setattr(self, name, ...)`, where the attribute or the class is named as a head."""
    from peftdoctor.facts.library import HEAD_WORDS

    for owner in _mro(cls):
        init = owner.get("methods", {}).get("__init__")
        if init is None:
            continue
        for small in _small_statements(init.body):
            linear, named = None, owner.get("name", "")
            if isinstance(small, cst.Assign) and isinstance(small.value, cst.Call):
                target = small.targets[0].target
                linear = small.value
                named += " " + (target.attr.value if isinstance(target, cst.Attribute) else "")
            elif isinstance(small, cst.Expr) and isinstance(small.value, cst.Call) \
                    and dotted(small.value.func) == "setattr" and len(small.value.args) == 3:
                linear = small.value.args[2].value
                named += " " + (dotted(small.value.args[1].value) or "")
            if isinstance(linear, cst.Call) and (dotted(linear.func) or "").endswith("Linear") \
                    and any(word in named.lower() for word in HEAD_WORDS):
                return True
    return False


def _fields_passed(cls: Value, event) -> dict:
    """`Settings(load_in_4bit=False)` of a config class with the generated constructor (dataclass,
    pydantic): the fields the call sets, by keyword or (dataclass) in declaration order."""
    if not is_config_class(cls):
        return {}
    names = config_fields(cls)
    passed = {name: values for name, values in zip(names, event.args)}
    passed.update((name, values) for name, values in event.kwargs.items() if name in names)
    return passed


def _holds_tracked(instance: Value) -> bool:
    state = instance.get("state") or {}
    return any(v.kind in TRACKED_KINDS and v.kind != SELF for values in state.values() for v in values)


def is_config_class(cls: Value) -> bool:
    """A class with annotated class-level fields (dataclass, pydantic, attrs), itself or a base."""
    return any(isinstance(item, cst.SimpleStatementLine) and any(isinstance(s, cst.AnnAssign) for s in item.body)
               for owner in _mro(cls) for item in _function_body(owner.node))


def config_fields(cls: Value) -> list[str]:
    """The annotated class-level fields of a config class and its bases, base fields first."""
    names: list[str] = []
    for owner in reversed(list(_mro(cls))):
        for item in _function_body(owner.node):
            for small in item.body if isinstance(item, cst.SimpleStatementLine) else ():
                if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) \
                        and small.target.value not in names:
                    names.append(small.target.value)
    return names


def _annotated_types(node) -> list:
    """The types an annotation names: `X`, and X in `Optional[X]`, `Union[X, None]`, `X | None`."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.BitOr):
        return [*_annotated_types(node.left), *_annotated_types(node.right)]
    if isinstance(node, cst.Subscript) and (dotted(node.value) or "").split(".")[-1] in ("Optional", "Union"):
        return [element.slice.value for element in node.slice if isinstance(element.slice, cst.Index)]
    return [node]


def class_default(cls: Value, name: str) -> Values | None:
    """A class-level field's value, marked `default`: the command line or a caller may set another."""
    for owner in _mro(cls):
        found = (owner.get("class_attrs") or {}).get(name)
        if found is not None:
            return tuple(v.derive(default=True) if v.kind == CONST else v for v in found)
    return None


def _assigners(cls: Value) -> dict[str, list]:
    """attr -> the methods of `cls` that assign `self.attr` (found once, by syntax)."""
    found = cls.attrs.get("assigners")
    if found is not None:
        return found
    found = {}
    for fn in cls.get("methods").values():
        self_name = _self_name(fn)
        if self_name is None:
            continue
        for node in _small_statements(fn.body):
            targets = []
            if isinstance(node, cst.Assign):
                targets = [t.target for t in node.targets]
            elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) \
                        and target.value.value == self_name:
                    methods = found.setdefault(target.attr.value, [])
                    if fn not in methods:
                        methods.append(fn)
    cls.attrs["assigners"] = found
    return found


def _small_statements(block):
    """Every simple statement of a block and its nested compound statements (not nested functions):
    statements only, so it costs a fraction of a walk over every expression node."""
    stack = [block]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.SimpleStatementLine):
            yield from current.body
        elif isinstance(current, cst.SimpleStatementSuite):
            yield from current.body
        elif isinstance(current, (cst.IndentedBlock, cst.Module)):
            stack.extend(current.body)
        elif isinstance(current, (cst.FunctionDef, cst.ClassDef)):
            continue
        else:
            for attr in ("body", "orelse", "finalbody"):
                part = getattr(current, attr, None)
                if isinstance(part, (list, tuple)):
                    stack.extend(part)
                elif part is not None:
                    stack.append(part)
            stack.extend(getattr(current, "handlers", ()) or ())
            stack.extend(getattr(current, "cases", ()) or ())


def find_method(cls: Value, name: str):
    for owner in _mro(cls):
        fn = owner.get("methods", {}).get(name)
        if fn is not None:
            return owner, fn
    return None


def _mro(cls: Value):
    seen = set()
    stack = [cls]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(current.get("bases") or ())


# Libraries whose classes peftdoctor models: a local subclass acts as its library class.
MODELLED_LIBRARIES = ("transformers.", "trl.", "peft.")


def _library_base(bases: list[Values]) -> str | None:
    """The modelled library class a local class derives from, directly or through local classes."""
    for values in bases:
        for value in values:
            if value.kind == REF and value.get("qualname", "").startswith(MODELLED_LIBRARIES):
                return value.get("qualname")
            if value.kind == CLASS and value.get("library_base"):
                return value.get("library_base")
    return None


def _decorated(fn: cst.FunctionDef, name: str) -> bool:
    return any(dotted(d.decorator) == name for d in fn.decorators)


def block_statements(block):
    """The statements of a block (an indented block, a one-line suite, or an else/finally clause)."""
    if isinstance(block, cst.IndentedBlock):
        return block.body
    if isinstance(block, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(body=block.body)]
    return getattr(block, "body", [])


def _function_body(node):
    return block_statements(node.body)


__all__ = ["LocalCalls", "LOCAL", "find_method"]
