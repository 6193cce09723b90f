"""PD305: the PeftModel wrapper is saved after merge_and_unload()/unload() stripped its adapter out.

`merge_and_unload()` merges the LoRA weights into the wrapped base, replaces every LoRA layer by its
plain base layer, and returns that base; the PeftModel object stays behind with no adapter weights.
Its `save_pretrained` then writes an adapter folder with an empty weights file, not the merged model.
A forward or `generate` on the stale wrapper still runs the merged base, so only saving is flagged.
"""

from peftdoctor.facts.values import PEFT_MODEL, TRAINER
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding

CODE = "PD305"
SAVES = ("save_pretrained", "push_to_hub", "save_model")
TRAINER_SAVES = ("save_model", "push_to_hub")  # a Trainer saves the model it holds


def _saved(event):
    """What a save call writes: the receiver, or the model a Trainer holds."""
    for value in event.receiver or ():
        if value.kind == TRAINER and event.method in TRAINER_SAVES:
            yield from value.get("trained") or ()
        else:
            yield value


def _stale_wrapper(values):
    """A PeftModel already unloaded on some real path (a `maybe` value is not a path)."""
    for value in values or ():
        if value.kind == PEFT_MODEL and value.get("unloaded_at") is not None and not value.get("maybe"):
            return value
    return None


def check(facts, ctx):
    for save in SAVES:
        for event in facts.method_calls(save):
            stale = _stale_wrapper(_saved(event))
            if stale is None:
                continue
            unload = stale.get("unloaded_at")
            how = facts.code_of(unload.func)
            merged = how.endswith("merge_and_unload")
            returned = "merged into the base, which that call returned" if merged else "the base that call returned"
            by_trainer = any(v.kind == TRAINER for v in event.receiver) and save in TRAINER_SAVES
            hint = (f"keep the model the merge returns (`merged = model.merge_and_unload()`) and call "
                    f"`merged.{'save_pretrained' if save == 'save_model' else save}(...)`"
                    f"{' (or set trainer.model = merged first)' if by_trainer else ''}; save the adapter itself "
                    "before merging") if merged else f"call {save}() on the PeftModel before {how}()"
            called = f"{save}() saves the trainer's model, the PeftModel wrapper," if by_trainer else \
                f"{save}() is called on the PeftModel wrapper"
            yield finding(
                facts, event.node, CODE,
                f"{called} after {how}() at {facts.where(unload)} already "
                f"took its LoRA layers out ({returned}): it writes an adapter folder whose "
                f"adapter_model.safetensors holds no tensors{', not the merged model' if merged else ''}, and "
                "loading that folder gives the base model's outputs",
                hint,
            )


register(Rule(CODE, "merge-result-discarded",
              "The PeftModel wrapper is saved after merge_and_unload()/unload(): an empty adapter, not the "
              "merged model.", kind="static", check=check, needs_any=NEEDS_PEFT))
