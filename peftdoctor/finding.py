"""The one finding type shared by static checks, inspect and the runtime API."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]


@dataclass(frozen=True)
class Finding:
    """One problem at one place.

    `path` is the checked file (or adapter folder / file for inspect); line and
    column are 1-based (column 0 means "whole file"). `versions` says which
    library versions the finding applies to, when the rule depends on them.
    In a notebook, `cell` is the 1-based cell (markdown cells counted) and line/end_line count within it.
    """

    code: str
    message: str
    path: str
    line: int = 1
    column: int = 0
    hint: str = ""
    severity: Severity = Severity.ERROR
    end_line: int | None = None
    end_column: int | None = None
    versions: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    cell: int | None = None

    def sort_key(self):
        return (self.path, self.cell or 0, self.line, self.column, self.code, self.message)

    def with_severity(self, severity: Severity) -> "Finding":
        return replace(self, severity=severity)

    def location(self) -> str:
        path = f"{self.path}:cell {self.cell}" if self.cell else self.path
        if self.column:
            return f"{path}:{self.line}:{self.column}"
        if self.line:
            return f"{path}:{self.line}"
        return path


@dataclass
class CheckResult:
    """What `check` found in some files, with how much it read."""

    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    lines_checked: int = 0
    unused_suppressions: list[Finding] = field(default_factory=list)
