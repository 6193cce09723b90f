"""PD201: fp16 trainable parameters under fp16 mixed precision (AMP with a GradScaler)."""

from peftdoctor.facts.library import HEAD_TASK_TYPES, NOT_LITERAL, held_models
from peftdoctor.facts.values import DIFFUSERS_MODEL, MISSING, PEFT_CONFIG, PEFT_MODEL, all_of
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.training import training_uses

CODE = "PD201"


def fp16_trainable_reasons(value, peft_version) -> list[str]:
    """Why this fp16 PeftModel really has fp16 trainable weights (empty: peft upcasts them)."""
    reasons = []
    if value.get("halved_at") is not None:
        reasons.append(".half() on the PeftModel casts the adapter weights to fp16 after peft upcast them")
    if value.get("autocast") is False:
        reasons.append("autocast_adapter_dtype=False keeps the adapter weights in fp16")
    for config in value.get("config") or ():
        if config.kind != PEFT_CONFIG or not config.get("known"):
            continue
        fields = config.get("fields", {})
        modules = fields.get("modules_to_save", MISSING)
        if modules not in (MISSING, None, NOT_LITERAL, [], ()):
            reasons.append(f"modules_to_save={modules!r} makes trainable fp16 copies of those modules")
        if fields.get("task_type") in HEAD_TASK_TYPES:
            reasons.append(f"task_type={fields['task_type']} makes a trainable fp16 copy of the classification head")
    if peft_version.below(0, 12):
        reasons.append(f"{peft_version.text} does not upcast adapter weights (peft >= 0.12 does)")
    return reasons


def _diffusers_versions(facts) -> dict[int, list]:
    """Every state of each diffusers model the file's calls see, by the call that made the model: a cast
    after `accelerator.prepare(unet)` (which returns the same module) still changes what is trained."""
    def collect(facts):
        versions = {}
        for event in facts.events:
            for values in (event.receiver, *event.args, event.result):
                for value in (*values, *held_models(values)):
                    if value.kind == DIFFUSERS_MODEL:
                        versions.setdefault(id(value.node), []).append(value)
        return versions
    return facts.derived("diffusers_versions", collect)


def _fp16_diffusers_adapters(facts, use):
    """Each diffusers model trained here whose adapter may be float16, with a state of it that says so:
    add_adapter makes the LoRA weights in the base weights' dtype and does not upcast them as get_peft_model
    does, so a cast to float16 before or after it leaves fp16 trainables unless cast_training_params (or a
    float32 loop) runs after the adapter is added; on some path is enough, since diffusers' own scripts run
    it under `if mixed_precision == "fp16":`."""
    versions = _diffusers_versions(facts)
    seen = set()
    for model in (*use.models, *use.held):
        if model.kind != DIFFUSERS_MODEL or id(model.node) in seen:
            continue
        seen.add(id(model.node))
        states = [model, *versions.get(id(model.node), ())]
        if any(state.get("casted") for state in states):
            continue
        for state in states:
            if state.get("adapters") and state.get("fp16_at") is not None and not state.get("maybe"):
                yield state
                break


def _diffusers_findings(facts, reported):
    for use in training_uses(facts):
        if not (use.fp16_amp or use.fp16_amp_choice):
            continue
        for value in _fp16_diffusers_adapters(facts, use):
            node, _ = local_anchor(facts, value.get("fp16_at"))
            if node is None or id(node) in reported:
                continue
            reported.add(id(node))
            when = "" if use.fp16_amp else "when the run's mixed precision is fp16 (it comes from its settings), "
            yield finding(
                facts, node, CODE,
                f"{when}{value.get('class_name')} with its LoRA adapter (add_adapter at "
                f"{facts.where(value.get('adapter_at'))}) may be float16 here and is trained under fp16 mixed "
                f"precision ({use.how} at {facts.where(use.node)}): add_adapter makes the LoRA weights in the "
                "model's dtype and nothing casts them back, so the GradScaler fails with 'Attempting to unscale "
                "FP16 gradients'",
                "after add_adapter, cast the trainable parameters to float32: "
                "diffusers.training_utils.cast_training_params(model, dtype=torch.float32)",
            )


def check(facts, ctx):
    reported = set()
    yield from _diffusers_findings(facts, reported)
    for use in training_uses(facts):
        if not use.fp16_amp or not all_of(use.models, PEFT_MODEL):
            continue
        if not all(v.get("dtype") == "float16" and not v.get("casted") for v in use.models):
            continue
        peft_version = ctx.version("peft", facts)
        for value in use.models:
            reasons = fp16_trainable_reasons(value, peft_version)
            if not reasons:
                continue
            node, _ = local_anchor(facts, value.get("halved_at") or value.node)
            if node is None or id(node) in reported:
                continue
            reported.add(id(node))
            yield finding(
                facts, node, CODE,
                f"model in float16 is trained under fp16 mixed precision ({use.how} at "
                f"{facts.where(use.node)}) with fp16 trainable weights: {reasons[0]}; the GradScaler fails "
                "with 'Attempting to unscale FP16 gradients'",
                "load the base in float32 (or bfloat16 with bf16=True), or cast the trainable parameters to "
                "float32 (peft.cast_mixed_precision_params or a p.data = p.data.float() loop)",
                versions=peft_version.text,
            )


register(Rule(CODE, "fp16-trainable-under-amp",
              "Trainable parameters are float16 while training under fp16 AMP (GradScaler cannot unscale them).",
              kind="static", check=check, needs_any=NEEDS_PEFT))
