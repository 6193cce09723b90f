"""A whole `check` run's answer kept with the state of everything it looked at, so that the same command on
an unchanged tree reads no file and parses nothing: a warm run costs a stat per file and folder.

While a run works out which files to check and their cache keys (see project_run), every file it reads and
every name it probes is noted with its stat (or as absent), and every folder whose entries it lists with the
folder's own stat (an entry added or removed changes the folder's times). Those are all the inputs of the
cache keys, and a file's findings depend only on its key: when every noted stat is unchanged, the keys and so
the findings are unchanged, and the record answers the run.

A stat is trusted only for things that last changed well before the run began: a write in the same clock
tick as the read could leave the same times behind (git's "racy clean" problem), so such a run is not
recorded. Stats are taken before the thing is read; a change during the run then shows as a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

FORMAT = "1"
FOLDER = "runs"
MAX_RECORDS = 32
RACY_NS = 2_000_000_000  # changes this close to the run's start are not trusted to show in the stats

_notes: "_Notes | None" = None


class _Notes:
    """Path -> its stat signature (None when absent), for this process only (a forked worker notes nothing)."""

    def __init__(self):
        self.pid = os.getpid()
        self.start_ns = time.time_ns()
        self.seen: dict[str, tuple | None] = {}


def _signature(path: str) -> tuple | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return (stat.st_mode >> 12, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def note(path) -> None:
    """`path` was (or is about to be) read, probed or listed: its stat now is part of the run's inputs."""
    notes = _notes
    if notes is None or notes.pid != os.getpid():
        return
    key = os.path.abspath(os.fsdecode(path))
    if key not in notes.seen:
        notes.seen[key] = _signature(key)


def start_noting() -> None:
    global _notes
    _notes = _Notes()


def stop_noting() -> "_Notes | None":
    global _notes
    notes, _notes = _notes, None
    return notes


class RunRecord:
    """The record of one command line (its options, the folder it ran in) in a cache folder."""

    def __init__(self, cache_folder: Path, invocation: dict):
        text = json.dumps({"format": FORMAT, "python": sys.version, "cwd": os.getcwd(), **invocation},
                          sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        self.path = cache_folder / FOLDER / f"{digest}.json"

    def replay(self):
        """(CheckResult, the checked and read paths) when every noted input is unchanged; else None."""
        from peftdoctor.cache import stored_finding
        from peftdoctor.finding import CheckResult

        try:
            with open(self.path, encoding="utf-8") as stream:
                data = json.load(stream)
            for path, signature in data["inputs"]:
                if _signature(path) != (tuple(signature) if signature is not None else None):
                    return None
            result = CheckResult([stored_finding(item) for item in data["findings"]], int(data["files"]),
                                 int(data["lines"]), [stored_finding(item) for item in data["unused"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return result, [path for path, signature in data["inputs"] if signature is not None]

    def save(self, notes: "_Notes | None", result) -> None:
        """Keep `result` with the inputs noted; nothing when one of them changed too recently to trust."""
        import tempfile

        from peftdoctor.cache import finding_data

        if notes is None:
            return
        newest = max((max(signature[2], signature[3]) for signature in notes.seen.values() if signature), default=0)
        if newest >= notes.start_ns - RACY_NS:
            return
        data = {"inputs": sorted(notes.seen.items()), "files": result.files_checked, "lines": result.lines_checked,
                "findings": [finding_data(f) for f in result.findings],
                "unused": [finding_data(f) for f in result.unused_suppressions]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
            _trim(self.path.parent)
        except (OSError, TypeError, ValueError):
            pass  # a read-only cache folder: the run is simply not recorded


def _trim(folder: Path) -> None:
    """Keep the MAX_RECORDS most recently written records (one per command line used)."""
    records = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
    for path in records[:-MAX_RECORDS]:
        path.unlink()
