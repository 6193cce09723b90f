"""SARIF 2.1.0, in the shape GitHub code scanning accepts.

One run; `tool.driver.rules` lists each rule that has a result (id, name,
short/full description, help text+markdown from rules/<CODE>.md, helpUri,
default level); each result points at its rule by `ruleId` and `ruleIndex`.
Locations are relative to the repository root (git top level, else the working
directory) with `uriBaseId` "%SRCROOT%"; a finding on line 0 (a whole file or
folder) has no region. In a notebook the region counts lines within the code cell that
`properties.cell` (1-based) names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from peftdoctor import __version__
from peftdoctor.finding import Finding, Severity
from peftdoctor.registry import DOCS_URL, get_rule
from peftdoctor.reporters.common import doc_section, relative_path, repo_root, rule_doc

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/peftdoctor/peftdoctor"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def rule_descriptor(code: str) -> dict:
    rule = get_rule(code)
    summary = rule.summary if rule else f"peftdoctor rule {code}"
    doc = rule_doc(code)
    full = (doc and doc_section(doc, "What it does")) or summary
    severity = rule.severity if rule else Severity.ERROR
    descriptor = {
        "id": code,
        "name": _pascal(rule.name) if rule else code,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": full},
        "helpUri": rule.url if rule else DOCS_URL.format(code=code),
        "defaultConfiguration": {"level": _LEVEL[severity]},
        "properties": {"tags": ["peft", rule.kind if rule else "static"]},
    }
    descriptor["help"] = {"text": doc or summary, "markdown": doc or summary}
    return descriptor


def _pascal(name: str) -> str:
    # SARIF recommends a name that is an identifier, e.g. AdapterWrappedTwice.
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-") if part) or name


def _quote_path(path: str) -> str:
    """A path as a URI path: the file name's own bytes percent-encoded (a name that is not UTF-8 comes from
    the OS as lone surrogates, which `quote` alone cannot encode)."""
    try:
        return quote(os.fsencode(path))
    except UnicodeEncodeError:  # surrogates that stand for no byte: keep them visible, as escapes
        return quote(path.encode("utf-8", "backslashreplace"))


def _location(finding: Finding, root: Path) -> dict:
    relative = relative_path(finding.path, root)
    if relative is not None:
        artifact = {"uri": _quote_path(relative), "uriBaseId": "%SRCROOT%"}
    else:
        artifact = {"uri": Path(finding.path).resolve().as_uri()}
    physical: dict = {"artifactLocation": artifact}
    if finding.line and finding.line > 0:
        region: dict = {"startLine": finding.line}
        if finding.column and finding.column > 0:
            region["startColumn"] = finding.column
        if finding.end_line and finding.end_line >= finding.line:
            region["endLine"] = finding.end_line
            if finding.end_column and finding.end_column > 0:
                region["endColumn"] = finding.end_column
        physical["region"] = region
    return {"physicalLocation": physical}


def report(findings: list[Finding], root: Path | None = None) -> dict:
    root = root or repo_root()
    codes = sorted({f.code for f in findings})
    index = {code: i for i, code in enumerate(codes)}
    results = []
    for finding in findings:
        text = finding.message
        if finding.hint:
            text += f"\nHint: {finding.hint}"
        result = {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": _LEVEL[finding.severity],
            "message": {"text": text},
            "locations": [_location(finding, root)],
        }
        properties = {"versions": finding.versions} if finding.versions else {}
        if finding.cell:
            properties["cell"] = finding.cell
        if properties:
            result["properties"] = properties
        results.append(result)
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "peftdoctor",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [rule_descriptor(code) for code in codes],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.as_uri().rstrip("/") + "/"}},
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def write(findings: list[Finding], stream, **_ignored) -> None:
    json.dump(report(findings), stream, indent=2)
    stream.write("\n")
