"""PD403: an optimizer built from the model's parameters before the adapter is added trains the adapter.

get_peft_model (or PeftModel.from_pretrained(..., is_trainable=True)) adds new LoRA parameters and freezes
every base weight. An optimizer made earlier from `model.parameters()` holds only those base weights: the
adapter's parameters get gradients but no optimizer step, and the frozen base weights get no gradients.
The facts mark such an optimizer `wrapped_after` the wrap, on the paths where the wrap happens.
"""

from peftdoctor.facts.values import OPTIMIZER, TRAINER, TUPLE
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor

CODE = "PD403"


def _stale(values):
    """The optimizers in `values` (or in a tuple among them) built before a wrap, on a real path."""
    for value in values or ():
        if value.kind == TUPLE:
            for items in value.get("items") or ():
                yield from _stale(items)
        elif value.kind == OPTIMIZER and value.get("wrapped_after") is not None and not value.get("maybe"):
            yield value


def _trained_trainers(facts) -> set[int]:
    """The nodes of the trainers whose .train() is called."""
    return {id(receiver.node) for event in facts.method_calls("train") for receiver in event.receiver
            if receiver.kind == TRAINER and receiver.node is not None}


def _uses(facts):
    """(optimizer, the call that steps it): `optimizer.step()` in a file with a backward pass, or a
    trainer given `optimizers=(optimizer, ...)` whose .train() is called."""
    if facts.has_backward():
        for event in facts.method_calls("step"):
            for optimizer in _stale(event.receiver):
                yield optimizer, event.node
    trained = _trained_trainers(facts)
    for event in facts.events:
        if "optimizers" in event.kwargs and any(v.kind == TRAINER and id(v.node) in trained for v in event.result):
            for optimizer in _stale(event.kwargs["optimizers"]):
                yield optimizer, event.node


def check(facts, ctx):
    reported = set()
    for optimizer, use in _uses(facts):
        node, elsewhere = local_anchor(facts, optimizer.node)
        if node is None or id(node) in reported:
            continue
        reported.add(id(node))
        built = "the optimizer" if elsewhere is None else f"the optimizer built at {elsewhere}"
        wrap = optimizer.get("wrapped_after")
        yield finding(
            facts, node, CODE,
            f"{built} is made from the model's parameters before the adapter is added "
            f"({facts.code_of(wrap.func)}(...) at {facts.where(wrap)}) and then drives the training "
            f"(at {facts.where(use)}): it holds only the base weights, which the wrap freezes, and none of the "
            "LoRA weights, so no weight changes (measured: 0 of 4 lora_B tensors move)",
            "build the optimizer after get_peft_model / from_pretrained(..., is_trainable=True), from the "
            "wrapped model's trainable parameters",
        )


register(Rule(CODE, "optimizer-before-wrap",
              "An optimizer built from model.parameters() before get_peft_model trains the wrapped model.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
