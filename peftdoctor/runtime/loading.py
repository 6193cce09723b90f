"""Load a base model and a saved adapter onto it, offline, recording what went wrong.

Everything heavy is imported inside the functions: importing this module is light.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from peftdoctor.runtime.errors import BaseNotFound, DeepError, RuntimeMissing

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

TASK_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}


def go_offline() -> None:
    """Never touch the network: the hub libraries read these at import time."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def require_runtime(*, offline: bool = True) -> None:
    """Raise RuntimeMissing naming what is absent, before any heavy import.

    `offline` (the deep checks) also switches the hub off and transformers' progress bars;
    diagnose() runs inside the user's script and leaves both alone.
    """
    missing = [name for name in ("torch", "transformers", "peft") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeMissing(", ".join(missing))
    if offline:
        go_offline()
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # a broken install, e.g. a missing compiled part
        raise RuntimeMissing(f"a working torch/transformers/peft ({exc})") from None
    if offline:
        transformers.utils.logging.disable_progress_bar()


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeepError(f"{path}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DeepError(f"{path}: expected a JSON object")
    return data


def resolve_base(base: str | None, adapter_config: dict, adapter_dir: Path) -> Path:
    """A local folder, or a name already in the local HF cache; never a download."""
    name = base or adapter_config.get("base_model_name_or_path")
    if not name:
        raise BaseNotFound(f"{adapter_dir}: adapter_config.json names no base model; pass --base FOLDER")
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BaseNotFound(f"{folder}: base model folder has no config.json")
        return folder
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(str(name), local_files_only=True))
    except Exception:  # not cached, bad repo id, or offline failure: all mean "not local"
        where = "--base" if base else "the adapter's base_model_name_or_path"
        raise BaseNotFound(
            f"base model '{name}' (from {where}) is not a local folder and not in the local HF cache; "
            "pass --base FOLDER (peftdoctor never downloads)"
        ) from None
    if not (cached / "config.json").is_file():
        raise BaseNotFound(f"base model '{name}' in the HF cache has no config.json")
    return cached


def adapter_weights_file(adapter_dir: Path) -> Path:
    for name in ADAPTER_WEIGHTS:
        if (adapter_dir / name).is_file():
            return adapter_dir / name
    raise DeepError(f"{adapter_dir}: no adapter_model.safetensors or adapter_model.bin")


def adapter_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the saved adapter tensors, without loading them when safetensors."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:
            raise DeepError(f"{weights}: cannot read safetensors header: {exc}") from None
    import torch

    try:
        state = torch.load(str(weights), map_location="meta", weights_only=True, mmap=True)
    except Exception as exc:
        raise DeepError(f"{weights}: cannot read adapter weights safely: {exc}") from None
    return {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}


def model_class(adapter_config: dict, base_config: dict):
    """The transformers class the adapter was trained on: its task_type, else the base's architecture."""
    import transformers

    task = adapter_config.get("task_type")
    if task in TASK_CLASSES:
        return getattr(transformers, TASK_CLASSES[task])
    for arch in base_config.get("architectures") or ():
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


@dataclass
class Loaded:
    """The adapted model and everything the loaders told us on the way."""

    model: object
    base_missing: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    trainable: bool = True
    error: str = ""


def load_base(folder: Path, cls, *, dtype: str, device: str, device_map, extra: dict):
    """Load the base once, straight onto its device (no second copy on the cpu)."""
    import torch

    kwargs = dict(dtype=getattr(torch, dtype), local_files_only=True, output_loading_info=True,
                  low_cpu_mem_usage=True, **extra)
    if device_map:
        kwargs["device_map"] = device_map
    elif device != "cpu":
        kwargs["device_map"] = {"": device}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model, info = cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeepError(f"{folder}: cannot load base model: {first}") from None
    return model, sorted(info.get("missing_keys") or ())


def load_adapter(base_model, adapter_dir: Path, *, trainable: bool) -> Loaded:
    """Wrap like PeftModel.from_pretrained, but keep load_adapter's load_result."""
    from peft import PeftConfig, PeftModel
    from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = PeftConfig.from_pretrained(str(adapter_dir))
            trainable = trainable and not config.is_prompt_learning
            config.inference_mode = not trainable
            cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel)
            model = cls(base_model, config, "default")
            result = model.load_adapter(str(adapter_dir), "default", is_trainable=trainable)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            return Loaded(model=None, error=" ".join(str(exc).split())[:400] or type(exc).__name__,
                          trainable=trainable)
    messages = [str(w.message) for w in caught if _worth_reporting(str(w.message))]
    unexpected = list(result.unexpected_keys)
    if config.is_prompt_learning:
        # peft 0.21 loads `prompt_embeddings` into the prompt encoder itself, yet still
        # lists it as unexpected in load_result (checked: the loaded prompt equals the saved one).
        unexpected = [key for key in unexpected if key != "prompt_embeddings"]
    return Loaded(model=model, missing_keys=list(result.missing_keys),
                  unexpected_keys=unexpected, messages=messages, trainable=trainable)


def _worth_reporting(message: str) -> bool:
    return "deprecated" not in message and "is_gradient_checkpointing" not in message
