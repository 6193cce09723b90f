"""The static pipeline: paths -> files -> parse once -> facts -> rules -> findings."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import libcst as cst

from peftdoctor import regular_file
from peftdoctor.config import Config
from peftdoctor.finding import CheckResult, Finding, Severity
from peftdoctor.notebook import Notebook, NotebookError, in_cells, is_notebook, read_notebook, script_of
from peftdoctor.project_root import project_root_of
from peftdoctor.registry import Rule, rules_of_kind
from peftdoctor.run_record import note
from peftdoctor.source import decode_source, parse_source
from peftdoctor.suppression import parse_suppressions

SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    "venv",
    ".venv",
    "env",
    "site-packages",
    ".tox",
    ".nox",
    ".eggs",
}


class PathError(Exception):
    """A path given on the command line that does not exist or cannot be read."""


def _is_virtualenv(folder: Path) -> bool:
    note(folder / "pyvenv.cfg")
    return (folder / "pyvenv.cfg").is_file()


def iter_python_files(paths, config: Config | None = None):
    """(path, named) for every .py and .ipynb file under `paths`, skipping VCS, caches, virtualenvs and hidden
    folders (so `.ipynb_checkpoints/` too), and what `.gitignore`/`.ignore` files leave out (see
    peftdoctor.ignore_files) unless the config says not to.

    `named` is True for a file given explicitly (even if a folder walk also meets it): it is always checked
    and reported. A file found by walking is reported only when it concerns peft (see `check_file`); macOS
    AppleDouble files (`._*`, `__MACOSX` folders) are not walked into. Folders are walked in sorted order.
    """
    seen: set[Path] = set()
    named = {Path(raw) for raw in paths if Path(raw).is_file()}
    for raw in paths:
        path = Path(raw)
        note(path)
        if not path.exists():
            raise PathError(f"{raw}: no such file or directory")
        if not path.is_dir():  # a file, or a FIFO/device/socket that check_file refuses by name
            # Named files are excluded too: pre-commit passes every file by name.
            if path not in seen and not (config and config.for_path(path).is_excluded(path)):
                seen.add(path)
                yield path, True
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            raise PathError(f"{raw}: permission denied")
        ignore = _ignore_rules(path, config)
        for root, dirs, files in os.walk(path):
            note(root)
            root_path = Path(root)
            rules = ignore.get(root_path)
            if rules is not None:
                rules = rules.enter(root_path)
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in SKIP_DIRS
                and d != "__MACOSX"
                and not d.startswith(".")
                and not d.endswith(".egg-info")
                and not _is_virtualenv(root_path / d)
                and not (config and config.for_path(root_path / d).is_excluded(root_path / d))
                and not (rules and rules.ignores(root_path / d, is_dir=True))
            )
            if rules is not None:
                ignore.update((root_path / d, rules) for d in dirs)
            for name in sorted(files):
                if name.endswith((".py", ".ipynb")) and not name.startswith("._"):
                    file_path = root_path / name
                    if config and config.for_path(file_path).is_excluded(file_path):
                        continue
                    if rules and rules.ignores(file_path, is_dir=False):
                        continue
                    if file_path not in seen:
                        seen.add(file_path)
                        yield file_path, file_path in named


def _ignore_rules(folder: Path, config: Config | None) -> dict:
    """{folder: IgnoreRules in force above it} for a walk of `folder`; empty when ignore files are not respected."""
    from peftdoctor.ignore_files import IgnoreRules

    if config is not None and not config.for_path(folder).respect_gitignore:
        return {}
    return {folder: IgnoreRules.above(folder)}


def _enabled_rules(config: Config, path: str) -> list[Rule]:
    return [rule for rule in rules_of_kind("static") if config.is_enabled(rule.code, path)]


def _run_rules(module: cst.Module, tree: ast.Module, source: str, path: str, rules: list[Rule],
               config: Config, project_file=None) -> list[Finding]:
    """Facts once, then every rule; a bug of ours on odd code is reported, never a traceback.

    `project_file` is (project, file path) when the file is read as part of a project:
    its facts then include the calls made into it from the project's other modules.
    """
    from peftdoctor.facts import build_facts, project_facts  # local: keeps `peftdoctor rules` fast
    from peftdoctor.rules.base import Context

    findings: list[Finding] = []
    try:
        facts = None
        if project_file is not None:
            facts = project_facts(*project_file, path)
        if facts is None:
            facts = build_facts(module, path, source, tree)
        context = Context(config)
        seen = set()
        for rule in rules:
            for found in rule.check(facts, context):
                key = (found.code, found.line, found.column)
                if key not in seen:  # one call seen from several callers is reported once
                    seen.add(key)
                    findings.append(found)
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - one file must not stop the run
        findings.append(Finding(
            code="PD002", message=f"peftdoctor could not analyse this file ({type(exc).__name__}: {exc})",
            path=path, line=1, column=0, severity=Severity.WARNING,
            hint="please report this with the file attached; other files were checked",
        ))
    return findings


def check_source(source: str, path: str = "<string>", config: Config | None = None,
                 report_unused_noqa: bool = False, project_file=None) -> CheckResult:
    """Check one file's text: the unit the CLI, the pytest plugin and the doc tests share.

    `project_file` is (project, file path) when check_paths reads the file as part of a project.
    """
    config = config or Config()
    source = source.removeprefix("\ufeff")  # a BOM is not part of the text (PEP 263)
    result = CheckResult(files_checked=1, lines_checked=source.count("\n") + 1)
    rules = _enabled_rules(config, path)
    findings: list[Finding] = []
    needles = [n for rule in rules for n in rule.needs_any]
    prefiltered_out = bool(rules) and all(rule.needs_any for rule in rules) and not any(
        n in source for n in needles
    ) and not (project_file is not None and project_file[0].walked(project_file[1]))
    need_module = bool(rules) and not prefiltered_out
    if need_module or config.is_enabled("PD000", path):
        parsed = project_file[0].parsed(project_file[1]) if need_module and project_file is not None else None
        if parsed is not None:  # read once, by the project (a caller only in the part the facts use)
            module, tree, parse_findings = parsed.module, parsed.tree, []
        else:
            module, tree, parse_findings = parse_source(source, path, need_module=need_module)
        findings.extend(f for f in parse_findings if f.code != "PD000" or config.is_enabled("PD000", path))
        if need_module and module is not None:
            findings.extend(_run_rules(module, tree, source, path, rules, config,
                                       project_file if parsed is not None else None))
    suppressions = parse_suppressions(source)
    for finding in findings:
        if suppressions.suppresses(finding.code, finding.line) or (
            finding.end_line and suppressions.suppresses(finding.code, finding.end_line)
        ):
            continue
        result.findings.append(config.apply_severity(finding))
    if report_unused_noqa:
        for item in suppressions.unused(enabled=lambda code: config.is_enabled(code, path)):
            result.unused_suppressions.append(
                Finding(
                    code="PD001",
                    message=f"unused suppression comment: {item.text}",
                    path=path,
                    line=item.line,
                    column=1,
                    hint="remove the comment; no finding on this line needs it",
                    severity=Severity.WARNING,
                )
            )
    result.findings.sort(key=Finding.sort_key)
    return result


def read_source(path: Path) -> str:
    """The file's text as Python decodes it (PEP 263); bytes that are not text come back as latin-1.
    A notebook's text is its code cells as one script (empty when it is not a notebook)."""
    data = regular_file.read_bytes(path)
    if is_notebook(path):
        return script_of(data)
    text, _ = decode_source(data, str(path))
    return text if text is not None else data.decode("latin-1")


def rule_needles() -> set[str]:
    """What a file must mention for some static rule to be able to fire on it (the rules' `needs_any`)."""
    return {needle for rule in rules_of_kind("static") for needle in rule.needs_any}


def _concerns_peft(data: bytes) -> bool:
    """Whether any static rule could fire on a file: the rules' prefilter needles, looked for in its bytes."""
    rules = rules_of_kind("static")
    if not all(rule.needs_any for rule in rules):
        return True
    return any(needle.encode() in data for rule in rules for needle in rule.needs_any)


def check_file(path: Path, config: Config | None = None, report_unused_noqa: bool = False,
               project=None, named: bool = True) -> CheckResult:
    """One file. A file found by walking a folder (`named=False`) that never mentions peft is not reported at
    all, not even as PD000: a Python 2 script or a binary `.py` there is none of peftdoctor's business."""
    display = str(path)
    try:
        data = regular_file.read_bytes(path)
    except OSError as exc:
        raise PathError(f"{display}: cannot read: {exc.strerror or exc}") from None
    if not named and not _concerns_peft(data) and not (project is not None and project.walked(path)):
        return CheckResult(files_checked=1, lines_checked=data.count(b"\n") + 1)
    if is_notebook(path):
        return _check_notebook(path, data, config, report_unused_noqa, project)
    source, not_text = decode_source(data, display)
    if source is None:
        config = config or Config()
        result = CheckResult(files_checked=1, lines_checked=data.count(b"\n") + 1)
        if config.is_enabled("PD000", display):
            result.findings.append(config.apply_severity(not_text))
        return result
    return check_source(source, display, config, report_unused_noqa,
                        (project, path) if project is not None else None)


def _check_notebook(path: Path, data: bytes, config: Config | None, report_unused_noqa: bool,
                    project) -> CheckResult:
    """A notebook's code cells checked as one script; findings located in their cell. One that cannot be
    read is one PD000 finding."""
    display = str(path)
    config = config or Config()
    try:
        notebook = read_notebook(data, display)
    except NotebookError as exc:
        result = CheckResult(files_checked=1, lines_checked=data.count(b"\n") + 1)
        if config.is_enabled("PD000", display):
            result.findings.append(config.apply_severity(Finding(
                code="PD000", message=str(exc), path=display, line=1, column=0,
                hint="nothing in this notebook was checked: a .ipynb file must be a Jupyter notebook (nbformat 4 "
                     "JSON); exclude it if it is not one")))
        return result
    result = check_source(notebook.script, display, config, report_unused_noqa,
                          (project, path) if project is not None else None)
    return _located_in_cells(result, notebook, config, display)


def _located_in_cells(result: CheckResult, notebook: Notebook, config: Config, display: str) -> CheckResult:
    """A notebook script's result with the broken cells' PD000 added and every finding located in its cell."""
    if config.is_enabled("PD000", display):
        suppressions = parse_suppressions(notebook.script)
        result.findings.extend(config.apply_severity(f) for f in notebook.broken
                               if not suppressions.suppresses(f.code, f.line))
    result.findings = sorted((in_cells(notebook, f) for f in result.findings), key=Finding.sort_key)
    result.unused_suppressions = [in_cells(notebook, f) for f in result.unused_suppressions]
    return result


def read_project(root: Path, files: list[Path], config: Config, named: set[Path] = frozenset(),
                 read=read_source, callers_from=()):
    """Interpret every file a rule will read before any rule runs, so that a call from one
    module into another is seen inside the callee too (see facts/calls.py). The files that
    import one of those (their callers: a runner, a main) are walked too, for the values
    they pass in; rules read them too. `callers_from`: more files, read only as such callers.
    `read(path)` gives a file's text (an editor's buffers stand in for the disk, see check_buffer)."""
    from peftdoctor.facts.library import RELEVANT_WORDS
    from peftdoctor.facts.project import Project
    from peftdoctor.facts.reading import ModuleReader

    needles = rule_needles()
    ruled, others, texts = [], [], {}
    for path in files:
        try:
            text = texts[path.resolve()] = read(path)
        except OSError:
            continue
        mentions = any(n in text for n in needles) or (path in named and any(w in text for w in RELEVANT_WORDS))
        if mentions and _enabled_rules(config.for_path(path), str(path)):  # a file named on the command line: its imports too
            ruled.append(path)
        elif any(word in text for word in RELEVANT_WORDS):
            others.append(path)
    for path in callers_from:
        if path.resolve() not in texts:
            try:
                text = texts[path.resolve()] = read(path)
            except OSError:
                continue
            if any(word in text for word in RELEVANT_WORDS):
                others.append(path)
    reader = ModuleReader(read, {path.resolve() for path in ruled}, texts)
    project = Project(root, reader)
    callers = reader.find_callers(others, project.resolve)
    for path in ruled + callers:
        try:
            project.interpreter(path)
        except (Exception, RecursionError):  # noqa: BLE001 - reported per file as PD002 below
            pass
    return project


def check_buffer(path: Path, text: str, config: Config, buffers: dict[Path, str] | None = None,
                 root: Path | None = None) -> CheckResult:
    """One file, with an editor's unsaved `text` standing in for the disk, read as part of its project.

    `root` is the project (an editor's workspace folder; by default the file's project root): the facts
    follow the file's imports into its modules, and its files that import this one are read as its
    callers, as `check <root>` reads them. A file with neither is read as `check <file>` reads it (its
    folder, maybe a home or downloads folder, is not walked). `buffers` (resolved path -> text) are other
    unsaved files, read instead of their disk copy.
    """
    from peftdoctor.project_root import ROOT_MARKERS

    overlay = {**(buffers or {}), path.resolve(): text}

    def read(module: Path) -> str:
        found = overlay.get(module.resolve())
        return found if found is not None else read_source(module)

    walk = root is not None  # an editor's workspace folder
    if root is None:
        root = project_root_of([path])
        walk = any((root / marker).exists() for marker in ROOT_MARKERS)  # a project, not just the file's folder
    callers_from = [found for found, _ in iter_python_files([root], config)] if walk else []
    project = read_project(root, [path], config, {path}, read, callers_from)
    try:
        return check_source(text, str(path), config, project_file=(project, path))
    finally:
        project.close()


def check_notebook_buffer(path: Path, notebook: Notebook, config: Config, buffers: dict[Path, str] | None = None,
                          root: Path | None = None) -> CheckResult:
    """An editor's unsaved notebook (notebook.notebook_of_cells), checked as check_buffer checks a file and as
    `check` checks a .ipynb: its script in its project, findings located in their cell."""
    result = check_buffer(path, notebook.script, config, buffers, root)
    return _located_in_cells(result, notebook, config, str(path))


def check_paths(paths, config: Config | None = None, report_unused_noqa: bool = False,
                cache=None, jobs: int = 1) -> CheckResult:
    """Check every Python file under `paths` as one project; one unparsable file never stops the others.

    `config`: one Config for every file, or a config.NearestConfigs that gives each file its own
    (anything with `for_path(path) -> Config`). `cache` (a peftdoctor.cache.ResultCache) answers the
    files whose key is unchanged; `jobs` > 1 spreads the parts of the project that imports do not
    join over that many processes.
    """
    from peftdoctor.project_run import run_check

    return run_check(paths, config or Config(), report_unused_noqa, cache, jobs)
