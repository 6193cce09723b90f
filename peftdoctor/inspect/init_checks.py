"""PD618: LoRA initialisations that change the base weights, saved without peft's conversion.

PiSSA, OLoRA, CorDA and LoRA-GA move part of each adapted weight into the
adapter at init (W_res = W - scale * B0 @ A0). The saved adapter is right only on
that residual base unless `save_pretrained(..., path_initial_model_for_weight_conversion=...)`
turned it into a plain LoRA, which then says `init_lora_weights: true`.
"""

from __future__ import annotations

from peftdoctor.finding import Finding
from peftdoctor.inspect.findings import finding

NAMES = {"pissa": "PiSSA", "olora": "OLoRA", "corda": "CorDA", "lora_ga": "LoRA-GA"}


def base_changing_init(value) -> str:
    """The method name when `init_lora_weights` is one peft applies by changing the base weights, else ''."""
    if not isinstance(value, str):
        return ""
    lowered = value.lower()
    for prefix in ("pissa", "corda"):  # peft matches these by prefix: "pissa_niter_16"
        if lowered.startswith(prefix):
            return NAMES[prefix]
    return NAMES.get(lowered, "")


def check_unconverted_init(adapter) -> list[Finding]:
    """PD618: an adapter whose init changed the base weights, saved as is."""
    value = adapter.config.get("init_lora_weights")
    method = base_changing_init(value)
    if adapter.peft_type != "LORA" or not method:
        return []
    randomized = str(value).lower().startswith("pissa_niter_")
    peft_side = ("even peft's own loader, which redoes the init on load, rebuilds another residual from its "
                 "randomized SVD (off by 0.05)" if randomized else
                 "only peft's own loader, which redoes the init (an SVD/QR of every adapted weight) on load, "
                 "rebuilds that residual")
    return [finding(
        "PD618", f"init_lora_weights {value!r}: {method} moved the initial adapter out of the base weights, and "
        f"the adapter was saved without converting it: applied as a plain LoRA to the base as published (what "
        f"serving engines and merge tools do) its logits are off (by 0.09 for PiSSA, 0.18 for OLoRA on a tiny "
        f"Llama, measured); {peft_side}",
        str(adapter.folder / "adapter_config.json"),
        hint="Save the initial adapter before training, then save_pretrained(out, "
             "path_initial_model_for_weight_conversion=<that folder>): peft writes a plain LoRA of rank 2r that "
             "fits the original base. Or ship the residual base model and load the adapter on it.",
        method=method)]
