"""`[tool.peftdoctor]` configuration: each file's nearest config file, found by walking up from it.

A config file is `.peftdoctor.toml` or `peftdoctor.toml` (settings at the top level) or a
`pyproject.toml` with a `[tool.peftdoctor]` table; in one folder they are tried in that order.

One place decides which rules run on which file and at what severity; the CLI
flags override what the file says.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.finding import Finding, Severity
from peftdoctor.registry import matches
from peftdoctor.run_record import note

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VERSION_KEYS = {
    "peft-version": "peft",
    "transformers-version": "transformers",
    "torch-version": "torch",
    "trl-version": "trl",
}
KNOWN_KEYS = {
    "select",
    "ignore",
    "extend-select",
    "per-file-ignores",
    "exclude",
    "severity",
    "respect-gitignore",
    *VERSION_KEYS,
}


CODE_PATTERN = re.compile(r"^(ALL|PD[0-9]{0,3})$")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file."""


@dataclass
class Config:
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    severity: dict[str, Severity] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    respect_gitignore: bool = True
    source: Path | None = None

    def for_path(self, path) -> "Config":
        """The settings for one file: these (one config for every file; see NearestConfigs)."""
        return self

    @property
    def root(self) -> Path | None:
        return self.source.parent if self.source else None

    def is_enabled(self, code: str, path: str | None = None) -> bool:
        selected = self.select if self.select is not None else ["ALL"]
        if not (matches(code, selected) or matches(code, self.extend_select)):
            return False
        if matches(code, self.ignore):
            return False
        if path is not None:
            for pattern, codes in self.per_file_ignores.items():
                if self._path_matches(path, pattern) and matches(code, codes):
                    return False
        return True

    def severity_of(self, code: str, default: Severity) -> Severity:
        for pattern in sorted(self.severity, key=len, reverse=True):
            if matches(code, [pattern]):
                return self.severity[pattern]
        return default

    def apply_severity(self, finding: Finding) -> Finding:
        """The finding at the severity the config gives its code (the same object if unchanged)."""
        severity = self.severity_of(finding.code, finding.severity)
        return finding if severity == finding.severity else finding.with_severity(severity)

    def is_excluded(self, path: Path) -> bool:
        return any(self._path_matches(str(path), pattern) for pattern in self.exclude)

    def _path_matches(self, path: str, pattern: str) -> bool:
        candidates = {Path(path).as_posix(), Path(path).name}
        if self.root is not None:
            try:
                candidates.add(Path(path).resolve().relative_to(self.root.resolve()).as_posix())
            except ValueError:
                pass
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.rstrip("/") + "/*"):
                return True
        return False


CONFIG_NAMES = (".peftdoctor.toml", "peftdoctor.toml", "pyproject.toml")


def _configures_us(candidate: Path) -> bool:
    """A peftdoctor.toml always does; a pyproject.toml when it has a [tool.peftdoctor] table."""
    if candidate.name != "pyproject.toml":
        return True
    try:
        data = tomllib.loads(regular_file.read_text(candidate))
    except (OSError, UnicodeDecodeError):
        return False
    except tomllib.TOMLDecodeError:
        # A broken file that means to configure us must be reported, not skipped.
        return "[tool.peftdoctor" in candidate.read_text(encoding="utf-8", errors="replace")
    tool = data.get("tool", {})
    return isinstance(tool, dict) and "peftdoctor" in tool


def config_file_in(folder: Path) -> Path | None:
    """The config file of `folder` itself (see CONFIG_NAMES), or None."""
    for name in CONFIG_NAMES:
        candidate = folder / name
        note(candidate)
        if candidate.is_file() and _configures_us(candidate):
            return candidate
    return None


def find_config_file(start: Path) -> Path | None:
    """The nearest config file, walking up from `start`."""
    start = start.resolve()
    folder = start if start.is_dir() else start.parent
    for candidate_dir in (folder, *folder.parents):
        found = config_file_in(candidate_dir)
        if found is not None:
            return found
    return None


def nearest_config(start: Path) -> Config:
    """The settings that apply at `start`: its nearest [tool.peftdoctor], or the defaults."""
    found = find_config_file(start)
    return load_config(found) if found else Config()


@dataclass(frozen=True)
class Overrides:
    """What the command line says on top of every config file (None/empty: the file decides)."""

    select: list[str] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    respect_gitignore: bool | None = None

    def apply(self, config: Config) -> Config:
        config = replace(config, ignore=[*config.ignore, *self.ignore],
                         extend_select=[*config.extend_select, *self.extend_select])
        if self.select is not None:
            config.select = list(self.select)
        if self.respect_gitignore is not None:
            config.respect_gitignore = self.respect_gitignore
        return config


class NearestConfigs:
    """Each file's settings: its nearest config file with the command line's overrides on top.

    `check src/a.py other/b.py` reads `src/`'s config for a.py and `other/`'s for b.py, in any order.
    ConfigError (naming the file) for a config file that cannot be used.
    """

    def __init__(self, overrides: Overrides):
        self.overrides = overrides
        self._nearest: dict[Path, Path | None] = {}  # folder (resolved) -> its nearest config file
        self._by_file: dict[Path | None, Config] = {}

    def for_path(self, path) -> Config:
        path = Path(path)
        note(path)
        folder = path if path.is_dir() else path.parent
        found = self._nearest_file((folder if folder.exists() else Path.cwd()).resolve())
        if found not in self._by_file:
            self._by_file[found] = self.overrides.apply(load_config(found) if found else Config())
        return self._by_file[found]

    def _nearest_file(self, folder: Path) -> Path | None:
        """find_config_file, remembering every folder on the way (a walk asks for each folder)."""
        if folder not in self._nearest:
            own = config_file_in(folder)
            self._nearest[folder] = own if own or folder.parent == folder else self._nearest_file(folder.parent)
        return self._nearest[folder]


def load_config(path: Path) -> Config:
    """Read `[tool.peftdoctor]` from `path` (a pyproject.toml or peftdoctor.toml)."""
    try:
        data = tomllib.loads(regular_file.read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    table = data.get("tool", {}).get("peftdoctor", data if path.name != "pyproject.toml" else {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.peftdoctor] must be a table")
    return config_from_table(table, path)


def _code_list(value, key: str, path: Path) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: '{key}' must be a list of rule codes")
    codes = [v.strip().upper() for v in value]
    for code in codes:
        if not CODE_PATTERN.match(code):
            raise ConfigError(f"{path}: '{key}' has '{code}', which is not a rule code or prefix (e.g. PD101, PD1, ALL)")
    return codes


def config_from_table(table: dict, path: Path) -> Config:
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' in [tool.peftdoctor]")
    config = Config(source=path)
    if "respect-gitignore" in table:
        if not isinstance(table["respect-gitignore"], bool):
            raise ConfigError(f"{path}: 'respect-gitignore' must be true or false")
        config.respect_gitignore = table["respect-gitignore"]
    if "select" in table:
        config.select = _code_list(table["select"], "select", path)
    config.ignore = _code_list(table.get("ignore", []), "ignore", path)
    config.extend_select = _code_list(table.get("extend-select", []), "extend-select", path)
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{path}: 'per-file-ignores' must be a table of glob = [codes]")
    config.per_file_ignores = {
        glob: _code_list(codes, f"per-file-ignores.{glob}", path) for glob, codes in per_file.items()
    }
    exclude = table.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(v, str) for v in exclude):
        raise ConfigError(f"{path}: 'exclude' must be a list of globs")
    config.exclude = exclude
    severity = table.get("severity", {})
    if not isinstance(severity, dict):
        raise ConfigError(f"{path}: 'severity' must be a table of code = level")
    for code, level in severity.items():
        if not CODE_PATTERN.match(code.strip().upper()):
            raise ConfigError(f"{path}: 'severity' has '{code}', which is not a rule code or prefix")
        try:
            config.severity[code.upper()] = Severity(str(level).lower())
        except ValueError:
            raise ConfigError(
                f"{path}: severity for '{code}' must be error, warning or info, not '{level}'"
            ) from None
    for key, library in VERSION_KEYS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ConfigError(f"{path}: '{key}' must be a version string such as \"0.13\"")
            config.versions[library] = str(value)
    return config
