"""PD402: a k-bit base, checkpointed with reentrant checkpointing, wrapped without prepare_model_for_kbit_training.

peft's PeftModel enables input grads for a base that is already checkpointed, but skips quantized bases:
prepare_model_for_kbit_training is what does it for them. Without it, reentrant checkpointing passes no
gradient to the LoRA layers inside the checkpointed blocks. Only the versions where transformers does not
enable input grads itself are flagged (see PD401); elsewhere a k-bit base trains without the preparation.
"""

from peftdoctor.facts.values import BASE_MODEL, PEFT_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, PEFT_LOADERS, finding, local_anchor
from peftdoctor.rules.pd401_gc_without_input_grads import (
    input_grads_called,
    without_input_grads,
)
from peftdoctor.rules.training import training_uses

CODE = "PD402"


def _unprepared_checkpointed_kbit(model):
    """The k-bit bases of this PeftModel, checkpointed before the wrap and never prepared nor given input
    grads (`enable_input_require_grads()`, or a requires_grad_ forward hook on one of its modules), on a real path."""
    return [b for b in model.get("base") or () if b.kind == BASE_MODEL and b.get("quantized")
            and not b.get("maybe") and not b.get("kbit_prepared") and not b.get("input_grads")
            and b.get("checkpointing") is not None]


def check(facts, ctx):
    trained = {id(model.node) for use in training_uses(facts) for model in use.models}
    for event in facts.calls("peft.get_peft_model", *PEFT_LOADERS):
        if id(event.node) not in trained:
            continue
        for model in event.result:
            if model.kind != PEFT_MODEL or model.node is not event.node or model.get("trainable") is False:
                continue
            bases = _unprepared_checkpointed_kbit(model)
            if not bases or input_grads_called(facts, model):
                continue
            version = ctx.version("transformers", facts)
            reentrant = bases[0].get("checkpointing")
            if without_input_grads(version, bases[0].get("class_name"), reentrant) is None:
                continue
            node, _ = local_anchor(facts, event.node)
            if node is None:
                continue
            how = "reentrant (use_reentrant=True)" if reentrant is True else \
                "reentrant, the default before transformers 5.0"
            yield finding(
                facts, node, CODE,
                f"a k-bit {bases[0].get('class_name')} with gradient checkpointing, {how}, is wrapped without "
                "prepare_model_for_kbit_training: peft enables input grads for a checkpointed base only when it is "
                "not quantized, so the LoRA layers inside the checkpointed blocks get no gradient (measured: "
                "'element 0 of tensors does not require grad' at the first backward of a 4-bit Llama)",
                "call model = prepare_model_for_kbit_training(model) before get_peft_model (or "
                "model.enable_input_require_grads())",
                versions=version.text,
            )
            break


register(Rule(CODE, "kbit-without-prepare",
              "A checkpointed k-bit base is wrapped without prepare_model_for_kbit_training: no input grads.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
