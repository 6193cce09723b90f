"""Name -> values at one point of a walk, with the module's names behind a function's own."""

from __future__ import annotations

from peftdoctor.facts.values import GUARDED_KINDS, Value, Values, union


class Env:
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

    def guarded_ids(self) -> set[int]:
        """The values a branch may later be told apart from (see conditions.py)."""
        return {id(v) for values in self.names.values() for v in values if v.kind in GUARDED_KINDS}

    def merge_from(self, branches: list["Env"]) -> None:
        if len(branches) == 1:
            self.names = dict(branches[0].names)
            return
        merged: dict[str, Values] = {}
        for branch in branches:
            for key, values in branch.names.items():
                seen = merged.get(key)
                if seen is None:
                    merged[key] = values
                elif seen is not values:  # most names are untouched by the branches: same tuple
                    merged[key] = union(seen, values)
        self.names = merged
