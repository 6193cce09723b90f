"""Qualified names through every import form, canonicalised per library.

`from peft.peft_model import PeftModel as PM` and `import peft as p; p.PeftModel`
both become `peft.PeftModel`; torch keeps its full path (torch.cuda.amp.GradScaler).
"""

from __future__ import annotations

import libcst as cst

# Libraries whose public names are re-exported at the top level: submodule
# paths are dropped so every spelling maps to one name.
FLAT_LIBRARIES = {"peft", "transformers", "trl", "accelerate", "bitsandbytes", "unsloth"}


def canonical(qualname: str) -> str:
    parts = qualname.split(".")
    top = parts[0]
    if top not in FLAT_LIBRARIES or len(parts) <= 2:
        return qualname
    for index, part in enumerate(parts[1:], 1):
        if part[:1].isupper():
            return ".".join([top, *parts[index:]])
    return f"{top}.{parts[-1]}"


def dotted(node: cst.BaseExpression) -> str | None:
    """`a.b.c` for a chain of names and attributes, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


def import_bindings(node: cst.Import | cst.ImportFrom) -> list[tuple[str, str]]:
    """(local name, canonical qualified name) for each name an import statement binds."""
    bindings: list[tuple[str, str]] = []
    if isinstance(node, cst.Import):
        for alias in node.names:
            full = dotted(alias.name) or ""
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                bindings.append((alias.asname.name.value, canonical(full)))
            else:
                top = full.split(".")[0]
                bindings.append((top, top))
        return bindings
    if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
        return bindings
    module = dotted(node.module) or ""
    for alias in node.names:
        name = dotted(alias.name) or ""
        local = name
        if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
            local = alias.asname.name.value
        bindings.append((local, canonical(f"{module}.{name}")))
    return bindings
