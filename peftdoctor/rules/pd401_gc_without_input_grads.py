"""PD401: reentrant gradient checkpointing turned on after wrapping, with nothing making the inputs require grad.

Reentrant torch.utils.checkpoint passes gradients back only when one of a checkpointed block's inputs
requires grad. With the base frozen by peft, the hidden states entering the blocks do not, so the LoRA
layers inside them get no gradient. peft enables input grads itself when the base is already checkpointed
at wrap time, and so does prepare_model_for_kbit_training. transformers >= 5.0 defaults to
use_reentrant=False and enables input grads itself for models whose main input is `input_ids`; older
releases default to reentrant and enable them only for adapters added with add_adapter.
"""

from peftdoctor.facts.library import (
    CHECKPOINTING_METHODS,
    INPUT_GRAD_METHODS,
    NON_TEXT_INPUT_MODELS,
    REENTRANT_DEFAULT,
    reentrant_of,
    trl_trainer_leaves_input_grads,
)
from peftdoctor.facts.api_versions import shown
from peftdoctor.facts.values import PEFT_MODEL, TRAINER, TRAINING_ARGS
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.training import training_uses

CODE = "PD401"
HINT = ("call model.enable_input_require_grads() before training, or use non-reentrant checkpointing "
        "(gradient_checkpointing_kwargs={\"use_reentrant\": False})")


def _class_name(model) -> str | None:
    names = {b.get("class_name") for b in model.get("base") or ()}
    return names.pop() if len(names) == 1 else None


def input_grads_called(facts, model) -> bool:
    """Input grads are on for this PeftModel: tracked on the value, or a call in this file enables them
    on it or its base (in any order: `enable_input_require_grads()` after building the Trainer counts)."""
    if model.get("input_grads"):
        return True
    nodes = {id(model.node), *(id(b.node) for b in model.get("base") or ())}
    return any(event.method in INPUT_GRAD_METHODS and any(id(v.node) in nodes for v in event.receiver)
               for event in facts.events)


def _checkpointed_before_wrap(facts, model) -> bool:
    """Checkpointing turned on on the base before the wrap, seen in this file: peft then enables input grads."""
    bases = {id(b.node) for b in model.get("base") or ()}
    for event in facts.events:
        if event.node is model.node:
            return False
        if event.method in CHECKPOINTING_METHODS and any(id(v.node) in bases for v in event.receiver):
            return True
    return False


def without_input_grads(version, class_name, reentrant) -> str | None:
    """How this checkpointing, with no input grads, fails on the project's transformers (None: it does not):
    transformers >= 5.0 enables input grads itself for `input_ids` models and is non-reentrant by default."""
    old = version.below(5, 0)
    if reentrant is not True and not (reentrant == REENTRANT_DEFAULT and old):
        return None
    if class_name is not None and any(word in class_name for word in NON_TEXT_INPUT_MODELS):
        return "not an input_ids model"
    return "transformers < 5.0" if old else None


def _consequence(facts, ctx, model, reentrant) -> tuple[str, str] | None:
    """(what goes wrong, the version it assumes) when this checkpointing leaves the adapter without
    gradients on the project's transformers; None when it does not."""
    version = ctx.version("transformers", facts)
    name = _class_name(model)
    why = without_input_grads(version, name, reentrant)
    if why is None:
        return None
    how = "reentrant (use_reentrant=True)" if reentrant is True else "reentrant, the default before transformers 5.0"
    if why == "not an input_ids model":
        what = (f"checkpointing is {how} and {name}'s main input is not input_ids, so transformers makes no "
                "input require grad: the LoRA layers inside the checkpointed blocks get no gradient and never "
                "move while the loss is logged (measured: a ViT, 0 of 4 lora_B tensors move in 4 Trainer steps)")
    else:
        what = (f"checkpointing is {how}, and before 5.0 transformers enables input grads only for adapters "
                "added with add_adapter, not for a PeftModel: the LoRA layers inside the checkpointed blocks get no "
                "gradient (the backward fails with 'element 0 of tensors does not require grad', or, when "
                "something outside them trains, the adapter learns nothing)")
    return what, version.text


def _old_sft_trainer(facts, ctx, trainer):
    """The project's trl version when this is a TRL trainer that leaves input grads off for a PeftModel it
    is given (see library.trl_trainer_leaves_input_grads), else None."""
    if trainer.get("library") != "trl":
        return None
    trl = ctx.version("trl", facts)
    return trl if trl_trainer_leaves_input_grads(trainer.get("class_name") or "", trl) else None


def _after_wrap(facts, ctx):
    """(node to report, the checkpointed PeftModel, use_reentrant, the trl version of an old SFTTrainer or
    None) for every checkpointing turned on after the wrap: a Trainer (or an old TRL SFTTrainer) with
    gradient_checkpointing=True, or gradient_checkpointing_enable() on the PeftModel."""
    for event in facts.method_calls("train"):
        for trainer in event.receiver:
            if trainer.kind != TRAINER or trainer.get("maybe"):
                continue
            trl = _old_sft_trainer(facts, ctx, trainer)
            if trainer.get("library") != "transformers" and trl is None:
                continue
            args = trainer.get("args") or ()
            if not args or not all(a.kind == TRAINING_ARGS and a.get("checkpointing") is True for a in args):
                continue
            reentrant = {a.get("reentrant") for a in args}
            for model in trainer.get("trained") or ():
                if model.kind == PEFT_MODEL and not model.get("maybe") and model.get("checkpointing") is None \
                        and model.node is not trainer.node:  # not a wrap by the trainer's own peft_config
                    yield args[0].node, model, reentrant.pop() if len(reentrant) == 1 else None, trl
    trained = {id(model.node) for use in training_uses(facts) for model in use.models}
    for event in facts.events:
        if event.method not in CHECKPOINTING_METHODS:
            continue
        reentrant = reentrant_of(event.arg(0, CHECKPOINTING_METHODS[event.method]), event.star_kwargs)
        for model in event.receiver:
            if model.kind == PEFT_MODEL and id(model.node) in trained and not model.get("maybe"):
                yield event.node, model, reentrant, None


def check(facts, ctx):
    reported = set()
    for node, model, reentrant, trl in _after_wrap(facts, ctx):
        if model.get("trainable") is False:
            continue  # a frozen adapter: PD103
        if input_grads_called(facts, model) or _checkpointed_before_wrap(facts, model):
            continue
        consequence = _consequence(facts, ctx, model, reentrant)
        if consequence is None:
            continue
        anchor, _ = local_anchor(facts, node)
        if anchor is None or id(anchor) in reported:
            continue
        reported.add(id(anchor))
        what, versions = consequence
        if trl is not None:
            what += (f"; SFTTrainer on trl {shown(trl.version)} enables input grads only for a model it wraps itself "
                     "with peft_config (from trl 0.20 on also for a PeftModel it is given)")
            versions = f"{versions}; {trl.text}"
        yield finding(
            facts, anchor, CODE,
            f"gradient checkpointing is turned on after the model is wrapped ({facts.code_of(model.node.func)}(...) "
            f"at {facts.where(model.node)}) and nothing makes its inputs require grad: {what}",
            HINT, versions=versions,
        )


register(Rule(CODE, "gc-without-input-grads",
              "Reentrant gradient checkpointing after wrapping, with no input grads: the adapter gets no gradient.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
