"""PD105: an adapter loaded with load_adapter(..., is_trainable=True) is trained without set_adapter.

`PeftModel.load_adapter(path, adapter_name="x", is_trainable=True)` adds "x" with trainable weights but
leaves the first adapter active: the forward pass never uses "x", so training either fails at the first
backward (the active adapter is frozen) or trains the other adapter while "x" stays as loaded.
"""

from peftdoctor.facts.values import PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.training import training_uses

CODE = "PD105"


def _adapter_name(facts, load) -> str:
    """The loaded adapter's name as written at the call (`"resumed"`)."""
    positional = [arg for arg in load.args if arg.keyword is None]
    for arg in load.args:
        if arg.keyword is not None and arg.keyword.value == "adapter_name":
            return facts.code_of(arg.value)
    return facts.code_of(positional[1].value)


def _trainer_picks_adapters(facts) -> bool:
    """TRL's DPO-style trainers switch adapters themselves (`model_adapter_name=`)."""
    return any("model_adapter_name" in event.kwargs for event in facts.events)


def check(facts, ctx):
    if _trainer_picks_adapters(facts):
        return
    reported = set()
    for use in training_uses(facts):
        for value in use.models:
            if value.kind != PEFT_MODEL or value.get("maybe") or value.get("inactive_load") is None:
                continue
            origin, elsewhere = local_anchor(facts, value.get("inactive_load"))
            if origin is None or elsewhere is not None or id(origin) in reported:
                continue  # made in another module: reported there
            reported.add(id(origin))
            name = _adapter_name(facts, origin)
            yield finding(
                facts, origin, CODE,
                f"adapter {name} is loaded trainable, but nothing makes it the active adapter before the model "
                f"is trained ({use.how} at {facts.where(use.node)}): peft keeps the first adapter active, so the "
                f"forward pass never uses {name}; with a frozen first adapter the first backward fails with "
                "\"element 0 of tensors does not require grad\", otherwise the other adapter is trained and "
                f"{name} stays as loaded",
                f"call model.set_adapter({name}) after load_adapter, before training",
            )


register(Rule(CODE, "adapter-not-active",
              "An adapter loaded with load_adapter(..., is_trainable=True) is trained without set_adapter().",
              kind="static", check=check, needs_any=NEEDS_PEFT))
