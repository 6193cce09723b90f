"""PD503: a quantization config (BitsAndBytesConfig, GPTQConfig, AwqConfig) built and never used."""

import libcst as cst

from peftdoctor.facts.library import descendants
from peftdoctor.facts.values import QUANT_CONFIG
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding

CODE = "PD503"
# Calls that load a model: a module without one has no model to give a quantization config to.
MODEL_LOADS = ("from_pretrained", "from_config")


def _bound_name(scope, call) -> str | None:
    """The plain name `call` is assigned to (`bnb_config = BitsAndBytesConfig(...)`), if it is."""
    for node in descendants(scope):
        if isinstance(node, cst.Assign) and node.value is call and len(node.targets) == 1 \
                and isinstance(node.targets[0].target, cst.Name):
            return node.targets[0].target.value
        if isinstance(node, cst.AnnAssign) and node.value is call and isinstance(node.target, cst.Name):
            return node.target.value
    return None


def _never_read(scope, name: str) -> bool:
    """`name` occurs in its scope (nested functions included) only as the target of plain assignments.
    Any other occurrence, even a keyword or an attribute spelled the same, counts as a use."""
    occurrences = stores = 0
    for node in descendants(scope):
        if isinstance(node, cst.Name) and node.value == name:
            occurrences += 1
        elif isinstance(node, cst.Assign):
            stores += sum(isinstance(t.target, cst.Name) and t.target.value == name for t in node.targets)
        elif isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name) and node.target.value == name:
            stores += 1
    return occurrences == stores


def _exported(facts, event) -> bool:
    """A module-level config in a module that loads no model: a settings module, whose names other
    modules import (`from settings import *`), so it is not unused."""
    return isinstance(event.scope, cst.Module) and \
        not any(other.method in MODEL_LOADS for other in facts.events)


def _quantized_by_flags(facts, event) -> bool:
    """A model load in the same function passes load_in_4bit/load_in_8bit itself: the model may be
    quantized without the config, so "loads unquantized" is not known."""
    return any(other.scope is event.scope and other.method in MODEL_LOADS and
               ("load_in_4bit" in other.kwargs or "load_in_8bit" in other.kwargs) for other in facts.events)


def check(facts, ctx):
    seen = set()
    for event in facts.events:
        for config in event.result:
            if config.kind != QUANT_CONFIG or config.node is not event.node or id(event.node) in seen:
                continue
            seen.add(id(event.node))
            if config.get("quantization") == "":
                continue  # a config that quantizes nothing is harmless unused
            name = _bound_name(event.scope, event.node)
            if name is None or not _never_read(event.scope, name) or _exported(facts, event) or \
                    _quantized_by_flags(facts, event):
                continue
            yield finding(
                facts, event.node, CODE,
                f"{facts.code_of(event.node.func)} is assigned to `{name}`, which is never read: no from_pretrained "
                "gets it, so the model loads unquantized (float32 Linear layers, not Linear4bit/Linear8bitLt) and "
                "a 'QLoRA' run trains plain LoRA in several times the memory (measured on a tiny Llama: 8x "
                "for the Linear weights, 4.8x for the whole model)",
                f"pass it to the model's from_pretrained(..., quantization_config={name}), before wrapping it "
                "with get_peft_model",
            )


register(Rule(CODE, "quantization-config-unused",
              "A BitsAndBytesConfig / GPTQConfig / AwqConfig is built and never passed to from_pretrained.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
