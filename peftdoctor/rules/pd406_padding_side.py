"""PD406: batched generate() on a decoder-only model with inputs padded on the right."""

from peftdoctor.facts.library import is_causal_lm_class
from peftdoctor.facts.values import BASE_MODEL, ENCODING, PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding

CODE = "PD406"


def _decoder_only(value) -> bool:
    if value.kind == BASE_MODEL:
        return is_causal_lm_class(value.get("class_name"))
    if value.kind == PEFT_MODEL:
        bases = value.get("base") or ()
        return bool(bases) and all(b.kind == BASE_MODEL and is_causal_lm_class(b.get("class_name")) for b in bases)
    return False


def _right_padded(event):
    """An encoding padded on the right that some path gives to this generate() call."""
    passed = [event.arg(0, "input_ids"), event.kwargs.get("attention_mask"), *event.unpacked]
    for values in passed:
        for value in values or ():
            if value.kind == ENCODING and value.get("padded") and value.get("padding_side") == "right" \
                    and not value.get("maybe"):
                return value
    return None


def check(facts, ctx):
    for event in facts.method_calls("generate"):
        if not any(_decoder_only(v) and not v.get("maybe") for v in event.receiver):
            continue
        encoding = _right_padded(event)
        if encoding is None:
            continue
        yield finding(
            facts, event.node, CODE,
            f"generate() on a decoder-only model with inputs padded on the right ({facts.where(encoding.node)}, "
            "padding_side='right'): the shorter prompts continue after their pad tokens, so their outputs are "
            "wrong (measured: the shorter prompt of a batch of two gets a different greedy continuation than "
            "alone); transformers only warns at run time",
            "pad on the left for generation: tokenizer.padding_side = 'left' (or padding_side='left' in the "
            "tokenizer call), and keep right padding for training",
        )


register(Rule(CODE, "padding-side",
              "Batched generate() on a decoder-only model with inputs padded on the right.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
