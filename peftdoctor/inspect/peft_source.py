"""What the installed peft knows, read from its source files: never imported.

Importing peft pulls in torch and transformers (seconds); parsing two or three
of its files with `ast` takes milliseconds and answers the same questions:
its version, its PEFT types and the fields of a config class.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

# Types every peft release since 0.10 knows; used when peft is not installed.
FALLBACK_PEFT_TYPES = frozenset({
    "PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "LORA", "ADALORA", "BOFT",
    "ADAPTION_PROMPT", "IA3", "LOHA", "LOKR", "OFT", "POLY", "LN_TUNING", "VERA", "FOURIERFT", "XLORA",
    "HRA", "VBLORA", "CPT", "BONE", "RANDLORA", "TRAINABLE_TOKENS", "C3A", "ROAD", "SHIRA", "MISS",
})


@functools.lru_cache(maxsize=1)
def peft_root() -> Path | None:
    """The folder of the installed peft package, found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("peft")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "__init__.py").is_file() else None


@functools.lru_cache(maxsize=1)
def installed_version() -> str | None:
    root = peft_root()
    if root is None:
        return None
    try:
        text = (root / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    return match.group(1) if match else None


@functools.lru_cache(maxsize=16)
def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def known_peft_types() -> frozenset[str]:
    """Members of the installed peft's PeftType enum (the fallback list without peft)."""
    root = peft_root()
    tree = _parse(root / "utils" / "peft_types.py") if root else None
    if tree is None:
        return FALLBACK_PEFT_TYPES
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "PeftType":
            names = {
                target.id
                for item in node.body if isinstance(item, ast.Assign)
                for target in item.targets if isinstance(target, ast.Name)
            }
            return frozenset(names) or FALLBACK_PEFT_TYPES
    return FALLBACK_PEFT_TYPES


def config_fields(peft_type: str) -> frozenset[str] | None:
    """Dataclass fields of the config class for `peft_type`, or None when unknown."""
    root = peft_root()
    if root is None:
        return None
    folder = peft_type.lower()
    module = root / "tuners" / folder / "config.py"
    class_name = _config_class_name(module, folder)
    if class_name is None:
        return None
    fields = _class_fields(module, class_name, root, depth=0)
    return frozenset(fields) if fields else None


def _config_class_name(module: Path, folder: str) -> str | None:
    tree = _parse(module)
    if tree is None:
        return None
    wanted = folder.replace("_", "") + "config"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.lower() == wanted:
            return node.name
    return None


def _class_fields(module: Path, class_name: str, root: Path, depth: int) -> set[str]:
    """Annotated fields of `class_name` and of its bases, following `from x import y`."""
    tree = _parse(module)
    if tree is None or depth > 6:
        return set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            fields = {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
            for base in node.bases:
                if isinstance(base, ast.Name):
                    source = _where_defined(tree, module, base.id, root)
                    if source is not None:
                        fields |= _class_fields(source, base.id, root, depth + 1)
            return fields
    source = _where_defined(tree, module, class_name, root)
    if source is not None and source != module:
        return _class_fields(source, class_name, root, depth + 1)
    return set()


def _where_defined(tree: ast.Module, module: Path, name: str, root: Path) -> Path | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            if node.level:
                base = module.parent
                for _ in range(node.level - 1):
                    base = base.parent
            elif node.module and node.module.split(".")[0] == "peft":
                base = root.parent
            else:
                return None
            target = base.joinpath(*(node.module or "").split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    return candidate
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string: '0.21.2.dev0+abc' -> (0, 21, 2)."""
    parts = []
    for piece in re.split(r"[.+-]", str(text)):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)
