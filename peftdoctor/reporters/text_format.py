"""Human output: `path:line:col: CODE message`, a hint line, then a summary."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.markup import escape

from peftdoctor.finding import Finding, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def write(findings: list[Finding], stream, *, color: bool | None = None, files_checked: int | None = None,
          statistics: bool = False, noun: str = "file", **_ignored) -> None:
    console = Console(file=stream, force_terminal=color, no_color=color is False, highlight=False,
                      soft_wrap=True, emoji=False)
    for finding in findings:
        style = _STYLE[finding.severity]
        suffix = f" [dim]({escape(finding.versions)})[/dim]" if finding.versions else ""
        console.print(
            f"[bold]{escape(finding.location())}[/bold]: [{style}]{finding.code}[/{style}] "
            f"{escape(finding.message)}{suffix}"
        )
        if finding.hint:
            console.print(f"  [dim]hint:[/dim] {escape(finding.hint)}")
    if statistics and findings:
        counts = Counter(f.code for f in findings)
        for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            console.print(f"{count:5d}  {code}")
    console.print(summary_line(findings, files_checked, noun))


def summary_line(findings: list[Finding], files_checked: int | None, noun: str = "file") -> str:
    by_severity = Counter(f.severity for f in findings)
    checked = ""
    if files_checked is not None:
        checked = f" in {files_checked} {noun}{'' if files_checked == 1 else 's'}"
    if not findings:
        return f"No findings{checked}."
    parts = [f"{by_severity[s]} {s.value}{'' if by_severity[s] == 1 else 's'}" for s in Severity if by_severity[s]]
    total = len(findings)
    return f"Found {total} finding{'' if total == 1 else 's'}{checked} ({', '.join(parts)})."
