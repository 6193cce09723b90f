"""PD101: a PeftModel passed as the base model to PeftModel.from_pretrained."""

from peftdoctor.facts.values import PEFT_MODEL, all_of
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, PEFT_LOADERS, describe, finding

CODE = "PD101"


def check(facts, ctx):
    for event in facts.calls(*PEFT_LOADERS):
        base = event.arg(0, "model")
        if not all_of(base, PEFT_MODEL):  # on every path, not just one
            continue
        origin = describe(facts, base[0])
        yield finding(
            facts, event.node, CODE,
            f"the model passed to PeftModel.from_pretrained is already a PeftModel (from {origin}); "
            "the adapter is wrapped twice, its keys nest as base_model.model.base_model.model... "
            "and it loads into the wrong place or does nothing",
            "load the adapter onto the plain base model, or call model.load_adapter(path, adapter_name=...) "
            "on the existing PeftModel",
        )


register(Rule(CODE, "adapter-wrapped-twice", "A PeftModel is passed as the base to PeftModel.from_pretrained.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
