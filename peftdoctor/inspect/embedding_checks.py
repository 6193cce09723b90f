"""Embedding checks of an adapter against its base and tokenizer, from headers and JSON only.

PD617: a base with tied word embeddings stores one tensor for the input embedding
and the output layer (`lm_head`). A LoRA update on either is fine while the adapter
stays separate, but merging writes it into the shared tensor, so both layers move.
PD620: embedding rows saved in the adapter (a resized vocabulary) must fit the
tokenizer saved beside it, and the base must be resized to exactly that many rows.
"""

from __future__ import annotations

from pathlib import Path

from peftdoctor.finding import Finding, Severity
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


def saved_embedding_rows(adapter) -> dict[str, int]:
    """module -> rows of each whole embedding / output-layer weight in the file (save_embedding_layers,
    modules_to_save); LoRA factors and trainable-token deltas are not whole weights."""
    rows = {}
    for tensor in adapter.tensors:
        name = tensor.name.removeprefix("base_model.model.")
        if not name.endswith(".weight") or "lora_" in name or len(tensor.shape) != 2:
            continue
        module = name[: -len(".weight")].removesuffix(".modules_to_save")
        if module.rsplit(".", 1)[-1] in INPUT_EMBEDDINGS + OUTPUT_LAYERS:
            rows[module] = tensor.shape[0]
    return rows


def check_embedding_rows(adapter, tokens: tuple[int, str] | None, vocab_size: int | None) -> list[Finding]:
    """PD620: saved embedding rows fewer than the tokenizer's ids, or a row count no documented resize gives."""
    rows = saved_embedding_rows(adapter)
    if not rows:
        return []
    # the fewest rows decide; between equals, name the input embedding
    module, count = min(rows.items(), key=lambda item: (item[1], item[0].rsplit(".", 1)[-1] in OUTPUT_LAYERS))
    path = str(adapter.weights)
    if tokens and count < tokens[0]:
        needed, source = tokens
        return [finding(
            "PD620", f"'{module}' is saved with {count} rows but {Path(source).name} beside the adapter has "
            f"{needed} token ids: ids {count}..{needed - 1} index past the embedding (IndexError: index out of "
            "range in self, measured; a device-side assert on GPU)", path,
            hint="Save the tokenizer the model was trained with; tokens added after training have no trained rows "
                 "(resize and train again to use them).",
            rows=count, tokens=needed)]
    if vocab_size and count != vocab_size and (not tokens or tokens[0] != count):
        if tokens:
            why = (f"the tokenizer beside it has {tokens[0]} ids, so resize_token_embeddings(len(tokenizer)) gives "
                   f"{tokens[0]} rows and does not fit (was it resized with pad_to_multiple_of?)")
        else:
            why = "no tokenizer saved beside the adapter gives that number"
        return [finding(
            "PD620", f"'{module}' is saved with {count} rows but the base has vocab_size {vocab_size}: "
            f"PeftModel.from_pretrained raises a size mismatch unless the base is first resized to exactly "
            f"{count} rows, and {why}", path, severity=Severity.WARNING,
            hint=f"Before loading, call base.resize_token_embeddings({count}) (or len(tokenizer) with the "
                 "pad_to_multiple_of used in training); save the training tokenizer with the adapter.",
            rows=count, vocab_size=vocab_size)]
    return []
