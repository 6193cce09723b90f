"""Where a checked file's project starts: the one notion of "project" for facts, pins and config."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from peftdoctor.run_record import note

ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


@lru_cache(maxsize=1024)
def find_project_root(path: Path) -> Path:
    """The nearest folder at or above `path` holding a project marker, else the file's own folder.

    A folder named on the command line is its own project only when no marker sits above it;
    the caller decides that (see engine.check_paths).
    """
    path = path.resolve()
    start = path if path.is_dir() else path.parent
    for candidate in (start, *start.parents):
        for marker in ROOT_MARKERS:
            note(candidate / marker)
            if (candidate / marker).exists():
                return candidate
    return start


def project_root_of(paths) -> Path:
    """A single folder checked is the project; otherwise the project root of the first path."""
    given = [Path(p) for p in paths]
    if len(given) == 1:
        note(given[0])
        if given[0].is_dir():
            return given[0].resolve()
    return find_project_root(given[0]) if given else Path.cwd()
