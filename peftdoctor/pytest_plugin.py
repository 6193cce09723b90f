"""pytest plugin: `pytest --peftdoctor` lints scripts and inspects adapters as test items.

Loaded in every pytest run of an environment that has peftdoctor (entry point
`pytest11`), so without `--peftdoctor` it does nothing: this module imports only
pytest and the standard library at the top, and peftdoctor's checker is
imported on first use.

With `--peftdoctor`:
- every `.py` file (and `.ipynb` notebook) under the test paths becomes one item, `path::peftdoctor`,
  that fails with the file's findings (info-only counts as a pass, like the CLI);
- every folder holding an `adapter_config.json` becomes one item,
  `folder/adapter_config.json::peftdoctor-inspect`, running the header checks;
- `[tool.peftdoctor]` from the nearest pyproject.toml applies (exclude too);
- a file's result is kept in pytest's cache, keyed by its content, path,
  settings and peftdoctor version, so an unchanged file is not parsed again
  (`--cache-clear` drops it). Adapter folders are not cached: header reads are cheap.

Fixtures (always available): `peftdoctor_check`, `peftdoctor_inspect`,
`peftdoctor_diagnose`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

CACHE_KEY = "peftdoctor/results"
ITEM_NAME = "peftdoctor"
ADAPTER_ITEM_NAME = "peftdoctor-inspect"


def pytest_addoption(parser):
    group = parser.getgroup("peftdoctor")
    group.addoption("--peftdoctor", action="store_true", default=False,
                    help="Lint .py files and notebooks and inspect adapter folders under the test paths with "
                         "peftdoctor.")


def pytest_configure(config):
    config.addinivalue_line("markers", "peftdoctor: a peftdoctor check item (added by --peftdoctor)")
    if config.getoption("peftdoctor"):
        config.stash[_STATE] = _State(config)


def pytest_collect_file(file_path: Path, parent):
    config = parent.config
    if not config.getoption("peftdoctor"):
        return None
    if file_path.suffix in (".py", ".ipynb"):
        if config.stash[_STATE].excluded(file_path):
            return None
        return PeftdoctorFile.from_parent(parent, path=file_path)
    if file_path.name == "adapter_config.json":
        if config.stash[_STATE].excluded(file_path.parent):
            return None
        return AdapterFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionfinish(session):
    state = session.config.stash.get(_STATE, None)
    if state is not None:
        state.save()


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_STATE, None)
    if state is not None and (state.parsed or state.cached):
        terminalreporter.write_line(
            f"peftdoctor: {state.parsed} file(s) checked, {state.cached} unchanged file(s) from cache"
        )


class _State:
    """Per-session: settings per folder and the content-keyed result cache."""

    def __init__(self, config):
        self.config = config
        self.settings: dict[Path, object] = {}
        self.old: dict | None = None
        self.new: dict = {}
        self.parsed = 0
        self.cached = 0

    def settings_for(self, path: Path):
        """The peftdoctor Config for `path` (nearest [tool.peftdoctor]); ConfigError if broken."""
        from peftdoctor.config import nearest_config

        folder = path.parent
        if folder not in self.settings:
            try:
                self.settings[folder] = nearest_config(folder)
            except Exception as exc:  # ConfigError: reported by each item of the folder
                self.settings[folder] = exc
        return self.settings[folder]

    def excluded(self, path: Path) -> bool:
        settings = self.settings_for(path)
        return not isinstance(settings, Exception) and settings.is_excluded(path)

    def display(self, path: Path) -> str:
        try:
            return os.path.relpath(path, self.config.rootpath)
        except ValueError:
            return str(path)

    def check_file(self, path: Path) -> list:
        from peftdoctor import __version__
        from peftdoctor.engine import check_file, check_source, read_source
        from peftdoctor.finding import Finding, Severity

        settings = self.settings_for(path)
        if isinstance(settings, Exception):
            raise PeftdoctorError(str(settings))
        display = self.display(path)
        data = path.read_bytes()
        digest = hashlib.sha256(f"{__version__}\0{settings!r}\0{display}\0".encode() + data).hexdigest()
        if self.old is None:
            cache = getattr(self.config, "cache", None)  # absent under -p no:cacheprovider
            self.old = cache.get(CACHE_KEY, {}) if cache is not None else {}
        entry = self.old.get(display)
        if isinstance(entry, dict) and entry.get("key") == digest:
            self.cached += 1
            rows = entry["findings"]
        else:
            self.parsed += 1
            if path.suffix == ".ipynb":  # located in its cells, under the name shown for the item
                found = [dataclasses.replace(f, path=display) for f in check_file(path, settings).findings]
            else:
                found = check_source(read_source(path), display, settings).findings
            rows = [_to_row(f) for f in found]
        self.new[display] = {"key": digest, "findings": rows}
        return [Finding(**{**row, "severity": Severity(row["severity"])}) for row in rows]

    def save(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or not self.new:
            return
        merged = dict(self.old or cache.get(CACHE_KEY, {}))
        merged.update(self.new)
        cache.set(CACHE_KEY, merged)


_STATE = pytest.StashKey[_State]()


def _to_row(finding) -> dict:
    return {
        "code": finding.code, "message": finding.message, "path": finding.path, "line": finding.line,
        "column": finding.column, "hint": finding.hint, "severity": finding.severity.value,
        "end_line": finding.end_line, "end_column": finding.end_column, "versions": finding.versions,
        "cell": finding.cell,
    }


class PeftdoctorError(Exception):
    """Findings (or a settings error) that make an item fail; str() is the report."""


def _report(findings, noun: str) -> str:
    import io

    from peftdoctor.reporters import render

    stream = io.StringIO()
    render("text", findings, stream, color=False, files_checked=1, noun=noun)
    return stream.getvalue().rstrip("\n")


def _fail_on(findings, noun: str) -> None:
    from peftdoctor.finding import Severity

    if any(f.severity != Severity.INFO for f in findings):
        raise PeftdoctorError(_report(findings, noun))


class _Item(pytest.Item):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_marker(ITEM_NAME)
        # No fixtures here, but plugins read a test function's `funcargs` from every item: pytest-lsp 1.0's
        # pytest_runtest_call wrapper returns without yielding when it is missing, failing every item of ours.
        self.funcargs = {}

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, PeftdoctorError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class PeftdoctorItem(_Item):
    def runtest(self):
        _fail_on(self.config.stash[_STATE].check_file(self.path), "file")

    def reportinfo(self):
        return self.path, None, f"peftdoctor check {self.path.name}"


class AdapterItem(_Item):
    def runtest(self):
        from peftdoctor.inspect.run import inspect_paths

        state = self.config.stash[_STATE]
        folder = self.path.parent
        settings = state.settings_for(folder / "adapter_config.json")
        if isinstance(settings, Exception):
            raise PeftdoctorError(str(settings))
        result = inspect_paths([state.display(folder)], config=settings, deep=False, merge_check=False,
                               show_summary=False)
        _fail_on(result.findings, "adapter")

    def reportinfo(self):
        return self.path.parent, None, f"peftdoctor inspect {self.path.parent.name}"


class PeftdoctorFile(pytest.File):
    def collect(self):
        yield PeftdoctorItem.from_parent(self, name=ITEM_NAME)


class AdapterFile(pytest.File):
    def collect(self):
        yield AdapterItem.from_parent(self, name=ADAPTER_ITEM_NAME)


# --- fixtures for users' own tests -----------------------------------------------


def _codes(value) -> list[str]:
    return [code.strip().upper() for code in ([value] if isinstance(value, str) else value)]


def _settings(select=None, ignore=None, config=None):
    """A Config from keyword arguments, on top of `config` (not changed in place)."""
    import dataclasses

    from peftdoctor.config import Config

    settings = dataclasses.replace(config) if config is not None else Config()
    if select is not None:
        settings.select = _codes(select)
    if ignore is not None:
        settings.ignore = [*settings.ignore, *_codes(ignore)]
    return settings


@pytest.fixture
def peftdoctor_check():
    """`peftdoctor_check(path_or_source, select=None, ignore=None, config=None) -> list[Finding]`.

    A `Path`, or a string naming an existing file or folder, is checked as files;
    any other string (or `source=`) is checked as Python source.
    """

    def check(target=None, *, source: str | None = None, path: str = "<string>", select=None, ignore=None,
              config=None, report_unused_noqa: bool = False):
        from peftdoctor.engine import check_paths, check_source

        settings = _settings(select, ignore, config)
        if source is None and isinstance(target, str) and ("\n" in target or not os.path.exists(target)):
            source = target
        if source is not None:
            result = check_source(source, path, settings, report_unused_noqa=report_unused_noqa)
        else:
            if target is None:
                raise TypeError("peftdoctor_check needs a path or source")
            result = check_paths([os.fspath(target)], settings, report_unused_noqa=report_unused_noqa)
        return sorted([*result.findings, *result.unused_suppressions], key=lambda f: f.sort_key())

    return check


@pytest.fixture
def peftdoctor_inspect():
    """`peftdoctor_inspect(adapter_dir, base=None, select=None, ignore=None, **options) -> list[Finding]`.

    Header checks always; with `base` (a local folder) the deep checks too.
    `options` go to `peftdoctor.inspect.run.inspect_paths` (device, dtype, merge_check).
    """

    def inspect(adapter, base=None, *, select=None, ignore=None, config=None, **options):
        from peftdoctor.inspect.run import inspect_paths

        options.setdefault("deep", base is not None)
        result = inspect_paths([os.fspath(adapter)], config=_settings(select, ignore, config),
                               base=None if base is None else os.fspath(base), show_summary=False, **options)
        return result.findings

    return inspect


@pytest.fixture
def peftdoctor_diagnose():
    """`peftdoctor_diagnose(model, tokenizer=None, training_args=None)`: `peftdoctor.diagnose` on a live model."""

    def diagnose(model, *, tokenizer=None, training_args=None):
        import peftdoctor

        return peftdoctor.diagnose(model, tokenizer=tokenizer, training_args=training_args)

    return diagnose
