"""PD501: an adapter merged into a 4/8-bit quantized base (bitsandbytes, GPTQ, AWQ)."""

from peftdoctor.facts.library import FLAGLESS_BNB_CONFIG_IS_4BIT_FROM, quantized_by_default
from peftdoctor.facts.values import BASE_MODEL, PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding

CODE = "PD501"
MERGES = ("merge_and_unload", "merge_adapter")


def quantized_origin(peft):
    """The value that loaded quantized weights under this PeftModel on some real path, or None."""
    if peft.get("quantization"):
        return peft  # AutoPeftModel*.from_pretrained(..., quantization_config=...)
    for base in peft.get("base") or ():
        if base.kind == BASE_MODEL and base.get("quantization") and not base.get("maybe"):
            return base
    return None


def _what_happens(quantization: str) -> str:
    if "bitsandbytes" in quantization:
        return ("the LoRA delta is added to the dequantized weights, which are then rounded back to "
                f"{quantization.split()[0]}, so the merged model is not the one trained (peft warns 'may get "
                "different generations due to rounding errors'; measured on a tiny Llama: logits moved by up to "
                "0.3 with 4-bit, 0.01 with 8-bit)")
    return ("peft cannot merge into these layers: GPTQ raises ValueError('Cannot merge LORA layers when the model "
            "is gptq quantized'), AWQ NotImplementedError")


def _an_option_of_its_own(facts, merge, peft) -> bool:
    """The merge runs under a condition of its own, beyond the one that loads the adapter (a `--merge`
    flag): together with a quantization some paths skip, the lossy pair is a choice of the user's."""
    for event in facts.events:
        if event.node is peft.node and merge.branches[:len(event.branches)] == event.branches:
            return len(merge.branches) > len(event.branches)
    return False


def _by_default(facts, origin) -> bool:
    """The call that loaded the quantized weights quantizes only through a config field's default."""
    return any(event.node is origin.node and quantized_by_default(event) for event in facts.events)


def check(facts, ctx):
    reported = set()
    for event in facts.events:
        if event.method not in MERGES or not event.name.startswith(".") or id(event.node) in reported:
            continue
        for peft in event.receiver:
            origin = quantized_origin(peft) if peft.kind == PEFT_MODEL and not peft.get("maybe") else None
            if origin is None or (origin.get("quantization_optional") and _an_option_of_its_own(facts, event, peft)):
                continue
            flagless = ""
            if origin.get("quantization_flagless"):
                transformers = ctx.version("transformers", facts)
                if transformers.below(*FLAGLESS_BNB_CONFIG_IS_4BIT_FROM):
                    continue  # such a config loaded the weights unquantized then
                flagless = ("; its BitsAndBytesConfig sets no load_in_* flag, and transformers >= 4.38 loads "
                            f"such a config in 4-bit all the same (here: {transformers.text})")
            reported.add(id(event.node))
            quantization = origin.get("quantization")
            default = ("; the flag that quantizes is a config field's declared default, which holds wherever "
                       "the config (or its file) does not set it") if _by_default(facts, origin) else ""
            default += flagless
            yield finding(
                facts, event.node, CODE,
                f"{event.method}() merges the adapter into a {quantization} base (loaded by "
                f"{describe(facts, origin)}{default}): {_what_happens(quantization)}",
                "reload the base model in float16/bfloat16 (no quantization_config), load the adapter onto it "
                "with PeftModel.from_pretrained, and merge there",
            )
            break


register(Rule(CODE, "merge-on-quantized-base",
              "An adapter is merged (merge_and_unload / merge_adapter) into a 4/8-bit quantized base.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
