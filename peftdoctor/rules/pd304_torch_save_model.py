"""PD304: a whole PeftModel object pickled with torch.save instead of saved with save_pretrained."""

from peftdoctor.facts.values import PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding, on_some_path

CODE = "PD304"


def check(facts, ctx):
    for event in facts.calls("torch.save"):
        peft = on_some_path(event.arg(0, "obj"), PEFT_MODEL)
        if peft is None:
            continue
        yield finding(
            facts, event.node, CODE,
            f"torch.save pickles the whole PeftModel object (from {describe(facts, peft)}), base weights included: "
            "torch.load refuses the file by default since torch 2.6 (weights_only=True raises UnpicklingError), "
            "model.load_state_dict(torch.load(path)) raises TypeError ('Expected state_dict to be dict-like'), "
            "and PeftModel.from_pretrained cannot read it",
            "save the adapter with model.save_pretrained(folder) and load it with "
            "PeftModel.from_pretrained(base, folder)",
        )


register(Rule(CODE, "torch-save-whole-model",
              "torch.save(model) pickles a whole PeftModel instead of save_pretrained.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
