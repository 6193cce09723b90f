"""Results of `check` kept between runs, so that an unchanged file is not parsed again.

A file's entry is keyed by everything its findings can depend on: peftdoctor's own code, the
settings, the file's text, the text of every module of the project joined to it by imports (the
facts flow both ways across an import: into a helper, and back from a caller), and the pin files
the version-dependent rules read. Editing `utils.py` therefore re-checks the modules that import
it and the ones it imports; a file no import reaches keeps its entry.

The cache lives in `.peftdoctor_cache/` at the project root (a `.gitignore` inside keeps it out
of git), or where `--cache-dir` (`PEFTDOCTOR_CACHE_DIR`) says. Entries are written to a temporary
file and renamed, so concurrent runs never read half an entry; a bad entry is a miss. The folder
is kept under MAX_ENTRIES by dropping the entries least recently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

from peftdoctor.finding import Finding, Severity
from peftdoctor.run_record import note

CACHE_FOLDER = ".peftdoctor_cache"
FORMAT = "1"  # bumped when the entry layout changes
MAX_ENTRIES = 20_000


def default_folder(project_root: Path) -> Path:
    return project_root / CACHE_FOLDER


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def tool_fingerprint() -> str:
    """peftdoctor's version and its own files' sizes and times: an edited checkout drops old entries."""
    from peftdoctor import __version__

    package = Path(__file__).resolve().parent
    stamps = [__version__, FORMAT]
    for path in sorted(package.rglob("*.py")):
        note(path)  # the tool's own code is an input of a recorded run (see run_record)
        note(path.parent)
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}")
    return _digest(*stamps)


def config_fingerprint(config, report_unused_noqa: bool) -> str:
    """The settings that change findings (the config file's location only matters through them)."""
    settings = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "source"}
    settings["root"] = str(config.root) if config.root else None
    settings["report_unused_noqa"] = report_unused_noqa
    return _digest(json.dumps(settings, sort_keys=True, default=str))


class ResultCache:
    """Entries of one cache folder; `get` and `put` take a key made by the caller."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.hits = 0
        self._usable = True
        self._prepared = False

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str):
        """(findings, unused suppressions, lines) stored under `key`, or None."""
        entry = self._entry(key)
        try:
            data = json.loads(entry.read_text(encoding="utf-8"))
            found = ([stored_finding(item) for item in data["findings"]], [stored_finding(item) for item in data["unused"]],
                     int(data["lines"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.utime(entry)  # recently used: kept when the folder is trimmed
        except OSError:
            pass
        self.hits += 1
        return found

    def put(self, key: str, findings, unused, lines: int) -> None:
        if not self._usable:
            return
        data = {"findings": [finding_data(f) for f in findings], "unused": [finding_data(f) for f in unused], "lines": lines}
        entry = self._entry(key)
        try:
            self.prepare()
            entry.parent.mkdir(exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out)
                os.replace(temporary, entry)
            except BaseException:
                os.unlink(temporary)
                raise
        except (OSError, TypeError, ValueError):
            self._usable = False  # a read-only tree, a full disk: check without a cache

    def prepare(self) -> None:
        """The folder with its .gitignore and CACHEDIR.TAG, made once per run (not a stat per entry)."""
        if self._prepared:
            return
        try:
            if (self.folder / ".gitignore").is_file():
                self._prepared = True
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / ".gitignore").write_text("# made by peftdoctor\n*\n", encoding="utf-8")
            (self.folder / "CACHEDIR.TAG").write_text(
                "Signature: 8a477f597d28d172789f06886806bc55\n# peftdoctor's cache; see https://bford.info/cachedir/\n",
                encoding="utf-8")
        except OSError:
            self._usable = False  # a read-only tree: check without a cache
        self._prepared = True

    def trim(self, limit: int = MAX_ENTRIES) -> None:
        """Drop the least recently used entries beyond `limit` (and temporary files a killed run left)."""
        try:
            entries = [path for path in self.folder.glob("??/*.json")]
        except OSError:
            return
        if len(entries) <= limit:
            return
        dated = []
        for path in entries:
            try:
                dated.append((path.stat().st_mtime_ns, path))
            except OSError:
                continue
        dated.sort()
        for _, path in dated[:len(dated) - int(limit * 0.8)]:
            try:
                path.unlink()
            except OSError:
                pass


def finding_data(finding: Finding) -> dict:
    data = asdict(finding)
    data["severity"] = finding.severity.value
    return data


def stored_finding(data: dict) -> Finding:
    data = dict(data)
    data["severity"] = Severity(data["severity"])
    return Finding(**data)


def file_key(*parts: str) -> str:
    return _digest(*parts)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
