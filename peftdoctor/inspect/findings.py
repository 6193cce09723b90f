"""Build inspect findings with the registered default severity and no line number."""

from __future__ import annotations

from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect.codes import SEVERITY


def finding(code: str, message: str, path: str, *, hint: str = "", severity: Severity | None = None,
            versions: str = "", **extra) -> Finding:
    """A finding about a file or folder as a whole (line 0 prints as just the path)."""
    return Finding(code=code, message=message, path=str(path), line=0, column=0, hint=hint,
                   severity=severity or SEVERITY[code], versions=versions, extra=extra)
