"""Which library versions the *checked project* runs on.

Decided from, in order: `[tool.peftdoctor]` (peft-version = "0.10"), pins in the
project's requirements*.txt / pyproject.toml / setup.py / setup.cfg found
walking up from the checked file, else the releases current when this
peftdoctor was made. Never from the environment peftdoctor runs in: a
pre-commit env is not the training env.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Newest releases known to this version of peftdoctor.
CURRENT_RELEASES = {"peft": "0.21.2", "transformers": "5.24.0", "trl": "1.16.0", "torch": "2.13.0"}
PIN_FILES = ("requirements*.txt", "pyproject.toml", "setup.py", "setup.cfg", "environment.yml", "environment.yaml")


@dataclass(frozen=True)
class ProjectVersion:
    library: str
    version: tuple[int, ...]
    text: str  # e.g. "peft==0.10.0" or "peft 0.21.2 (current release)"
    source: str  # "config", a file path, or "current release"

    def below(self, *minimum: int) -> bool:
        return self.version < tuple(minimum)


def parse_version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers) or (0,)


def _effective(specs: list[tuple[str, str]], library: str) -> tuple[int, ...] | None:
    """One version that the specifiers allow, preferring exact pins and upper bounds."""
    for op, text in specs:
        if op in ("==", "~=", "==="):
            return parse_version(text)
    uppers = [(op, parse_version(text)) for op, text in specs if op in ("<", "<=")]
    if uppers:
        op, version = min(uppers, key=lambda item: item[1])
        if op == "<=":
            return version
        return (*version[:-1], version[-1] - 1, 999) if version[-1] > 0 else (*version[:-1], 0)
    current = parse_version(CURRENT_RELEASES[library])
    lowers = [parse_version(text) for op, text in specs if op in (">=", ">")]
    if lowers and max(lowers) > current:
        return max(lowers)
    return None


def _specs_in(text: str, library: str) -> list[tuple[str, str]]:
    pattern = re.compile(
        rf"(?<![\w.-]){re.escape(library)}(?:\[[^\]]*\])?\s*((?:(?:==|~=|<=|>=|<|>|!=)\s*[0-9][\w.*+-]*\s*,?\s*)+)",
        re.IGNORECASE,
    )
    specs = []
    for match in pattern.finditer(text):
        for op, version in re.findall(r"(==|~=|<=|>=|<|>|!=)\s*([0-9][\w.*+-]*)", match.group(1)):
            specs.append((op, version.rstrip(".*")))
    return specs


@lru_cache(maxsize=256)
def _pins_in_folder(folder: Path, library: str) -> tuple[str, tuple[int, ...]] | None:
    for pattern in PIN_FILES:
        for candidate in sorted(folder.glob(pattern)):
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            specs = _specs_in(text, library)
            if specs:
                version = _effective(specs, library)
                if version is not None:
                    return str(candidate), version
    return None


@lru_cache(maxsize=1024)
def _resolve(library: str, folder: Path, configured: str | None) -> ProjectVersion:
    if configured:
        return ProjectVersion(library, parse_version(configured), f"{library} {configured}, set in config", "config")
    for candidate in (folder, *folder.parents):
        found = _pins_in_folder(candidate, library)
        if found:
            source, version = found
            shown = ".".join(str(n) for n in version)
            return ProjectVersion(library, version, f"{library} {shown}, pinned in {Path(source).name}", source)
        if (candidate / ".git").exists():
            break
    current = CURRENT_RELEASES[library]
    return ProjectVersion(library, parse_version(current), f"{library} {current}, the current release", "current release")


def project_version(library: str, file_path: str, configured: dict | None = None) -> ProjectVersion:
    folder = Path(file_path).resolve().parent
    return _resolve(library, folder, (configured or {}).get(library))
