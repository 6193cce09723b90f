"""PD104: the base model object used as if it were still plain after a wrap injected an adapter into it."""

import libcst as cst

from peftdoctor.facts.library import descendants
from peftdoctor.facts.values import BASE_MODEL, PEFT_MODEL, TRAINER
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, PEFT_LOADERS, finding

CODE = "PD104"
FORWARDS = ("generate", "forward", "__call__")  # a use meant as "the base model's outputs"
INSPECTIONS = ("print_trainable_parameters", "get_nb_trainable_parameters", "print")  # read it, change nothing


def _wrapped(values):
    """A base model that some real path brings here after a wrap injected an adapter into it. A name that
    holds that very wrapper on another path (`get_peft_model(base, cfg) if lora else base`) is one model
    with or without LoRA, not a base kept for comparison."""
    wrappers = {id(v.node) for v in values or () if v.kind == PEFT_MODEL}
    for value in values or ():
        if value.kind == BASE_MODEL and value.get("wrapped_by") is not None and not value.get("maybe") \
                and id(value.get("wrapped_by")) not in wrappers:
            return value
    return None


def _wrap_of(node, facts) -> str:
    """'PeftModel.from_pretrained(...) at line 18' for the wrap call at `node`."""
    return f"{facts.code_of(node.func)}(...) at {facts.where(node)}"


def _under_disabled_adapter(facts) -> set[int]:
    """Calls inside `with peft_model.disable_adapter():`, where the base really runs without the adapter."""
    calls = set()
    for node in descendants(facts.module):
        if isinstance(node, cst.With) and any(
                isinstance(item.item, cst.Call) and isinstance(item.item.func, cst.Attribute)
                and item.item.func.attr.value == "disable_adapter" for item in node.items):
            calls.update(id(child) for child in descendants(node.body) if isinstance(child, cst.Call))
    return calls


def _call_site(facts, event, base):
    """The call in the wrap's file that handed the wrapped base to the helper running `event`, if any."""
    for caller in facts.events:
        if event.scope in caller.callees and any(
                v.kind == BASE_MODEL and v.get("wrapped_by") is base.get("wrapped_by")
                for values in (*caller.args, *caller.kwargs.values()) for v in values):
            return caller.node
    return event.node


def _second_wraps(facts):
    """(call, model values) for every call that wraps a model: get_peft_model, the peft loaders, a trainer
    given peft_config=."""
    for event in facts.calls("peft.get_peft_model", *PEFT_LOADERS):
        yield event, event.arg(0, "model")
    for event in facts.events:
        for trainer in event.result:
            if trainer.kind == TRAINER and trainer.node is event.node and trainer.get("peft_config") is not None:
                yield event, trainer.get("model")


def _unused_fresh_wrap(facts, wrap) -> bool:
    """The first wrap is get_peft_model (a fresh adapter, lora_B = 0) and its PeftModel is never used but to
    print it or count its parameters: a second wrap that re-creates that adapter changes nothing anyone reads (measured: the
    second wrapper trains as a first one would)."""
    if not any(event.node is wrap for event in facts.calls("peft.get_peft_model")):
        return False
    for event in facts.events:
        if event.node is wrap or event.method in INSPECTIONS or event.name in INSPECTIONS:
            continue
        passed = (event.receiver, *event.args, *event.kwargs.values(), *event.unpacked)
        if any(v.kind == PEFT_MODEL and v.node is wrap for values in passed for v in values):
            return False
    return True


def _forwards(facts):
    return [e for e in facts.events if e.method in FORWARDS and e.name.startswith(".")]


def check(facts, ctx):
    reported = set()
    disabled = None
    forwards = _forwards(facts)
    # wrappers that are run too: running the base next to its own wrapper is a comparison (a training loop
    # that runs only the base, its LoRA layers inside, trains the adapter as meant)
    run_wrappers = {id(v.node) for e in forwards for v in e.receiver if v.kind == PEFT_MODEL}
    for event in forwards:
        base = _wrapped(event.receiver)
        if base is None or id(base.get("wrapped_by")) not in run_wrappers:
            continue
        if disabled is None:
            disabled = _under_disabled_adapter(facts)
        if id(event.node) in disabled:
            continue
        node = _call_site(facts, event, base)
        if id(node) in reported:
            continue
        reported.add(id(node))
        yield finding(
            facts, node, CODE,
            f"this model object was wrapped in place by {_wrap_of(base.get('wrapped_by'), facts)}: its layers now "
            f"hold the adapter, so this {'forward pass' if event.method == '__call__' else event.method + '()'} "
            "gives the adapter's outputs, not the base model's, and a base-vs-fine-tuned comparison compares "
            "the fine-tuned model with itself",
            "run the base inside `with peft_model.disable_adapter():`, or load a separate base model "
            "(or copy.deepcopy(base) before wrapping) for the comparison",
        )
    for event, model in _second_wraps(facts):
        base = _wrapped(model)
        if base is None or base.get("wrapped_by") is event.node or id(event.node) in reported \
                or _unused_fresh_wrap(facts, base.get("wrapped_by")):
            continue
        reported.add(id(event.node))
        yield finding(
            facts, event.node, CODE,
            f"the base model given here was already wrapped in place by {_wrap_of(base.get('wrapped_by'), facts)}: "
            "this second wrap injects into the same layers, so the first wrapper changes too (a second "
            "PeftModel.from_pretrained makes the first give the second adapter's outputs; get_peft_model "
            "re-initialises the shared 'default' adapter, lora_B = 0, in the trained model as well)",
            "load further adapters with peft_model.load_adapter(path, adapter_name=...) and set_adapter(...), "
            "or give each wrapper its own freshly loaded base model",
        )


register(Rule(CODE, "base-reused-after-wrap",
              "The base model is used as if plain (forward/generate, a second wrap) after a wrap changed it in place.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
