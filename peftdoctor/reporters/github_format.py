"""GitHub Actions workflow commands: one annotation line per finding.

    ::error file=train.py,line=12,col=9,endLine=12,endColumn=40,title=PD101::message

error -> ::error, warning -> ::warning, info -> ::notice. Paths are relative to
the repository root (git top level, else the working directory), as GitHub
needs them to place the annotation on the diff. A notebook's lines count within a
cell, not in the file GitHub shows, so its annotation is on the file and the
message starts with the place: `cell 3:12:5: ...`.
"""

from __future__ import annotations

from peftdoctor.finding import Finding, Severity
from peftdoctor.reporters.common import relative_path, repo_root

_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def line_for(finding: Finding, root) -> str:
    path = relative_path(finding.path, root) or finding.path
    props = [f"file={escape_property(path)}"]
    message = finding.message
    if finding.cell:
        message = f"{finding.location().removeprefix(finding.path + ':')}: {message}"
    elif finding.line:
        props.append(f"line={finding.line}")
        if finding.column:
            props.append(f"col={finding.column}")
        if finding.end_line:
            props.append(f"endLine={finding.end_line}")
            if finding.end_column:
                props.append(f"endColumn={finding.end_column}")
    props.append(f"title={escape_property(finding.code)}")
    if finding.hint:
        message += f"\nhint: {finding.hint}"
    return f"::{_COMMAND[finding.severity]} {','.join(props)}::{escape_data(message)}"


def write(findings: list[Finding], stream, **_ignored) -> None:
    root = repo_root()
    for finding in findings:
        stream.write(line_for(finding, root) + "\n")
