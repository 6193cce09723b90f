"""Find the adapter's base model on this machine (a folder or the HF cache), never the network."""

from __future__ import annotations

import os
from pathlib import Path

from peftdoctor import regular_file


def resolve_base(name, adapter_dir: Path) -> Path | None:
    """The local folder (with a config.json) of base model `name`, or None.

    A relative folder name is tried against the working directory, then the
    adapter folder and each of its parents, so a repository can name a base
    relative to its root. A hub id is looked up in the local HF cache only.
    """
    if not isinstance(name, str) or not name.strip():
        return None
    candidates = [folder for folder in (_expand(name),) if folder is not None]
    if not Path(name).is_absolute():
        start = adapter_dir.resolve()
        candidates += [folder / name for folder in (start, *start.parents)]
    for candidate in candidates:
        if _is_file(candidate / "config.json"):
            return candidate
    return _from_hf_cache(name)


def _is_file(path: Path) -> bool:
    """Path.is_file, but a name the OS refuses (longer than its limit: ENAMETOOLONG) or cannot check is not
    there: the name comes from a downloaded config."""
    try:
        return path.is_file()
    except OSError:
        return False


def _expand(path: str) -> Path | None:
    """`path` with ~ expanded; None when it starts with ~ and there is no home directory (no HOME, no passwd
    entry: containers), where Path.expanduser raises RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return None


def _hub_cache() -> Path | None:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return _expand(os.environ[variable])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    folder = _expand(home)
    return folder / "hub" if folder is not None else None


def _from_hf_cache(name: str, revision: str | None = None) -> Path | None:
    parts = name.strip("/").split("/")
    if not 1 <= len(parts) <= 2 or any(not p or p in (".", "..") for p in parts):
        return None
    cache = _hub_cache()
    if cache is None:
        return None
    repo = cache / ("models--" + "--".join(parts))
    snapshots = repo / "snapshots"
    try:
        if not snapshots.is_dir():
            return None
    except OSError:  # a name over the OS's limit
        return None
    try:
        ref = regular_file.read_text(repo / "refs" / (revision or "main")).strip()
    except OSError:
        ref = revision or ""
    if ref and _is_file(snapshots / ref / "config.json"):
        return snapshots / ref
    try:
        for snapshot in sorted(snapshots.iterdir()):
            if _is_file(snapshot / "config.json"):
                return snapshot
    except OSError:
        pass
    return None


def base_vocab_size(base_dir: Path) -> int | None:
    """vocab_size from the base's config.json (or its text_config), when readable."""
    try:
        config = regular_file.parse_json(regular_file.read_text(base_dir / "config.json"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    for table in (config, config.get("text_config") or {}):
        value = table.get("vocab_size") if isinstance(table, dict) else None
        if type(value) is int and value > 0:
            return value
    return None
