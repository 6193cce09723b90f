"""argparse as the facts see it: the options a script declares and what `parse_args()` gives on a run
that passes none of them (each option's default, marked `default`, as dataclass fields are: the command
line may set another, so a branch on one is not pruned, while a call given one reads the default run).

A switch (an option whose default is True or False: `store_true`, `store_false`, `type=bool`) is not known:
a script passes `is_trainable=args.do_train` and trains under `if args.do_train:`, so its default would pair
a value of the run without the flag with a path of the run with it."""

from __future__ import annotations

from peftdoctor.facts.values import ARG_PARSER, CONST, MISSING, NAMESPACE, TUPLE, Value, Values, const_value, unknown

SWITCH_ACTIONS = ("store_true", "store_false")
CONVERTERS = {"int": int, "float": float}  # type= applied to a string default, as argparse does


def new_parser(event) -> Values:
    """`argparse.ArgumentParser(...)`: no options yet. Groups share the parser's options (`options` is one
    dict, filled in place), since an option added to a group is the parser's."""
    return (Value(ARG_PARSER, event.node, items=[], options={}),)


def parser_method(event, parser: Value, method: str) -> Values:
    options = parser.get("options")
    if method == "add_argument":
        dest = _dest(event)
        if dest is not None:
            options[dest] = _default(event)
        return unknown()
    if method in ("add_argument_group", "add_mutually_exclusive_group"):
        return (Value(ARG_PARSER, event.node, items=[], options=options),)
    if method == "set_defaults":
        for key, values in event.kwargs.items():
            options[key] = _marked(values)
        return unknown()
    if method in ("parse_args", "parse_intermixed_args"):
        return (Value(NAMESPACE, event.node, options=options),)
    if method in ("parse_known_args", "parse_known_intermixed_args"):
        return (Value(TUPLE, event.node, items=[(Value(NAMESPACE, event.node, options=options),), unknown()]),)
    return unknown()


def option_value(namespace: Value, name: str) -> Value | None:
    """`args.name`: the option's default (one value), or None when it is not declared or not known here."""
    found = (namespace.get("options") or {}).get(name)
    return found[0] if found and len(found) == 1 else None


def _dest(event) -> str | None:
    """The attribute an option is stored in: dest=, else the first long flag (dashes to underscores), else
    the first short flag, else a positional's name."""
    given = const_value(event.kwargs.get("dest", ()), None) if "dest" in event.kwargs else None
    if isinstance(given, str):
        return given
    flags = [const_value(values, None) for values in event.args]
    if not flags or not all(isinstance(flag, str) for flag in flags):
        return None
    long = [flag for flag in flags if flag.startswith("--")]
    chosen = long[0] if long else flags[0]
    return chosen.lstrip("-").replace("-", "_") or None


def _default(event) -> Values:
    """What the option holds on a run that does not pass it."""
    flags = [const_value(values, None) for values in event.args]
    if flags and isinstance(flags[0], str) and not flags[0].startswith("-"):
        return unknown()  # a positional: always given
    if "default" in event.kwargs:
        default = event.kwargs["default"]
        converter = CONVERTERS.get(_type_name(event))
        literal = const_value(default, MISSING)
        if converter is not None and isinstance(literal, str):
            try:
                return _marked((Value(CONST, value=converter(literal)),))
            except ValueError:
                return unknown()
        return _marked(default)
    if const_value(event.kwargs.get("required", ()), False) is True:
        return unknown()
    if const_value(event.kwargs.get("action", ()), None) in SWITCH_ACTIONS:
        return unknown()  # a switch: see the module docstring
    return _marked((Value(CONST, value=None),))


def _type_name(event) -> str | None:
    for value in event.kwargs.get("type", ()):
        if value.get("builtin"):
            return value.get("qualname")
    return None


def _marked(values: Values) -> Values:
    if any(v.kind == CONST and isinstance(v.get("value"), bool) for v in values):
        return unknown()  # a switch: see the module docstring
    return tuple(v.derive(default=True) if v.kind == CONST else v for v in values)
