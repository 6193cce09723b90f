"""Find the adapter's base model on this machine (a folder or the HF cache), never the network."""

from __future__ import annotations

import json
import os
from pathlib import Path


def resolve_base(name, adapter_dir: Path) -> Path | None:
    """The local folder (with a config.json) of base model `name`, or None.

    A relative folder name is tried against the working directory, then the
    adapter folder and each of its parents, so a repository can name a base
    relative to its root. A hub id is looked up in the local HF cache only.
    """
    if not isinstance(name, str) or not name.strip():
        return None
    candidates = [Path(name).expanduser()]
    if not Path(name).is_absolute():
        start = adapter_dir.resolve()
        candidates += [folder / name for folder in (start, *start.parents)]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    return _from_hf_cache(name)


def _hub_cache() -> Path:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _from_hf_cache(name: str, revision: str | None = None) -> Path | None:
    parts = name.strip("/").split("/")
    if not 1 <= len(parts) <= 2 or any(not p or p in (".", "..") for p in parts):
        return None
    repo = _hub_cache() / ("models--" + "--".join(parts))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        ref = (repo / "refs" / (revision or "main")).read_text(encoding="utf-8").strip()
    except OSError:
        ref = revision or ""
    if ref and (snapshots / ref / "config.json").is_file():
        return snapshots / ref
    try:
        for snapshot in sorted(snapshots.iterdir()):
            if (snapshot / "config.json").is_file():
                return snapshot
    except OSError:
        pass
    return None


def base_vocab_size(base_dir: Path) -> int | None:
    """vocab_size from the base's config.json (or its text_config), when readable."""
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    for table in (config, config.get("text_config") or {}):
        value = table.get("vocab_size") if isinstance(table, dict) else None
        if type(value) is int and value > 0:
            return value
    return None
