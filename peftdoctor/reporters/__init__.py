"""Reporters turn findings into text for people or machines.

`render(fmt, findings, stream, **info)` is the one entry point; each format
lives in its own module with a `write(findings, stream, **info)` function.
"""

from __future__ import annotations

import importlib

FORMATS = ("text", "json", "sarif", "github", "junit")


def render(fmt: str, findings, stream, **info) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format '{fmt}' (choose from {', '.join(FORMATS)})")
    module = importlib.import_module(f"peftdoctor.reporters.{fmt}_format")
    module.write(findings, stream, **info)
