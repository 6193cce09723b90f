"""Where a script trains a model, and under which mixed precision.

Shared by the rules that care whether a model is trained (PD103) and how
(PD201): a Trainer's .train(), an optimizer over the model's parameters in a
file with a backward pass, model.train() with a backward pass in the same
function, or accelerator.prepare() of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from peftdoctor.facts import Facts
from peftdoctor.facts.library import held_models
from peftdoctor.facts.values import (
    ACCELERATOR,
    OPTIMIZER,
    PEFT_MODEL,
    TRAINER,
    TRAINING_ARGS,
    BASE_MODEL,
    DIFFUSERS_MODEL,
    PARAM,
    Values,
    const_value,
    union,
)


# What can be trained: a model, or a function's parameter (a helper that trains what it is given).
MODEL_KINDS = (PEFT_MODEL, BASE_MODEL, DIFFUSERS_MODEL, PARAM)


@dataclass
class TrainingUse:
    node: cst.CSTNode
    models: Values  # what is trained, one value per path
    how: str  # "trainer.train()", "optimizer", "model.train()", "accelerator.prepare()"
    fp16_amp: bool  # fp16 autocast with loss scaling is on for certain
    scope: object = None  # the function (or module) where the training happens
    fp16_amp_choice: bool = False  # accelerate's mixed precision comes from the run's settings: may be fp16
    held: Values = ()  # models held by the project's own modules that are trained (`accelerator.prepare(wrapper)`)
    trainer: object = None  # the trainer value, for trainer.train()


def _trainer_fp16(trainer) -> bool:
    args = trainer.get("args") or ()
    return bool(args) and all(a.kind == TRAINING_ARGS and a.get("fp16") is True for a in args)


def training_uses(facts: Facts) -> list[TrainingUse]:
    """Every training use in the file; PD103 and PD201 share one computation."""
    return facts.derived("training_uses", _find_training_uses)


def _find_training_uses(facts: Facts) -> list[TrainingUse]:
    uses: list[TrainingUse] = []
    for event in facts.events:
        if event.method == "train" and event.name.startswith("."):
            for receiver in event.receiver:
                if receiver.kind == TRAINER:
                    uses.append(TrainingUse(event.node, receiver.get("trained") or (), "trainer.train()",
                                            _trainer_fp16(receiver), event.scope, trainer=receiver))
            models = tuple(v for v in event.receiver if v.kind in MODEL_KINDS)
            mode = const_value(event.arg(0, "mode"), True) if event.args or event.kwargs else True
            if models and mode is True and facts.has_backward(event.scope):
                uses.append(TrainingUse(event.node, models, "model.train()", facts.has_grad_scaler(event.scope),
                                        event.scope))
        for value in event.result:
            if value.kind == OPTIMIZER and value.node is event.node and value.get("models") and (
                    facts.has_backward() or _handed_to_a_trainer(facts, value)):
                uses.append(TrainingUse(event.node, value.get("models"), "an optimizer over its parameters",
                                        facts.has_grad_scaler(event.scope), event.scope))
        if event.method == "prepare" and any(r.kind == ACCELERATOR for r in event.receiver) and facts.has_backward():
            precision = {r.get("mixed_precision") for r in event.receiver if r.kind == ACCELERATOR}
            models = union(*[tuple(v for v in values if v.kind in MODEL_KINDS) for values in event.args])
            held = union(*[held_models(values) for values in event.args])
            if models or held:
                uses.append(TrainingUse(event.node, models, "accelerator.prepare()", precision == {"fp16"},
                                        event.scope, fp16_amp_choice=bool(precision) and precision <= {"fp16", None},
                                        held=held))
    return uses


def _handed_to_a_trainer(facts: Facts, optimizer) -> bool:
    """The optimizer is passed to a call whose result is then `.train()`ed: a trainer of the project
    (its backward pass lives in another module), or one built from a name only known at run time."""
    built = set()
    for event in facts.events:
        passed = [*event.args, *event.kwargs.values()]
        if any(value is optimizer for values in passed for value in values):
            built.add(id(event.node))
    if not built:
        return False
    return any(event.method == "train" and any(value.node is not None and id(value.node) in built
                                               for value in event.receiver)
               for event in facts.events)
