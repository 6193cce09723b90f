"""Human output: `path:line:col: CODE [*] message`, a hint line, then a summary.

`[*]` marks a finding that `check --fix` fixes. `statistics` prints one line per code (count, code,
mark, name) instead of the findings, as ruff does; `quiet` prints the findings and nothing else.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.markup import escape

from peftdoctor.finding import Finding, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
FIXABLE_MARK = "[*]"


def console_for(stream, color: bool | None) -> Console:
    """True: escape codes whatever the environment; False: none; None: rich decides (is it a terminal?)."""
    return Console(file=stream, force_terminal=color, no_color=False if color else None, highlight=False,
                   soft_wrap=True, emoji=False)


def is_fixable(finding: Finding) -> bool:
    return bool(finding.extra.get("fix"))


def describe_fix(fix: dict) -> str:
    """One line saying what `--fix` changes (see peftdoctor.fix for the edit kinds)."""
    verb = "add" if fix.get("kind") == "add_keyword" else "set"
    return f"{verb} `{fix.get('keyword')}={fix.get('value')}` in the call at line {fix.get('line')}"


def write(findings: list[Finding], stream, *, color: bool | None = None, files_checked: int | None = None,
          statistics: bool = False, noun: str = "file", quiet: bool = False, show_fixes: bool = False,
          **_ignored) -> None:
    console = console_for(stream, color)
    if statistics:
        _write_statistics(findings, console)
    else:
        for finding in findings:
            _write_finding(finding, console, show_fixes)
    if quiet:
        return
    console.print(summary_line(findings, files_checked, noun))
    fixable = sum(map(is_fixable, findings))
    if fixable:
        console.print(f"{escape(FIXABLE_MARK)} {fixable} fixable with `--fix`.")


def _write_finding(finding: Finding, console: Console, show_fixes: bool) -> None:
    style = _STYLE[finding.severity]
    mark = f"{escape(FIXABLE_MARK)} " if is_fixable(finding) else ""
    suffix = f" [dim]({escape(finding.versions)})[/dim]" if finding.versions else ""
    console.print(
        f"[bold]{escape(finding.location())}[/bold]: [{style}]{finding.code}[/{style}] "
        f"{mark}{escape(finding.message)}{suffix}"
    )
    if finding.hint:
        console.print(f"  [dim]hint:[/dim] {escape(finding.hint)}")
    if show_fixes and is_fixable(finding):
        console.print(f"  [dim]fix:[/dim] {escape(describe_fix(finding.extra['fix']))}")


def _write_statistics(findings: list[Finding], console: Console) -> None:
    """`count  code  [*] name` in aligned columns, most frequent first; marks only when something is fixable."""
    from peftdoctor.registry import get_rule

    counts = Counter(f.code for f in findings)
    fixable = {f.code for f in findings if is_fixable(f)}
    width = max((len(str(n)) for n in counts.values()), default=1)
    code_width = max((len(code) for code in counts), default=1)
    for code, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        rule = get_rule(code)
        mark = (FIXABLE_MARK if code in fixable else "[ ]") + " " if fixable else ""
        console.print(escape(f"{count:>{width}}  {code:<{code_width}}  {mark}{rule.name if rule else ''}"))


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
