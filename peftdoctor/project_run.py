"""How a check of many files runs: which files are read together, which come from the cache, on how many cores.

The files of a project fall into parts that no chain of imports joins (see facts/components.py). A
part is read and checked as one project, then dropped before the next, so memory is bounded by the
largest part, not the tree; parts can go to separate processes; and a part whose files are all
unchanged is answered from the cache without being read.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.config import Config
from peftdoctor.engine import (
    CheckResult,
    check_file,
    iter_python_files,
    read_project,
    rule_needles,
)
from peftdoctor.finding import Finding
from peftdoctor.notebook import is_notebook, script_of
from peftdoctor.project_root import project_root_of

# Parts are sent to workers in batches of at least this many files (a process per two-line script
# costs more than it saves).
BATCH_FILES = 40
# Workers only when no batch holds more than this share of the bytes to read: otherwise the largest part
# sets the pace, and starting processes costs more than the rest saves (measured on the practice trees).
WORKER_SHARE = 0.6


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_check(paths, config: Config, report_unused_noqa: bool, cache, jobs: int) -> CheckResult:
    with _few_collections():
        found = list(iter_python_files(paths, config))
        named = {path for path, is_named in found if is_named}
        root = project_root_of(paths)
        parts = _parts(root, found, named, config, report_unused_noqa, with_keys=cache is not None)
        results: dict[Path, CheckResult] = {}
        stale = []
        for part in parts:
            cached = {path: cache.get(part.keys[path]) for path in part.files} if cache is not None else {}
            if cached and all(entry is not None for entry in cached.values()):
                for path, (findings, unused, lines) in cached.items():
                    results[path] = CheckResult(findings, 1, lines, unused)
            else:
                stale.append(part)
        for part, checked in _check_parts(root, stale, config, named, report_unused_noqa, jobs):
            results.update(checked)
            if cache is not None:
                for path, one in checked.items():
                    cache.put(part.keys[path], one.findings, one.unused_suppressions, one.lines_checked)
        if cache is not None and stale:
            cache.trim()
    total = CheckResult()
    for path, _ in found:
        one = results[path]
        total.findings.extend(one.findings)
        total.unused_suppressions.extend(one.unused_suppressions)
        total.files_checked += 1
        total.lines_checked += one.lines_checked
    total.findings.sort(key=Finding.sort_key)
    return total


class _Part:
    """Files found that imports join (in the order found), with their cache keys and their bytes (the work)."""

    def __init__(self):
        self.files: list[Path] = []
        self.keys: dict[Path, str] = {}
        self.size = 0


def _parts(root: Path, found, named: set[Path], config: Config, report_unused_noqa: bool,
           with_keys: bool) -> list[_Part]:
    from peftdoctor.cache import (
        config_fingerprint,
        content_hash,
        file_key,
        tool_fingerprint,
    )
    from peftdoctor.facts.components import import_components
    from peftdoctor.facts.project import Project
    from peftdoctor.versions import pins_fingerprint

    data: dict[Path, bytes] = {}

    def read_text(path: Path) -> str | None:
        try:
            data[path] = regular_file.read_bytes(path)
        except OSError:
            data[path] = b""
            return None
        return script_of(data[path]) if is_notebook(path) else data[path].decode("utf-8", "replace")

    project = Project(root, reader=None)  # import resolution and real paths only
    real = project.real
    texts = {}
    for path, _ in found:
        texts[real(path)] = read_text(real(path)) or ""
    components = import_components(texts, project.resolve, read_text)
    parts: dict[int, _Part] = {}
    for path, _ in found:
        part = parts.setdefault(id(components[real(path)]), _Part())
        part.files.append(path)
        part.size += len(data.get(real(path), b""))
    if with_keys:
        hashes = {path: content_hash(blob) for path, blob in data.items()}
        common = (tool_fingerprint(), str(root))
        pins: dict[Path, str] = {}  # folder -> its pins' fingerprint
        configs: dict[int, tuple] = {}  # id -> (the settings of some files, their fingerprint)
        needles = rule_needles()
        for part in parts.values():
            joined = file_key(*sorted(f"{member}:{hashes[member]}" for member in components[real(part.files[0])]))
            # Pins matter only where a rule can run: a part none of whose files mentions what the rules
            # need is never interpreted (most of a large tree; reading pins per folder is a warm run's cost).
            ruled = any(needle in texts[real(path)] for path in part.files for needle in needles)
            for path in part.files:
                resolved = real(path)
                if ruled and resolved.parent not in pins:
                    pins[resolved.parent] = pins_fingerprint(resolved.parent)
                settings = config.for_path(path)
                if id(settings) not in configs:
                    configs[id(settings)] = (settings, config_fingerprint(settings, report_unused_noqa))
                part.keys[path] = file_key(*common, configs[id(settings)][1], str(path), str(path in named),
                                           hashes[resolved], joined, pins[resolved.parent] if ruled else "")
    return list(parts.values())


def _check_parts(root: Path, parts: list[_Part], config: Config, named: set[Path], report_unused_noqa: bool,
                 jobs: int):
    """(part, {path: CheckResult}) for every part: here, or in `jobs` processes when there is enough to share."""
    batches = _batches(parts)
    sizes = [sum(part.size for part in batch) for batch in batches]
    if jobs > 1 and len(batches) > 1 and max(sizes) < WORKER_SHARE * sum(sizes):
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        try:
            with ProcessPoolExecutor(max_workers=min(jobs, len(batches))) as pool:
                futures = [pool.submit(_check_batch, root, [part.files for part in batch], config,
                                       named & {path for part in batch for path in part.files}, report_unused_noqa)
                           for batch in batches]
                while batches:
                    done = futures.pop(0).result()
                    yield from zip(batches.pop(0), done)
            return
        except (BrokenProcessPool, OSError):
            pass  # a worker died (or none could start): the batches not yet answered are checked here
    for batch in batches:
        yield from zip(batch, _check_batch(root, [part.files for part in batch], config, named, report_unused_noqa))


def _batches(parts: list[_Part]) -> list[list[_Part]]:
    """Parts grouped so that each batch holds at least BATCH_FILES files (the largest parts first)."""
    batches, current, size = [], [], 0
    for part in sorted(parts, key=lambda p: len(p.files), reverse=True):
        current.append(part)
        size += len(part.files)
        if size >= BATCH_FILES:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


def _check_batch(root: Path, parts: list[list[Path]], config: Config, named: set[Path],
                 report_unused_noqa: bool) -> list[dict[Path, CheckResult]]:
    """Each part read as one project, checked, and dropped before the next one is read."""
    out = []
    with _few_collections():
        for files in parts:
            project = read_project(root, files, config, named)
            try:
                out.append({path: check_file(path, config.for_path(path), report_unused_noqa, project,
                                             named=path in named)
                            for path in files})
            finally:
                project.close()
    return out


@contextmanager
def _few_collections():
    """Syntax trees are millions of small objects that live until their part is checked; Python's cyclic
    collector, at its default pace, rescans them again and again (measured: 42% of the CPU time of a
    check of two large repositories, 8% with this). Objects alive before the run are set aside."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
