"""PD202: Adam/AdamW with its default eps=1e-8 over float16 trainable weights, without mixed precision.

With float16 parameters the optimizer's state is float16 too, and 1e-8 rounds to 0 in float16 (its smallest
step is 6e-8). Where the second moment is 0 (a fresh lora_A gets no gradient while lora_B is 0) the update is
0/0: the weights turn NaN at the first step.
"""

from peftdoctor.facts.values import (
    ACCELERATOR,
    BASE_MODEL,
    OPTIMIZER,
    PEFT_MODEL,
    const_value,
)
from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.pd201_fp16_trainables import fp16_trainable_reasons

CODE = "PD202"
ADAM_CLASSES = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax")
FP16_SMALLEST = 6e-8  # an eps below half of float16's smallest subnormal (5.96e-8) rounds to 0
EPS_POSITION = 3  # Adam(params, lr, betas, eps, ...)


def _adam(event) -> bool:
    parts = event.name.split(".")
    return parts[0] in ("torch", "transformers") and parts[-1] in ADAM_CLASSES


def _fused(event) -> bool:
    """fused=True (or a value not known here): the fused kernels compute in float32, eps survives."""
    return "fused" in event.kwargs and const_value(event.kwargs["fused"], None) is not False


def _prepared_by_accelerate(facts, optimizer) -> bool:
    """accelerate decides the precision (its config may turn on fp16 AMP, which is PD201's case)."""
    return any(event.method == "prepare" and any(r.kind == ACCELERATOR for r in event.receiver)
               and any(v is optimizer for values in event.args for v in values) for event in facts.events)


def _eps_vanishes(event) -> bool:
    """eps is left at its 1e-8 default, or set to a literal that float16 cannot hold."""
    passed = event.arg(EPS_POSITION, "eps")
    if passed is None:
        return not event.star_kwargs
    eps = const_value(passed, None)
    return isinstance(eps, (int, float)) and eps < FP16_SMALLEST / 2


def _fp16_trainables(model, peft_version) -> str | None:
    """Why this model's trainable weights are float16, or None when they are not (or not known to be)."""
    if model.get("maybe") or model.get("dtype") != "float16" or model.get("casted"):
        return None
    if model.kind == BASE_MODEL and not model.get("quantized") and not model.get("inner_peft"):
        return "the model is float16"
    if model.kind == PEFT_MODEL:
        reasons = fp16_trainable_reasons(model, peft_version)
        return reasons[0] if reasons else None
    return None


def check(facts, ctx):
    if not facts.has_backward():
        return
    for event in facts.events:
        optimizers = [v for v in event.result if v.kind == OPTIMIZER and v.node is event.node]
        if not optimizers or not _adam(event) or _fused(event) or not _eps_vanishes(event):
            continue
        if facts.has_grad_scaler() or _prepared_by_accelerate(facts, optimizers[0]):
            continue
        models = optimizers[0].get("models") or ()
        if not models:
            continue
        peft_version = ctx.version("peft", facts)
        reasons = [_fp16_trainables(model, peft_version) for model in models]
        if not all(reasons):
            continue
        node, _ = local_anchor(facts, event.node)
        if node is None:
            continue
        yield finding(
            facts, node, CODE,
            f"{event.name.rsplit('.', 1)[-1]} with eps=1e-8 over float16 trainable weights ({reasons[0]}) and no "
            "mixed precision: eps rounds to 0 in float16, so where the second moment is 0 the update is 0/0 "
            "(measured: all 8 LoRA tensors are NaN after the first step, the loss is nan from then on)",
            "keep the trainable weights in float32 (load in float32 or bfloat16, or cast them: "
            "peft.cast_mixed_precision_params), or raise eps to 1e-4, or pass fused=True",
            severity=Severity.WARNING, versions=peft_version.text,
        )


register(Rule(CODE, "fp16-adam-eps",
              "Adam/AdamW at the default eps=1e-8 over float16 trainable weights without AMP: eps rounds to 0.",
              Severity.WARNING, kind="static", check=check, needs_any=NEEDS_PEFT))
