"""PD101: a PeftModel passed as the base model to PeftModel.from_pretrained."""

from peftdoctor.facts.values import PEFT_MODEL, TUNER
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, PEFT_LOADERS, describe, finding, on_some_path

CODE = "PD101"


def check(facts, ctx):
    for event in facts.calls(*PEFT_LOADERS):
        wrapped = on_some_path(event.arg(0, "model"), PEFT_MODEL, TUNER)
        if wrapped is None:
            continue
        origin = describe(facts, wrapped)
        what = "already a PeftModel" if wrapped.kind == PEFT_MODEL else \
            "a PeftModel's .base_model (the LoRA tuner, its layers still injected)"
        yield finding(
            facts, event.node, CODE,
            f"the model passed to PeftModel.from_pretrained is {what} (from {origin}); "
            "the adapter is wrapped twice, its keys nest as base_model.model.base_model.model... "
            "and it loads into the wrong place or does nothing",
            "load the adapter onto the plain base model (peft_model.unload() gives it back; get_base_model() and .base_model keep the injected layers), "
            "or call model.load_adapter(path, adapter_name=...) on the existing PeftModel",
        )


register(Rule(CODE, "adapter-wrapped-twice", "A PeftModel is passed as the base to PeftModel.from_pretrained.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
