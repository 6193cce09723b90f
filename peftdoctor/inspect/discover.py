"""Turn the PATH arguments into adapter folders.

A PATH is an adapter folder, a folder of several adapters (peft saves every
adapter but "default" in a subfolder named after it), or a training output
folder whose checkpoint-*/ subfolders hold adapters.
"""

from __future__ import annotations

import os
from pathlib import Path

from peftdoctor.inspect.lora_file import DIFFUSERS_WEIGHTS, lora_files

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
MAX_DEPTH = 3
MAX_STEP_DIGITS = 100  # far below int()'s 4,300-digit limit on str conversion


class InputError(Exception):
    """A PATH that does not exist or is not an adapter location (exit status 2)."""


def looks_like_adapter(folder: Path) -> bool:
    """True also for a folder this user may not look into: inspecting it then says so (PD600)."""
    try:
        return any((folder / name).is_file() for name in (*ADAPTER_FILES, DIFFUSERS_WEIGHTS))
    except PermissionError:
        return True


def find_adapters(paths) -> list[Path]:
    """Adapter folders under `paths`, in order; a folder holding none is returned itself.

    The caller then reports PD600 for a returned folder without adapter_config.json.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            exists = path.exists()
        except OSError as exc:  # a folder above it this user may not enter
            raise InputError(f"{raw}: cannot read: {exc.strerror or exc}") from None
        if not exists:
            raise InputError(f"{raw}: no such file or directory")
        if not path.is_dir():  # a file, or a FIFO/device/socket named like one: reported when read
            if path.name not in ADAPTER_FILES and lora_files(path):
                if path not in found:  # a LoRA file given by itself (diffusers, kohya): inspected as one
                    found.append(path)
                continue
            if path.name not in ADAPTER_FILES:
                raise InputError(f"{raw}: not an adapter folder (expected a folder with adapter_config.json)")
            path = path.parent
        adapters = _walk(path, 0)
        for folder in adapters or [path]:
            if folder not in found:
                found.append(folder)
    return found


def _walk(folder: Path, depth: int) -> list[Path]:
    result = [folder] if looks_like_adapter(folder) else []
    if depth >= MAX_DEPTH:
        return result
    try:
        entries = sorted(os.scandir(folder), key=lambda e: _natural_key(e.name))
    except OSError:
        return result
    for entry in entries:
        if entry.name.startswith(".") or entry.name in ("__pycache__", "runs", "logs"):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            result.extend(_walk(Path(entry.path), depth + 1))
    return result


def _natural_key(name: str):
    """checkpoint-500 sorts before checkpoint-1000.

    isdecimal, not isdigit: '²' and '③' are digits that int() refuses; every decimal digit int() reads."""
    head, _, tail = name.rpartition("-")
    return (head, int(tail), "") if tail.isdecimal() and len(tail) <= MAX_STEP_DIGITS else (name, -1, name)
