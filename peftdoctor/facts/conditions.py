"""Path conditions: which branch a value was made in, so correlated branches stay apart.

A value created or changed inside `if resume:` carries the guard ("resume", True).
Later, inside `if not resume:` (or an `else:` of the same test), values whose guard
says the opposite are dropped: that path cannot reach there. The same holds for
`x is None` / `x is not None` on the same expression, and for each operand of `and`.
Guards are compared by the test's source text, so `args.resume` and `args.resume`
correlate; a name reassigned between the two tests is the one case this gets wrong.
"""

from __future__ import annotations

import libcst as cst

from peftdoctor.facts.env import Env
from peftdoctor.facts.values import GUARDED_KINDS

Literal = tuple[str, bool]


def literals(code_for, test, holds: bool) -> list[Literal]:
    """What is known in the branch where `test` evaluated to `holds`."""
    while isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        test, holds = test.expression, not holds
    if isinstance(test, cst.BooleanOperation):
        conjunction = isinstance(test.operator, cst.And)
        if conjunction == holds:  # `a and b` held, or `a or b` failed: each operand is known
            return literals(code_for, test.left, holds) + literals(code_for, test.right, holds)
        return [(_text(code_for, test), holds)]
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        target = test.comparisons[0]
        if isinstance(target.comparator, cst.Name) and target.comparator.value == "None":
            if isinstance(target.operator, (cst.Is, cst.Equal)):
                return [(_text(code_for, test.left), not holds)]
            if isinstance(target.operator, (cst.IsNot, cst.NotEqual)):
                return [(_text(code_for, test.left), holds)]
    return [(_text(code_for, test), holds)]


def _text(code_for, node) -> str:
    return code_for(node)


def mark(branch: Env, before_ids: set[int], known) -> None:
    """Values the branch created or changed carry the branch's condition from now on.
    `known` computes the condition's literals, only when some value needs them."""
    if not any(id(v) not in before_ids and v.kind in GUARDED_KINDS
               for values in branch.names.values() for v in values):
        return
    guard = frozenset(known())
    if not guard:
        return
    derived: dict[int, object] = {}
    for key, values in branch.names.items():
        changed = False
        out = []
        for value in values:
            if id(value) not in before_ids and value.kind in GUARDED_KINDS:
                new = derived.get(id(value))
                if new is None:
                    new = derived[id(value)] = value.derive(guard=(value.get("guard") or frozenset()) | guard)
                out.append(new)
                changed = True
            else:
                out.append(value)
        if changed:
            branch.names[key] = tuple(out)


def prune(env: Env, known) -> None:
    """Drop values made under the opposite of what is known here (never a name's last value).
    `known` computes the condition's literals, only when some value carries a guard."""
    if not any("guard" in v.attrs for values in env.names.values() for v in values):  # (attrs: read often)
        return
    opposite = {(text, not holds) for text, holds in known()}
    for key, values in env.names.items():
        kept = tuple(v for v in values if not (v.get("guard") and v.get("guard") & opposite))
        if kept and len(kept) != len(values):
            env.names[key] = kept
