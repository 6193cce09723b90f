"""adapter_config.json: read it (PD600) and check it against the installed peft (PD601)."""

from __future__ import annotations

from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect import peft_source
from peftdoctor.inspect.findings import finding

CONFIG_NAME = "adapter_config.json"
LORA_LIKE = {"LORA", "ADALORA", "LOHA", "LOKR", "VERA", "RANDLORA", "HRA", "BOFT", "OFT", "IA3", "FOURIERFT"}
# Types whose `r` is a rank that must be positive. OFT's r may be 0 when oft_block_size
# sets the block size instead (peft >= 0.14 accepts exactly one of the two).
RANKED = {"LORA", "ADALORA", "LOHA", "LOKR", "VERA", "RANDLORA", "HRA"}


class ConfigUnreadable(Exception):
    """adapter_config.json cannot be used; the message names the file (PD600)."""


def load_adapter_config(folder: Path) -> dict:
    """The parsed config, or ConfigUnreadable with a one-line reason."""
    path = folder / CONFIG_NAME
    try:
        text = regular_file.read_text(path)
    except FileNotFoundError:
        raise ConfigUnreadable(f"no {CONFIG_NAME} in {folder}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigUnreadable(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        config = regular_file.parse_json(text)
    except ValueError as exc:
        raise ConfigUnreadable(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigUnreadable(f"{path} must hold a JSON object, not {type(config).__name__}")
    if not config.get("peft_type"):
        raise ConfigUnreadable(f"{path} has no 'peft_type' field: peft cannot tell which method to load")
    return config


def check_config(config: dict, path: str) -> list[Finding]:
    """PD601: what peft would reject, ignore or get wrong in this config."""
    found: list[Finding] = []
    peft_type = config.get("peft_type")
    installed = peft_source.installed_version()
    known = peft_source.known_peft_types()
    if not isinstance(peft_type, str) or peft_type.upper() not in known:
        where = f"peft {installed}" if installed else "peft"
        found.append(finding("PD601", f"unknown peft_type {peft_type!r}: {where} cannot load this adapter", path,
                             hint="Use a peft version that has this method, or fix peft_type."))
        return found
    saved_version = config.get("peft_version")
    if installed and isinstance(saved_version, str):
        if peft_source.version_tuple(saved_version) > peft_source.version_tuple(installed):
            found.append(finding(
                "PD601", f"saved with peft {saved_version}, newer than the installed peft {installed}", path,
                hint="Upgrade peft: options added since may be ignored when loading.", severity=Severity.WARNING,
                versions=f"peft {installed}"))
    fields = peft_source.config_fields(peft_type.upper())
    if fields:
        unknown = sorted(set(config) - fields)
        if unknown:
            found.append(finding(
                "PD601", f"fields unknown to the installed peft {installed}: {', '.join(unknown)} "
                f"(peft will ignore them)", path,
                hint="Upgrade peft, or drop the fields if they are typos.", severity=Severity.WARNING,
                versions=f"peft {installed}"))
    if peft_type.upper() in LORA_LIKE:
        rank = config.get("r")
        if peft_type.upper() in RANKED and rank is not None and (type(rank) is not int or rank <= 0):
            found.append(finding("PD601", f"r = {rank!r}: the rank must be a positive integer", path))
        targets = config.get("target_modules", ...)
        if targets is not ... and not targets and not config.get("target_parameters"):
            found.append(finding("PD601", "target_modules is empty: the adapter adapts no layer", path,
                                 hint="List the layers to adapt, e.g. [\"q_proj\", \"v_proj\"], or \"all-linear\"."))
    return found
