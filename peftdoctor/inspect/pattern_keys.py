"""peft's rank_pattern / alpha_pattern rule, matched in near-linear time.

peft applies to a module the first key (in the config's order) for which
`re.match(rf"(.*\\.)?({key})$", module)` holds. The keys come from a
downloaded adapter_config.json, so trying every key as a regex on every
module is both quadratic (7,143 keys x 100,000 tensors) and open to ReDoS.
Here a plain key (a dotted module path) is a dictionary lookup of the
module's dotted suffixes; only the other keys are regexes, each checked by
regex_unbounded and regex_steps first, and their total number of tries is capped. Where a
key cannot be tried within these bounds the answer is UNKNOWN, never a guess,
and never dependent on the machine's speed.
"""

from __future__ import annotations

import re

from peftdoctor.inspect.base_checks import MAX_NAME_CHARS, regex_steps, regex_unbounded

# A key made of module-path characters only. Its dots are read as literal dots: peft's regex also lets a dot
# match any other character, which a key naming a dotted module path does not rely on.
PLAIN_KEY = re.compile(r"[\w.\-]+")
# Most regex tries (regex keys x modules) one config may cost.
MAX_REGEX_TRIES = 100_000
# Most backtracking steps one key may cost on a name of MAX_NAME_CHARS (regex_steps): a real key costs under
# 10,000; branches or bounded repetitions in sequence ((a|aa)(a|aa)...) cost exponentially more, past any bound.
MAX_KEY_STEPS = 100_000


class _Unknown:
    """No answer within the bounds (an unsafe or too costly regex key)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class PatternKeys:
    """The keys of one rank_pattern or alpha_pattern, ready to be matched against `modules`."""

    def __init__(self, patterns: dict, modules):
        self.modules = list(modules)
        self.plain: dict[str, int] = {}  # key -> its position in the config
        self.regexes: list[tuple[int, str, re.Pattern | None]] = []  # None: not safe to try
        for order, key in enumerate(patterns):
            if not isinstance(key, str):
                continue
            if PLAIN_KEY.fullmatch(key):
                self.plain.setdefault(key, order)
            else:
                self.regexes.append((order, key, _compile(key)))
        self.regexes_affordable = len(self.regexes) * len(self.modules) <= MAX_REGEX_TRIES

    def key_for(self, module: str):
        """The key peft applies to `module`: a key, None (no key matches) or UNKNOWN."""
        if not self.plain and not self.regexes:
            return None
        if "\n" in module or len(module) > MAX_NAME_CHARS:
            return UNKNOWN
        best = min(((self.plain[suffix], suffix) for suffix in _suffixes(module) if suffix in self.plain),
                   default=None)
        for order, key, compiled in self.regexes:
            if best is not None and order > best[0]:
                break
            if compiled is None or not self.regexes_affordable:
                return UNKNOWN
            if compiled.match(module):
                return key
        return best[1] if best else None

    def unmatched(self) -> list[str]:
        """The keys that certainly match none of the modules, in the config's order."""
        suffixes = {suffix for module in self.modules for suffix in _suffixes(module)}
        found = [(order, key) for key, order in self.plain.items() if key not in suffixes]
        if self.regexes_affordable and all("\n" not in m and len(m) <= MAX_NAME_CHARS for m in self.modules):
            found += [(order, key) for order, key, compiled in self.regexes
                      if compiled is not None and not any(compiled.match(m) for m in self.modules)]
        return [key for _, key in sorted(found)]


def _suffixes(module: str) -> list[str]:
    """'a.b.c' -> ['a.b.c', 'b.c', 'c']: the names peft's `(.*\\.)?` prefix leaves to a key."""
    parts = module.split(".")
    return [".".join(parts[start:]) for start in range(len(parts))]


def _compile(key: str) -> re.Pattern | None:
    """peft's template around `key`, or None when matching it could take unbounded time or it is invalid."""
    if regex_unbounded(key, max_unbounded=1):  # peft's `.*` is the second
        return None
    if regex_steps(key, MAX_NAME_CHARS, cap=MAX_KEY_STEPS) > MAX_KEY_STEPS:
        return None
    try:
        return re.compile(rf"(.*\.)?({key})$")
    except (re.error, RecursionError, OverflowError):
        return None
