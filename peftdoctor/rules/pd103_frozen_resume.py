"""PD103: an adapter loaded for inference (frozen) is then trained."""

import libcst as cst

from peftdoctor.facts.library import FROM_PRETRAINED_FROZEN_FROM
from peftdoctor.facts.values import PARAM, PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.pd102_peft_on_peft import IGNORES, trl_behaviour
from peftdoctor.rules.training import training_uses

CODE = "PD103"


def _frozen(value) -> bool:
    """A frozen adapter on a real path (a `maybe` value, from another method's `self.x`, is not one)."""
    return value.kind == PEFT_MODEL and value.get("trainable") is False and not value.get("unfrozen") \
        and not value.get("maybe")


def _trained_values(facts, uses):
    """(value, where) for every model value that is trained, directly or through a helper.

    A helper trains its parameter when the parameter reaches a training use inside it;
    a call of that helper then trains whatever is passed for that parameter. `where()`
    describes the use; it is called only for a finding (a position can cost a parse's worth).
    """
    helpers: dict[int, list] = {}
    for use in uses:
        where = _describer(facts, use)
        for value in use.models:
            if value.kind == PARAM:
                helpers.setdefault(id(use.scope), []).append((value, where))
            else:
                yield value, where
    if not helpers:
        return
    for event in facts.events:
        for fn in event.callees:
            for param, where in helpers.get(id(fn), ()):
                passed = event.arg(param.get("index"), param.get("name")) or ()
                for value in passed:
                    yield value, (lambda fn=fn, where=where: f"in {fn.name.value}(), {where()}")


def _trains_a_new_adapter(ctx, facts, use) -> bool:
    """A trainer given peft_config= that, on the project's trl, wraps, merges or refuses a PeftModel (PD102):
    what it trains is a fresh adapter from that config, not the loaded one. Not known (None): silent too."""
    trainer = use.trainer
    if trainer is None or trainer.get("peft_config") is None:
        return False
    return trl_behaviour(trainer.get("class_name"), ctx.version("trl", facts).version) != IGNORES


def _asked_frozen(facts, value) -> bool:
    """A call of the project's own loader that returns this adapter passes `is_trainable=False` as written: the
    caller chose it frozen (to train something next to it), unlike a loader's default it never saw."""
    return any(event.callees and any(v.node is value.node for v in event.result) and any(
        arg.keyword is not None and arg.keyword.value == "is_trainable" and isinstance(arg.value, cst.Name)
        and arg.value.value == "False" for arg in event.node.args) for event in facts.events)


def _describer(facts, use):
    return lambda: f"{use.how} at {facts.where(use.node)}"


def check(facts, ctx):
    reported = set()
    uses = [use for use in training_uses(facts) if not _trains_a_new_adapter(ctx, facts, use)]
    for value, describe_use in _trained_values(facts, uses):  # some path is enough
        if not _frozen(value):
            continue
        where = describe_use()
        if value.get("via") in ("from_pretrained", "auto"):
            if ctx.version("peft", facts).below(*FROM_PRETRAINED_FROZEN_FROM) or _asked_frozen(facts, value):
                continue  # loaded trainable, or frozen on purpose
            origin, elsewhere = local_anchor(facts, value.node)
            if origin is None or id(origin) in reported:
                continue
            reported.add(id(origin))
            if elsewhere is None:
                has_flag = any(arg.keyword is not None and arg.keyword.value == "is_trainable"
                               for arg in origin.args)
                fix = {"kind": "replace_keyword" if has_flag else "add_keyword", "keyword": "is_trainable",
                       "value": "True"}
                loaded = "adapter loaded without is_trainable=True"
                hint = "pass is_trainable=True to from_pretrained when you resume training"
            else:
                fix = None
                loaded = f"adapter loaded by this call without is_trainable=True (from_pretrained at {elsewhere})"
                hint = "pass is_trainable=True through this helper to from_pretrained when you resume training"
            yield finding(
                facts, origin, CODE,
                f"{loaded} is trained ({where}); "
                "its LoRA weights are frozen (requires_grad=False), so nothing is learned",
                hint,
                fix=fix,
            )
        elif value.get("frozen_by") is not None:
            origin, elsewhere = local_anchor(facts, value.get("frozen_by"))
            if origin is None or elsewhere is not None or id(origin) in reported:
                continue  # made in another module: reported there, where its fix goes
            reported.add(id(origin))
            if value.get("frozen_how") == "kbit":
                yield finding(
                    facts, origin, CODE,
                    f"prepare_model_for_kbit_training is called on a PeftModel that is then trained ({where}); "
                    "it sets requires_grad=False on every parameter, the adapter included, so nothing is learned",
                    "call prepare_model_for_kbit_training on the base model, before get_peft_model",
                )
                continue
            yield finding(
                facts, origin, CODE,
                f"peft config with inference_mode=True is used for a model that is trained ({where}); "
                "the adapter weights are created frozen, so nothing is learned",
                "set inference_mode=False (the default) in the config of an adapter you train",
                fix={"kind": "replace_keyword", "keyword": "inference_mode", "value": "False"},
            )


register(Rule(CODE, "frozen-adapter-trained",
              "An adapter loaded without is_trainable=True (or with inference_mode=True) is trained.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
