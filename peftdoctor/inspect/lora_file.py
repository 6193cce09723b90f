"""`inspect` of a diffusers / kohya-style LoRA file: a `.safetensors` named on the command line, or a folder
without adapter_config.json that holds diffusers' `pytorch_lora_weights.safetensors` or LoRA weights.

PD623: such a file in peft's own key scheme (`base_model.model.<module>.lora_A.weight` from a PeftModel, or
`<module>.lora_A.default.weight` from a raw state_dict()). diffusers' loaders read the `unet.` / `transformer.`
/ `text_encoder.` prefixed names without an adapter name, so they load none of it (measured in
tests/test_inspect_reverse_scheme.py). Headers only, like the adapter checks.
"""

from __future__ import annotations

import os
from pathlib import Path

from peftdoctor.finding import Finding
from peftdoctor.inspect.checks import DIFFUSERS_PREFIXES, LORA_ROLES, PREFIX, carries_adapter_name
from peftdoctor.inspect.findings import finding
from peftdoctor.inspect.safetensors_header import read_header

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
PEFT_WEIGHTS = ("adapter_model.safetensors", "model.safetensors")  # read by the adapter / model folder checks
LORA_PARTS = (*LORA_ROLES, "lora_magnitude_vector")


def lora_files(location: Path) -> list[Path]:
    """The LoRA weight files `location` stands for: itself when it is a `.safetensors` file, else the folder's
    `pytorch_lora_weights.safetensors`, else its other `.safetensors` files whose tensor names say LoRA."""
    if not location.is_dir():
        return [location] if location.suffix == ".safetensors" and location.name not in PEFT_WEIGHTS else []
    if (location / "adapter_config.json").exists():
        return []
    if (location / DIFFUSERS_WEIGHTS).exists():
        return [location / DIFFUSERS_WEIGHTS]
    try:
        names = sorted(entry.name for entry in os.scandir(location)
                       if entry.name.endswith(".safetensors") and entry.name not in PEFT_WEIGHTS)
    except OSError:
        return []
    return [location / name for name in names if _names_lora(location / name)]


def _names_lora(path: Path) -> bool:
    header = read_header(path)
    return header.ok and any("lora" in tensor.name for tensor in header.tensors)


def inspect_lora_files(location: Path) -> list[Finding]:
    found = []
    for path in lora_files(location):
        header = read_header(path)
        if not header.ok:
            more = f" (and {len(header.problems) - 1} more problems)" if len(header.problems) > 1 else ""
            found.append(finding("PD602", f"{header.problems[0]}{more}", str(path),
                                 hint="The file is damaged: save the LoRA again or copy it again."))
            continue
        found += _peft_scheme([tensor.name for tensor in header.tensors], path)
    return found


def _is_lora_weight(name: str) -> bool:
    return any(f".{part}." in name or name.endswith(f".{part}") for part in LORA_PARTS)


def _peft_scheme(names: list[str], path: Path) -> list[Finding]:
    """PD623 when most LoRA weight names are peft's: wrapped in base_model.model., or carrying the adapter name."""
    weights = [name for name in names if _is_lora_weight(name)]
    wrapped = [name for name in weights if name.startswith(PREFIX)]
    named = [name for name in weights if not name.startswith(PREFIX) and carries_adapter_name(name)]
    if not weights or (len(wrapped) + len(named)) * 2 < len(weights):
        return []
    if len(wrapped) >= len(named):
        scheme, example = "a PeftModel's (base_model.model.<module>.lora_A.weight)", wrapped[0]
    else:
        scheme, example = "a raw state_dict()'s, with the adapter name (<module>.lora_A.default.weight)", named[0]
    if all(name.startswith(DIFFUSERS_PREFIXES) for name in named) and len(named) > len(wrapped):
        effect = ("diffusers' load_lora_weights creates the adapter, but no saved name matches its weights (they "
                  "carry the adapter name), so they are never loaded and stay as allocated, uninitialised "
                  "(measured: the UNet's outputs turned NaN)")
    else:
        effect = ("diffusers' load_lora_weights (and load_lora_adapter with its prefix) keeps only names under "
                  "'unet.' / 'transformer.' / 'text_encoder.', finds none here and loads nothing: no error, only a "
                  "logged \"No LoRA keys associated to ... found with the prefix='unet'\" (measured: outputs equal "
                  "the base's exactly)")
    return [finding(
        "PD623", f"{len(wrapped) + len(named)} of {len(weights)} LoRA weight names follow peft's key scheme, "
        f"{scheme}, e.g. '{example}', in a diffusers-style LoRA file without adapter_config.json: {effect}",
        str(path), scheme="peft",
        hint="Save a diffusers LoRA with save_lora_weights(dir, unet_lora_layers=convert_state_dict_to_diffusers("
             "get_peft_model_state_dict(unet))); a peft adapter is a folder with adapter_config.json beside "
             "adapter_model.safetensors (save_pretrained), loaded with PeftModel.from_pretrained.")]
