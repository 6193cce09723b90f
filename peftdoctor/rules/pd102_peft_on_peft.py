"""PD102: get_peft_model (or a TRL trainer's peft_config) applied to a PeftModel."""

from peftdoctor.facts.values import PEFT_MODEL, TRAINER, all_of
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding

CODE = "PD102"


def check(facts, ctx):
    for event in facts.calls("peft.get_peft_model"):
        base = event.arg(0, "model")
        if all_of(base, PEFT_MODEL):
            yield finding(
                facts, event.node, CODE,
                f"get_peft_model is given a model that is already a PeftModel (from {describe(facts, base[0])}); "
                "the adapter is nested inside another PeftModel",
                "wrap the plain base model once; to add a second adapter use model.add_adapter(name, config)",
            )
    for event in facts.events:
        for trainer in event.result:
            if trainer.kind != TRAINER or trainer.node is not event.node or trainer.get("peft_config") is None:
                continue
            model = trainer.get("model")
            if all_of(model, PEFT_MODEL):
                yield finding(
                    facts, event.node, CODE,
                    f"{trainer.get('class_name')} gets a model that is already a PeftModel "
                    f"(from {describe(facts, model[0])}) together with peft_config=; "
                    "the trainer wraps it a second time",
                    "pass either the plain base model with peft_config=, or the PeftModel without peft_config",
                )


register(Rule(CODE, "peft-model-wrapped-again",
              "get_peft_model or a TRL trainer's peft_config is applied to a model that is already a PeftModel.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
