"""JSON report: one object, stable schema (version 1).

    {
      "version": 1,                      # schema version; bumped only on breaking changes
      "tool": {"name": "peftdoctor", "version": "0.1.0"},
      "kind": "check" | "inspect",
      "files_checked": 3,                # files (check) or adapters (inspect); null if unknown
      "statistics": {"PD101": 1},        # findings per code
      "findings": [
        {
          "code": "PD101", "name": "adapter-wrapped-twice",   # name: null for unknown codes
          "message": "...", "hint": "...", "severity": "error" | "warning" | "info",
          "path": "train.py", "line": 12, "column": 9,           # 1-based; column 0 = whole line
          "end_line": 12, "end_column": 40,                       # null when unknown
          "url": "https://.../rules/PD101.md",
          "versions": "",                                         # library versions it applies to
          "fixable": true,                                        # `check --fix` can fix it
          "cell": 3                 # only in a notebook: its 1-based cell; line and end_line count in it
        }
      ],
      "adapters": [                      # inspect only: what each readable adapter holds
        {"path": "out/adapter", "weights": "out/adapter/adapter_model.safetensors",
         "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model": "...", "r": 8, "lora_alpha": 16,
         "target_modules": ["q_proj", "v_proj"], "tensors": 4, "parameters": 8192,
         "dtypes": {"F32": 4}, "bytes": 32768}
      ]
    }

Findings are sorted by path, cell, line, column, code. New keys may be added.
"""

from __future__ import annotations

import json

from peftdoctor import __version__
from peftdoctor.finding import Finding
from peftdoctor.registry import DOCS_URL, get_rule
from peftdoctor.reporters.common import statistics

SCHEMA_VERSION = 1


def finding_to_dict(finding: Finding) -> dict:
    rule = get_rule(finding.code)
    return {
        "code": finding.code,
        "name": rule.name if rule else None,
        "message": finding.message,
        "hint": finding.hint,
        "severity": finding.severity.value,
        "path": finding.path,
        "line": finding.line,
        "column": finding.column,
        "end_line": finding.end_line,
        "end_column": finding.end_column,
        "url": rule.url if rule else DOCS_URL.format(code=finding.code),
        "versions": finding.versions,
        "fixable": bool(finding.extra.get("fix")),
    } | ({"cell": finding.cell} if finding.cell else {})


def report(findings: list[Finding], *, files_checked: int | None = None, tool_kind: str = "check",
           adapters: list[dict] | None = None) -> dict:
    data = {
        "version": SCHEMA_VERSION,
        "tool": {"name": "peftdoctor", "version": __version__},
        "kind": tool_kind,
        "files_checked": files_checked,
        "statistics": statistics(findings),
        "findings": [finding_to_dict(f) for f in findings],
    }
    if tool_kind == "inspect":
        data["adapters"] = adapters or []
    return data


def write(findings: list[Finding], stream, *, files_checked: int | None = None, tool_kind: str = "check",
          adapters: list[dict] | None = None, **_ignored) -> None:
    json.dump(report(findings, files_checked=files_checked, tool_kind=tool_kind, adapters=adapters), stream,
              indent=2)
    stream.write("\n")
