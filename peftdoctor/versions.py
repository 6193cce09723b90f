"""Which library versions the *checked project* runs on.

Decided, in order, from:

1. `[tool.peftdoctor]` (`peft-version = "0.10"`);
2. the project's pins: requirements files, pyproject.toml (PEP 621 dependencies,
   optional dependencies, dependency groups, Poetry), setup.py, setup.cfg and conda
   environment files. The nearest pin to the checked file wins. Candidates are the
   pin files in the file's folder and every folder above it, up to the top of the git
   checkout (so a sub-project also sees its checkout's pins), plus the pin files anywhere in the project
   that sit in a folder holding no Python code (`requirements/train.txt`,
   `envs/environment.yml`): those describe the whole project. A pin file next to
   other code (`other_tool/requirements.txt`) describes that code only;
3. the range the script's own API use implies (facts/api_versions.py), represented
   by the newest known release inside it;
4. the releases current when this peftdoctor was made.

Never from the environment peftdoctor runs in: a pre-commit env is not the training env.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import lru_cache
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.facts.api_versions import (
    Implied,
    Version,
    in_range,
    less,
    newest_known,
    parse_version,
    shown,
)
from peftdoctor.project_root import find_project_root
from peftdoctor.run_record import note

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Newest releases known to this version of peftdoctor (the newest of api_versions.KNOWN_RELEASES).
CURRENT_RELEASES = {"peft": "0.21.2", "transformers": "5.24.0", "trl": "1.16.0", "torch": "2.13.0"}
ALIASES = {"pytorch": "torch"}  # conda's name for torch
PIN_FILES = ("requirements*.txt", "pyproject.toml", "setup.py", "setup.cfg", "environment*.yml", "environment*.yaml")
REQUIREMENT_FOLDERS = ("requirements", "reqs", "requirement")  # every .txt / .in in them is a requirements file
SKIP_FOLDERS = {"node_modules", "site-packages", "__pycache__", "build", "dist"}  # and virtual environments
MAX_FOLDERS = 5000  # a project scan stops after this many folders

__all__ = ["CURRENT_RELEASES", "Pin", "ProjectVersion", "Spec", "clear_caches", "in_range", "parse_version", "pin_for",
           "project_version"]


@dataclass(frozen=True)
class ProjectVersion:
    library: str
    version: Version
    text: str  # "trl 0.8.6, pinned in requirements.txt", "trl 1.16.0, the current release", ...
    source: str  # "config", the pin file's path, "implied" or "current release"
    kind: str = "current"  # "config" | "pin" | "implied" | "current"

    def below(self, *minimum: int) -> bool:
        return less(self.version, tuple(minimum))

    def at_least(self, *minimum: int) -> bool:
        return not self.below(*minimum)


# ------------------------------------------------------------------ specifiers
@dataclass(frozen=True)
class Spec:
    op: str  # == != >= > <= <
    version: Version

    def allows(self, version: Version) -> bool:
        if self.op == "==":
            return not less(version, self.version) and not less(self.version, version)
        if self.op == "!=":
            return less(version, self.version) or less(self.version, version)
        if self.op == ">=":
            return not less(version, self.version)
        if self.op == ">":
            return less(self.version, version)
        if self.op == "<=":
            return not less(self.version, version)
        return less(version, self.version)


OPERATOR = re.compile(r"(===|==|~=|!=|<=|>=|<|>|\^|~|=)\s*v?([0-9][0-9a-zA-Z.*+!-]*)")


def _bump(version: Version) -> Version:
    return (*version[:-1], version[-1] + 1)


def _caret(version: Version) -> Version:
    """Poetry's ^: the first non-zero part may not change (^0.13 -> <0.14, ^1.2 -> <2)."""
    for index, number in enumerate(version):
        if number != 0:
            return (*version[:index], number + 1)
    return _bump(version)


def _specs(text: str, conda: bool = False) -> tuple[Spec, ...]:
    """PEP 440 (`>=0.12,<0.14`, `~=0.13.1`, `==0.13.*`), Poetry (`^0.13`, `~0.13.1`, `0.13.2`) and conda (`=0.13`)."""
    text = text.strip()
    if re.fullmatch(r"v?[0-9][0-9a-zA-Z.*+!-]*", text):  # Poetry's bare "0.13.2", conda's "peft 0.13.2"
        text = ("=" if conda else "==") + text
    specs: list[Spec] = []
    for op, written in OPERATOR.findall(text):
        wildcard = written.endswith("*")
        version = parse_version(written.rstrip(".*"))
        if op == "=" and conda:
            op, wildcard = ("==", False) if len(version) >= 3 else ("==", True)
        elif op == "=":
            op = "=="
        if op in ("==", "===") and wildcard:
            specs += [Spec(">=", version), Spec("<", _bump(version))]
        elif op in ("==", "==="):
            specs.append(Spec("==", version))
        elif op == "~=":
            specs += [Spec(">=", version), Spec("<", _bump(version[:-1]) if len(version) > 1 else _bump(version))]
        elif op == "^":
            specs += [Spec(">=", version), Spec("<", _caret(version))]
        elif op == "~":
            specs += [Spec(">=", version), Spec("<", _bump(version[:2] if len(version) > 1 else version))]
        else:
            specs.append(Spec(op, version))
    return tuple(specs)


@dataclass(frozen=True)
class Pin:
    library: str
    specs: tuple[Spec, ...]
    written: str  # as in the file: "trl==0.8.6", "trl ~0.8.6"
    path: str

    def allows(self, version: Version) -> bool:
        return all(spec.allows(version) for spec in self.specs)

    def choose(self) -> tuple[Version, str] | None:
        """(the version this pin stands for, how: "exact" | "newest" | "lowest"); None for a floor such as >=0.10."""
        for spec in self.specs:
            if spec.op == "==":
                return spec.version, "exact"
        uppers = [s for s in self.specs if s.op in ("<", "<=")]
        lowers = [s.version for s in self.specs if s.op in (">=", ">")]
        lowest = max(lowers, key=_sortable, default=None)
        if not uppers:
            if lowest is not None and less(parse_version(CURRENT_RELEASES[self.library]), lowest):
                return lowest, "lowest"  # asks for a release newer than we know: assume that one
            return None
        found = newest_known(self.library, None, None, self.allows)
        if found is not None:
            return found, "newest"
        inclusive = [s.version for s in uppers if s.op == "<="]
        if inclusive:
            return min(inclusive, key=_sortable), "newest"
        if lowest is not None:
            return lowest, "lowest"
        high = min((s.version for s in uppers), key=_sortable)
        return ((*high[:-1], high[-1] - 1, 999) if high[-1] > 0 else high), "newest"


def _sortable(version: Version) -> Version:
    return version + (0,) * (8 - len(version))


# ---------------------------------------------------------------- file readers
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def _canonical(name: str) -> str | None:
    name = re.sub(r"[-_.]+", "-", name.lower())
    name = ALIASES.get(name, name)
    return name if name in CURRENT_RELEASES else None


def _requirement(text: str, path: str, conda: bool = False) -> Pin | None:
    """One PEP 508 requirement (or conda spec) naming one of our libraries, else None."""
    text = text.split(" #", 1)[0].split(";", 1)[0].strip()
    if conda:
        text = text.split("::", 1)[-1]
    match = REQUIREMENT.match(text)
    if not match:
        return None
    library = _canonical(match.group(1))
    rest = match.group(3).strip()
    if library is None or rest.startswith("@"):
        return None
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    if conda and "=" in rest and not re.match(r"\s*(==|>=|<=|!=|~=)", rest):
        rest = "=" + rest.lstrip("=").split("=", 1)[0]  # conda's name=version=build
    elif conda and rest[:1].isdigit():
        rest = rest.split()[0]  # conda's "name version build"
    return Pin(library, _specs(rest, conda), f"{match.group(1)}{'' if rest[:1] in '<>=!~^' else ' '}{rest}".strip(),
               path)


def _requirements_file(path: Path, seen: frozenset = frozenset()) -> list[Pin]:
    if path in seen or len(seen) > 8:
        return []
    seen = seen | {path}
    pins: list[Pin] = []
    text = _read(path).replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.match(r"^(?:-r|-c|--requirement|--constraint)\s*=?\s*(\S+)", line)
        if include:
            pins += _requirements_file((path.parent / include.group(1)).resolve(), seen)
        elif not line.startswith("-"):
            pin = _requirement(line, str(path))
            if pin:
                pins.append(pin)
    return pins


def _poetry_value(name: str, value, path: str) -> Pin | None:
    library = _canonical(name)
    if library is None:
        return None
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, dict) and "version" in v), None)
    if isinstance(value, dict):
        value = value.get("version")
    if not isinstance(value, str) or value.strip() in ("", "*"):
        return Pin(library, (), name, path)
    return Pin(library, _specs(value), f"{name} {value.strip()}", path)


def _pyproject(path: Path) -> list[Pin]:
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        return _loose_text(text, path)
    pins: list[Pin] = []
    strings: list[str] = []
    project = data.get("project", {}) if isinstance(data.get("project"), dict) else {}
    strings += [d for d in project.get("dependencies", []) if isinstance(d, str)]
    for group in (project.get("optional-dependencies") or {}).values():
        strings += [d for d in group if isinstance(d, str)] if isinstance(group, list) else []
    for group in (data.get("dependency-groups") or {}).values():
        strings += [d for d in group if isinstance(d, str)] if isinstance(group, list) else []
    tool = data.get("tool", {}) if isinstance(data.get("tool"), dict) else {}
    uv = tool.get("uv", {}) if isinstance(tool.get("uv"), dict) else {}
    for key in ("dev-dependencies", "constraint-dependencies", "override-dependencies"):
        strings += [d for d in uv.get(key, []) if isinstance(d, str)]
    pins += [p for p in (_requirement(s, str(path)) for s in strings) if p]
    poetry = tool.get("poetry", {}) if isinstance(tool.get("poetry"), dict) else {}
    tables = [poetry.get("dependencies"), poetry.get("dev-dependencies")]
    tables += [g.get("dependencies") for g in (poetry.get("group") or {}).values() if isinstance(g, dict)]
    for table in tables:
        if isinstance(table, dict):
            pins += [p for p in (_poetry_value(k, v, str(path)) for k, v in table.items()) if p]
    return pins


def _loose_text(text: str, path: Path) -> list[Pin]:
    """Any quoted requirement string in a file we could not parse."""
    return [p for p in (_requirement(s, str(path)) for s in re.findall(r"['\"]([^'\"\n]+)['\"]", text)) if p]


def _setup_py(path: Path) -> list[Pin]:
    text = _read(path)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return _loose_text(text, path)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [p for p in (_requirement(s, str(path)) for s in strings) if p]


def _setup_cfg(path: Path) -> list[Pin]:
    pins = []
    for raw in _read(path).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not re.match(r"^[A-Za-z0-9._-]+\s*(\[[^\]]*\])?\s*(===|==|~=|!=|<=|>=|<|>|$|;)", line):
            assignment = re.match(r"^[\w.-]+\s*=\s*(.*)$", line)
            line = assignment.group(1) if assignment else line
        pin = _requirement(line, str(path)) if line else None
        if pin:
            pins.append(pin)
    return pins


def _environment(path: Path) -> list[Pin]:
    """A conda environment file: conda specs (`peft=0.13.2`) and its `pip:` list (`peft==0.13.2`)."""
    pins: list[Pin] = []
    pip_indent = None
    for raw in _read(path).splitlines():
        match = re.match(r"^(\s*)-\s+(.+?)\s*$", raw.split(" #", 1)[0])
        if not match:
            continue
        indent, item = len(match.group(1)), match.group(2).strip("'\"")
        if pip_indent is not None and indent <= pip_indent:
            pip_indent = None
        if item.rstrip(":").strip() == "pip" and item.endswith(":"):
            pip_indent = indent
            continue
        if pip_indent is not None:
            include = re.match(r"^(?:-r|--requirement)\s*=?\s*(\S+)", item)
            if include:
                pins += _requirements_file((path.parent / include.group(1)).resolve())
            elif not item.startswith("-"):
                pin = _requirement(item, str(path))
                if pin:
                    pins.append(pin)
        else:
            pin = _requirement(item, str(path), conda=True)
            if pin:
                pins.append(pin)
    return pins


def _read(path: Path) -> str:
    try:
        return regular_file.read_bytes(path).decode("utf-8", "replace")
    except OSError:
        return ""


def _reader(path: Path):
    name = path.name.lower()
    if name == "pyproject.toml":
        return _pyproject
    if name == "setup.py":
        return _setup_py
    if name == "setup.cfg":
        return _setup_cfg
    if name.endswith((".yml", ".yaml")):
        return _environment
    return _requirements_file


@lru_cache(maxsize=1024)
def _pins_in_file(path: Path, stamp: tuple) -> tuple[Pin, ...]:
    return tuple(_reader(path)(path))


def pins_in_file(path: Path) -> tuple[Pin, ...]:
    """Every mention of peft / transformers / trl / torch in one pin file, in file order."""
    try:
        stat = path.stat()
    except OSError:
        return ()
    return _pins_in_file(path, (stat.st_mtime_ns, stat.st_size))


# ------------------------------------------------------------ finding the files
def _is_pin_file(folder: Path, name: str) -> bool:
    lower = name.lower()
    if any(fnmatch(lower, pattern) for pattern in PIN_FILES) or fnmatch(lower, "*requirements*.txt"):
        return True
    return folder.name.lower() in REQUIREMENT_FOLDERS and lower.endswith((".txt", ".in"))


def _file_rank(name: str) -> int:
    lower = name.lower()
    if lower == "requirements.txt":
        return 0
    if lower.endswith((".txt", ".in")):
        return 2 if re.search(r"(dev|test|doc|lint|ci)", lower) else 1
    return {"pyproject.toml": 3, "setup.py": 4, "setup.cfg": 5}.get(lower, 6)


@lru_cache(maxsize=4096)
def _pin_files_in(folder: Path) -> tuple[Path, ...]:
    note(folder)
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return ()
    return tuple(folder / n for n in sorted(names, key=lambda n: (_file_rank(n), n)) if _is_pin_file(folder, n))


def _skipped(folder: str, name: str) -> bool:
    if name.startswith(".") or name.lower() in SKIP_FOLDERS:
        return True
    note(os.path.join(folder, name, "pyvenv.cfg"))
    note(os.path.join(folder, name, "conda-meta"))
    return os.path.exists(os.path.join(folder, name, "pyvenv.cfg")) or os.path.isdir(
        os.path.join(folder, name, "conda-meta"))


@lru_cache(maxsize=64)
def _project_wide(root: Path) -> tuple[Path, ...]:
    """Pin files below `root` in folders that hold no Python code (their whole subtree): the project's own."""
    has_code: set[str] = set()
    pin_folders: list[str] = []
    count = 0
    for folder, dirs, files in os.walk(root):
        note(folder)
        count += 1
        if count > MAX_FOLDERS:
            break
        dirs[:] = sorted(d for d in dirs if not _skipped(folder, d))
        if any(f.endswith((".py", ".ipynb")) for f in files):
            current = Path(folder)
            while True:
                key = str(current)
                if key in has_code:
                    break
                has_code.add(key)
                if current == root or current.parent == current:
                    break
                current = current.parent
        if folder != str(root) and any(_is_pin_file(Path(folder), f) for f in files):
            pin_folders.append(folder)
    return tuple(Path(f) for f in pin_folders if f not in has_code)


@lru_cache(maxsize=1024)
def _candidate_files(folder: Path) -> tuple[tuple[Path, Path], ...]:
    """(pin file, project root) pairs, nearest to `folder` first.

    Every folder from `folder` up to the top of the git checkout (or the filesystem root when there
    is none), so a sub-project still sees the checkout's pins; then the project's code-free folders.
    """
    root = find_project_root(folder / "__peftdoctor__.py")
    ancestors = []
    for candidate in (folder, *folder.parents):
        ancestors.append(candidate)
        note(candidate / ".git")
        if (candidate / ".git").exists():
            break
    ranked = []
    for index, ancestor in enumerate(ancestors):
        for path in _pin_files_in(ancestor):
            ranked.append(((index, 0, _file_rank(path.name), str(path)), path))
    for pin_folder in _project_wide(root):
        common = Path(os.path.commonpath([folder, pin_folder]))
        distance = len(folder.parts) - len(common.parts) + len(pin_folder.parts) - len(common.parts)
        for path in _pin_files_in(pin_folder):
            ranked.append(((distance, 1, _file_rank(path.name), str(path)), path))
    ranked.sort(key=lambda item: item[0])
    return tuple((path, root) for _, path in ranked)


def _where(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def pin_for(library: str, file_path: str) -> tuple[Pin | None, Pin | None, Path | None]:
    """(the nearest pin that fixes a version, the nearest loose pin (a floor such as `>=0.10`), project root)."""
    folder = Path(file_path).resolve().parent
    loose = None
    root = None
    for path, root in _candidate_files(folder):
        for pin in pins_in_file(path):
            if pin.library != library or not pin.specs:
                continue
            if pin.choose() is not None:
                return pin, loose, root
            loose = loose or pin
    return None, loose, root


def pins_fingerprint(folder: Path) -> str:
    """Every pin the version lookups for a file of `folder` (resolved) can read, as text: part of its cache key."""
    return "|".join(f"{path}:{pins_in_file(path)!r}" for path, _ in _candidate_files(folder))


def clear_caches() -> None:
    """Forget what was read (tests that rewrite pin files in place call this)."""
    _pins_in_file.cache_clear()
    _project_wide.cache_clear()
    _candidate_files.cache_clear()
    _pin_files_in.cache_clear()
    find_project_root.cache_clear()


# ---------------------------------------------------------------- the decision
def project_version(library: str, file_path: str, configured: dict | None = None,
                    implied: Implied | None = None) -> ProjectVersion:
    """The version of `library` the project of `file_path` runs on, and where that came from.

    `implied`: the range the file's own API use implies (api_versions.implied_versions(facts)[library]).
    """
    setting = (configured or {}).get(library)
    if setting:
        return ProjectVersion(library, parse_version(setting), f"{library} {setting}, set in config", "config",
                              "config")
    pin, loose, root = pin_for(library, file_path)
    if pin is not None:
        version, how = pin.choose()
        where = _where(Path(pin.path), root) if root else Path(pin.path).name
        if how == "exact":
            text = f"{library} {shown(version)}, pinned in {where}"
        else:
            text = f"{library} {shown(version)}, the {how} release allowed by {pin.written} in {where}"
        return ProjectVersion(library, version, text, pin.path, "pin")
    if implied is not None:
        chosen = implied.representative(loose.allows if loose is not None else None)
        if chosen is not None:
            text = (f"{implied.range_text}, implied by {implied.evidence_text}: assumed {shown(chosen)}, "
                    "the newest release in that range")
            return ProjectVersion(library, chosen, text, "implied", "implied")
    current = CURRENT_RELEASES[library]
    return ProjectVersion(library, parse_version(current), f"{library} {current}, the current release",
                          "current release", "current")

