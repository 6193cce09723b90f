"""JUnit XML: one <testsuite name="peftdoctor">, one <testcase> per finding.

Each error or warning is a testcase (classname = the path, name = "CODE line:col", or "CODE cell N:line:col"
in a notebook)
with a <failure type="error|warning" message="..."> whose text holds the location
and hint. Info findings are passing testcases. A run with no findings still has
one passing testcase, "peftdoctor", so CI shows that the check ran.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from peftdoctor.finding import Finding, Severity

# Characters XML 1.0 cannot hold, not even as &#...; references; ElementTree writes them as they are (lone
# surrogates from a file name that is not UTF-8 or a JSON file, control characters from a hostile header).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def build(findings: list[Finding], files_checked: int | None = None, tool_kind: str = "check") -> ET.Element:
    failures = [f for f in findings if f.severity != Severity.INFO]
    suite = ET.Element("testsuite", {
        "name": "peftdoctor",
        "tests": str(max(len(findings), 1)),
        "failures": str(len(failures)),
        "errors": "0",
        "skipped": "0",
    })
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", {"name": "kind", "value": tool_kind})
    if files_checked is not None:
        ET.SubElement(properties, "property", {"name": "files_checked", "value": str(files_checked)})
    if not findings:
        ET.SubElement(suite, "testcase", {"classname": "peftdoctor", "name": "peftdoctor"})
    for finding in findings:
        where = f"{finding.line}:{finding.column}" if finding.column else f"{finding.line}"
        if finding.cell:
            where = f"cell {finding.cell}:{where}"
        case = ET.SubElement(suite, "testcase", {"classname": finding.path, "name": f"{finding.code} {where}",
                                                 "file": finding.path, "line": str(finding.line)})
        body = f"{finding.location()}: {finding.code} {finding.message}"
        if finding.hint:
            body += f"\nhint: {finding.hint}"
        if finding.severity == Severity.INFO:
            ET.SubElement(case, "system-out").text = body
        else:
            failure = ET.SubElement(case, "failure", {"type": finding.severity.value,
                                                      "message": f"{finding.code}: {finding.message}"})
            failure.text = body
    return suite


def write(findings: list[Finding], stream, *, files_checked: int | None = None, tool_kind: str = "check",
          **_ignored) -> None:
    suite = build(findings, files_checked, tool_kind)
    ET.indent(suite)
    stream.write('<?xml version="1.0" encoding="utf-8"?>\n')
    stream.write(NOT_XML.sub(lambda match: f"\\u{ord(match[0]):04x}", ET.tostring(suite, encoding="unicode")))
    stream.write("\n")
