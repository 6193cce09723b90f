"""PD405: generate() on a PeftModel with LoRA dropout that is still in training mode."""

import libcst as cst

from peftdoctor.facts.values import BASE_MODEL, PEFT_MODEL, TRAINER, TRAINING_ARGS, Values, const_value
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, known_configs

CODE = "PD405"
EVAL_STRATEGY_KEYWORDS = ("eval_strategy", "evaluation_strategy")  # transformers >= 4.41 / older


def _wrap_configs(facts, base) -> Values:
    """The peft configs of the wrap that injected its adapter into `base` in place (get_peft_model's, a
    trainer's peft_config=)."""
    found = []
    for event in facts.events:
        if event.node is base.get("wrapped_by"):
            for value in event.result:
                if value.kind == PEFT_MODEL:
                    found.extend(value.get("config") or ())
                elif value.kind == TRAINER:
                    found.extend(value.get("peft_config") or ())
    return tuple(found)


def _dropout(facts, value) -> float | None:
    """The adapter's literal lora_dropout when it is above 0 on every config it may have, else None."""
    configs = known_configs(value.get("config") if value.kind == PEFT_MODEL else _wrap_configs(facts, value))
    if not configs:
        return None
    rates = [c.get("fields", {}).get("lora_dropout") for c in configs]
    if all(isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 for rate in rates):
        return max(rates)
    return None


def _why_training(facts, value) -> str:
    node = value.get("mode_at")
    call = facts.code_of(node.func) if node is not None else "get_peft_model"
    if node is value.node:
        return f"{call}(...) at {facts.where(node)} returns it in train mode, even for an eval() base"
    return f"{call}() at {facts.where(node)} leaves it in train mode"


def _made_by(facts, node):
    return next((event for event in facts.events if event.node is node), None)


def _no_evaluation_in_training(facts, train_call) -> bool:
    """The trainer whose train() set the mode never evaluates while training: Trainer ends an evaluation in
    eval mode, and with eval_strategy "epoch" or "steps" the last thing train() does is evaluate (measured)."""
    for trainer in train_call.receiver if train_call is not None else ():
        if trainer.kind != TRAINER:
            return False
        for args in trainer.get("args") or ():
            made = _made_by(facts, args.node) if args.kind == TRAINING_ARGS else None
            if made is None or made.star_kwargs:
                return False
            for key in EVAL_STRATEGY_KEYWORDS:
                if key in made.kwargs and const_value(made.kwargs[key], None) not in ("no", "NO"):
                    return False
    return True


def _trained_then_sampled(facts, value) -> bool:
    """Train mode that some path really brings here: a wrap or model.train() always; trainer.train() only
    when it does not evaluate during training."""
    node = value.get("mode_at")
    call = _made_by(facts, node) if node is not None else None
    if call is not None and any(v.kind == TRAINER for v in call.receiver):
        return _no_evaluation_in_training(facts, call)
    return True


def _subject(facts, value) -> str:
    if value.kind == PEFT_MODEL:
        return "a PeftModel"
    wrap = value.get("wrapped_by")
    return f"the base model (its LoRA layers come from {facts.code_of(wrap.func)}(...) at {facts.where(wrap)})"


def _what_runs(event) -> str:
    """`generate()`, or the pipeline call that runs generate() (a pipeline never calls .eval())."""
    func = event.node.func
    if isinstance(func, cst.Attribute) and func.attr.value == "generate":
        return "generate()"
    return "a text-generation pipeline call (it runs generate() on the model as it is)"


def check(facts, ctx):
    for event in facts.method_calls("generate"):
        for value in event.receiver:
            adapted = value.kind == PEFT_MODEL or (value.kind == BASE_MODEL and value.get("wrapped_by") is not None)
            if not adapted or value.get("training") is not True or value.get("maybe"):
                continue
            rate = _dropout(facts, value)
            if rate is None or not _trained_then_sampled(facts, value):
                continue
            yield finding(
                facts, event.node, CODE,
                f"{_what_runs(event)} on {_subject(facts, value)} in training mode ({_why_training(facts, value)}) with "
                f"lora_dropout={rate}: dropout stays active, so the outputs are random between calls "
                "(measured: two greedy generate() calls on the same input give different tokens)",
                "call model.eval() before generating or evaluating (and model.train() before training again)",
            )
            break


register(Rule(CODE, "dropout-at-inference",
              "generate() on a PeftModel with LoRA dropout that is still in training mode.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
