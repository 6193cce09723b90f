"""PD102: get_peft_model (or a TRL trainer's peft_config) applied to a PeftModel."""

from peftdoctor.facts.api_versions import in_range, shown
from peftdoctor.facts.values import PEFT_MODEL, TRAINER
from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding, on_some_path

CODE = "PD102"

IGNORES = "ignores"  # peft_config is ignored: the PeftModel is trained as it is
WRAPS = "wraps"  # get_peft_model(peft_model, peft_config): the adapter nests in a second PeftModel
MERGES = "merges"  # peft_model.merge_and_unload(), then get_peft_model(merged, peft_config)
RAISES = "raises"  # ValueError("You passed a `PeftModel` instance together with a `peft_config` ...")

# What each TRL trainer does when it gets a PeftModel together with peft_config=, read in the
# source of every TRL release on either side of each boundary (rules/PD102.md, "Versions").
# (first release it applies to, behaviour), oldest first; None: not known, stay silent.
_MERGE_THEN_RAISE = ((None, MERGES), ((0, 27), RAISES))
TRL_BEHAVIOUR = {
    "SFTTrainer": ((None, IGNORES), ((0, 20), WRAPS), ((0, 22), MERGES), ((0, 27), RAISES)),
    "DPOTrainer": ((None, WRAPS), ((0, 7, 3), MERGES), ((0, 27), RAISES)),
    "RewardTrainer": ((None, WRAPS), ((0, 7, 2), IGNORES), ((0, 22), MERGES), ((0, 27), RAISES)),
    "GRPOTrainer": ((None, WRAPS), ((0, 22), MERGES), ((0, 27), RAISES)),
    "ORPOTrainer": _MERGE_THEN_RAISE,
    "CPOTrainer": _MERGE_THEN_RAISE,
    "KTOTrainer": _MERGE_THEN_RAISE,
    "BCOTrainer": _MERGE_THEN_RAISE,
    "PPOTrainer": ((None, None), ((0, 13), MERGES), ((0, 27), RAISES)),  # peft_config= is new in trl 0.13
}

WHAT_HAPPENS = {
    WRAPS: ("the trainer calls get_peft_model on it again: the adapter is wrapped twice (keys "
            "base_model.model.base_model.model...) and the saved adapter does not load onto the base model",
            Severity.ERROR),
    MERGES: ("the trainer merges the first adapter into the in-memory base (merge_and_unload) and trains a new "
             "adapter from peft_config: the saved adapter holds only the new one and fits only that merged base, "
             "which is never saved", Severity.WARNING),
    RAISES: ("the trainer raises ValueError ('You passed a `PeftModel` instance together with a `peft_config` "
             "to the trainer') when it is built, after the model has loaded", Severity.WARNING),
}


def trl_behaviour(class_name: str, version) -> str | None:
    """What `class_name` of TRL `version` does with a PeftModel plus peft_config (None: not known)."""
    ranges = TRL_BEHAVIOUR.get(class_name)
    if ranges is None:
        return None
    behaviour = None
    for first, what in ranges:
        if first is None or in_range(version, first, None):
            behaviour = what
    return behaviour


def check(facts, ctx):
    for event in facts.calls("peft.get_peft_model"):
        wrapped = on_some_path(event.arg(0, "model"), PEFT_MODEL)
        if wrapped is not None:
            yield finding(
                facts, event.node, CODE,
                f"get_peft_model is given a model that is already a PeftModel (from {describe(facts, wrapped)}); "
                "the adapter is nested inside another PeftModel",
                "wrap the plain base model once; to add a second adapter use model.add_adapter(name, config)",
            )
    for event in facts.events:
        for trainer in event.result:
            if trainer.kind != TRAINER or trainer.node is not event.node or trainer.get("peft_config") is None:
                continue
            wrapped = on_some_path(trainer.get("model"), PEFT_MODEL)
            if wrapped is None:
                continue
            class_name = trainer.get("class_name")
            trl = ctx.version("trl", facts)
            behaviour = trl_behaviour(class_name, trl.version)
            if behaviour not in WHAT_HAPPENS:
                continue  # IGNORES: the PeftModel is trained as it is; None: this trainer is not known
            what, severity = WHAT_HAPPENS[behaviour]
            yield finding(
                facts, event.node, CODE,
                f"{class_name} gets a model that is already a PeftModel (from {describe(facts, wrapped)}) "
                f"together with peft_config=; on trl {shown(trl.version)} {what}",
                "pass either the plain base model with peft_config=, or the PeftModel without peft_config "
                "(to stack a new adapter, merge_and_unload() and save the merged base first)",
                severity=severity, versions=trl.text,
            )


register(Rule(CODE, "peft-model-wrapped-again",
              "get_peft_model or a TRL trainer's peft_config is applied to a model that is already a PeftModel.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
