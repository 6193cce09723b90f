"""`inspect` of a model folder (config.json and weights, no adapter_config.json): a merged or full model.

PD621: peft layers left in the weights (saved without merge_and_unload), which
transformers drops, so the adapted weights load randomly initialised.
PD622: a merged model that is not ready to serve like its base: weights stored in a
wider dtype than the base's, no tokenizer, or no chat template where the base has one.
Headers and JSON only, like the adapter checks.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.finding import Finding
from peftdoctor.inspect.base_checks import base_shapes, read_base
from peftdoctor.inspect.base_model import resolve_base
from peftdoctor.inspect.findings import finding

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer_config.json")
PEFT_LAYER = re.compile(r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|base_layer)(\.|$)")
WIDTH = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2}
DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
TORCH_NAMES = {code: name for name, code in DTYPE_NAMES.items()}


def is_model_folder(folder: Path) -> bool:
    return (not (folder / "adapter_config.json").exists() and (folder / "config.json").is_file()
            and any((folder / name).is_file() for name in WEIGHT_FILES))


def inspect_model_folder(folder: Path, base: str | None) -> list[Finding]:
    model = read_base(folder)
    if model is None:
        return [finding("PD600", f"{folder} has config.json but no readable safetensors weights", str(folder))]
    base_dir = resolve_base(base, folder) if base else None
    base_index = read_base(base_dir) if base_dir is not None else None
    return [replace(item, path=str(folder)) for item in
            (*_peft_layers(model), *_dtype(model, base_index), *_tokenizer(folder, base_dir))]


def _peft_layers(model) -> list[Finding]:
    """PD621: lora_A / lora_B / base_layer names: the model was saved with the LoRA layers still injected."""
    layers = sorted(key for key in model.keys if PEFT_LAYER.search(key))
    if not layers:
        return []
    unloaded = sorted(key for key in layers if ".base_layer." in key)
    lost = (f"; the {len(unloaded)} adapted weights themselves (e.g. "
            f"'{unloaded[0].replace('.base_layer.', '.')}') are only there as base_layer, so transformers reports "
            "them missing and initialises them randomly") if unloaded else ""
    return [finding(
        "PD621", f"{len(layers)} of {len(model.keys)} tensors are peft layers, e.g. '{layers[0]}': the model was "
        f"saved with its LoRA layers still injected (not merged); transformers drops them as unexpected keys, so "
        f"the adapter is not in the loaded model{lost}", str(model.folder),
        hint="Merge before saving: model = peft_model.merge_and_unload(); model.save_pretrained(folder) "
             "(get_base_model() and .base_model.model keep the LoRA layers).",
        tensors=len(layers))]


def _float_dtype(shapes) -> tuple[str, int] | None:
    """The dtype holding most float bytes, and the float bytes in all."""
    counts: Counter = Counter()
    for dtype, shape in shapes.values():
        if dtype in WIDTH:
            numel = 1
            for size in shape:
                numel *= size
            counts[dtype] += numel * WIDTH[dtype]
    return (counts.most_common(1)[0][0], sum(counts.values())) if counts else None


def _config_dtype(config: dict) -> str | None:
    for table in (config, config.get("text_config")):
        if isinstance(table, dict):
            value = table.get("dtype") or table.get("torch_dtype")
            if isinstance(value, str) and value in DTYPE_NAMES:
                return DTYPE_NAMES[value]
    return None


def _dtype(model, base) -> list[Finding]:
    """PD622: float weights stored wider than the base's dtype (or than the folder's own config says)."""
    stored = _float_dtype(base_shapes(model))
    if stored is None:
        return []
    dtype, size = stored
    if base is not None:
        base_stored = _float_dtype(base_shapes(base))
        reference = _config_dtype(base.config) or (base_stored[0] if base_stored else None)
        source = f"the base '{base.folder.name}'"
    else:
        reference, source = _config_dtype(model.config), "its own config.json"
    if reference is None or WIDTH[dtype] <= WIDTH[reference]:
        return []
    factor = WIDTH[dtype] // WIDTH[reference]
    stored_name, reference_name = TORCH_NAMES[dtype], TORCH_NAMES[reference]
    return [finding(
        "PD622", f"weights stored in {stored_name} but {source} is {reference_name}: {factor}x the size on disk "
        f"and in memory ({_human(size)} instead of {_human(size // factor)})", str(model.folder),
        hint=f"Load the base in its own dtype before merging (from_pretrained(..., dtype=\"auto\")) or cast the "
             f"merged model back (model.to(torch.{reference_name})) before save_pretrained.",
        stored=stored_name, expected=reference_name)]


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = regular_file.parse_json(regular_file.read_text(folder / "tokenizer_config.json"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def _tokenizer(folder: Path, base_dir: Path | None) -> list[Finding]:
    """PD622: no tokenizer files, or no chat template where the base has one."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return [finding(
            "PD622", "no tokenizer files in the model folder: AutoTokenizer.from_pretrained on it raises OSError, "
            "and a serving engine given the folder has no tokenizer", str(folder),
            hint="Save the tokenizer you trained with into the same folder: tokenizer.save_pretrained(folder).")]
    if base_dir is not None and _chat_template(base_dir) and not _chat_template(folder):
        return [finding(
            "PD622", f"the base '{base_dir.name}' has a chat template but the tokenizer saved here has none: "
            "apply_chat_template raises ValueError and chat serving cannot format messages", str(folder),
            hint="Save the base's tokenizer (or the one trained with its chat template) into the folder.")]
    return []
