"""PD105: an adapter loaded with load_adapter(..., is_trainable=True) is trained without set_adapter.

`PeftModel.load_adapter(path, adapter_name="x", is_trainable=True)` adds "x" with trainable weights but
leaves the first adapter active: the forward pass never uses "x", so training either fails at the first
backward (the active adapter is frozen) or trains the other adapter while "x" stays as loaded.

The diffusers resume does the reverse: a LoRA loader of diffusers (`load_lora_weights`, `load_lora_into_unet`,
`load_lora_adapter`, `load_attn_procs`) on a model that `add_adapter` already gave "default" loads the
checkpoint as "default_1" and makes it the only active adapter, while the optimizer holds "default".
"""

import libcst as cst

from peftdoctor.facts.library import DIFFUSERS_LORA_LOADERS, LOAD_STATE_HOOKS
from peftdoctor.facts.values import DIFFUSERS_MODEL, FUNCTION, PEFT_MODEL, const_value
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, local_anchor
from peftdoctor.rules.training import training_uses

CODE = "PD105"


def _adapter_name(facts, load) -> str:
    """The loaded adapter's name as written at the call (`"resumed"`)."""
    positional = [arg for arg in load.args if arg.keyword is None]
    for arg in load.args:
        if arg.keyword is not None and arg.keyword.value == "adapter_name":
            return facts.code_of(arg.value)
    return facts.code_of(positional[1].value)


def _trainer_picks_adapters(facts) -> bool:
    """TRL's DPO-style trainers switch adapters themselves (`model_adapter_name=`)."""
    return any("model_adapter_name" in event.kwargs for event in facts.events)


def check(facts, ctx):
    yield from _diffusers_resumes(facts)
    if _trainer_picks_adapters(facts):
        return
    reported = set()
    for use in training_uses(facts):
        for value in use.models:
            if value.kind != PEFT_MODEL or value.get("maybe") or value.get("inactive_load") is None:
                continue
            origin, elsewhere = local_anchor(facts, value.get("inactive_load"))
            if origin is None or elsewhere is not None or id(origin) in reported:
                continue  # made in another module: reported there
            reported.add(id(origin))
            name = _adapter_name(facts, origin)
            yield finding(
                facts, origin, CODE,
                f"adapter {name} is loaded trainable, but nothing makes it the active adapter before the model "
                f"is trained ({use.how} at {facts.where(use.node)}): peft keeps the first adapter active, so the "
                f"forward pass never uses {name}; with a frozen first adapter the first backward fails with "
                "\"element 0 of tensors does not require grad\", otherwise the other adapter is trained and "
                f"{name} stays as loaded",
                f"call model.set_adapter({name}) after load_adapter, before training",
            )


def _diffusers_resumes(facts):
    hooks = _load_state_hooks(facts)
    for index, event in enumerate(facts.events):
        if event.method not in DIFFUSERS_LORA_LOADERS or event.callees or not event.name.startswith(
                (".", "diffusers.")):
            continue  # not diffusers' loader: a function of the project
        targets = _loaded_into(event)
        adapted = [v for v in targets if v.kind == DIFFUSERS_MODEL and v.get("adapters") and not v.get("maybe")]
        hook = hooks.get(id(event.scope))
        if adapted and _trained_after(facts, index, event.scope):
            names, added_at, how = adapted[0].get("adapters"), (adapted[0].get("adapter_at"),), "and trained afterwards"
        elif hook is not None and targets and not any(v.kind == DIFFUSERS_MODEL and not v.get("adapters")
                                                      for v in targets):
            (names, added_at), how = hook, "in a hook that accelerator.load_state() runs on resume"
        else:
            continue
        new_name = _new_adapter(event, names)
        if new_name is None:
            continue
        loader = facts.code_of(event.node.func)
        removed = (" (diffusers < 0.40; later releases raise ValueError for a LoRA file)"
                   if event.method == "load_attn_procs" else "")
        yield finding(
            facts, event.node, CODE,
            f"{loader}(...) on a model that already has adapter '{names[0]}' (add_adapter at "
            f"{' and '.join(facts.where(node) for node in added_at)}), {how}: it loads the checkpoint as a new adapter {new_name} and makes it "
            f"the only active one{removed}, while the optimizer holds the parameters of '{names[0]}', which no "
            "longer reach the output: every optimizer step changes nothing (measured with diffusers 0.42.1 on a tiny "
            "UNet: output change 0 after a step, 0.14 when the checkpoint goes into 'default')",
            f"load the checkpoint into the existing adapter: state_dict = <Pipeline>.lora_state_dict(input_dir)[0], "
            f"then set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(<its 'unet.' entries without "
            f"the prefix>), adapter_name='{names[0]}')",
        )


def _load_state_hooks(facts) -> dict:
    """id(FunctionDef) of each function registered with accelerator.register_load_state_pre_hook, with the
    adapter names that add_adapter calls earlier in the registering function gave each model, and the first
    such call per model. The hook gets its models from accelerate, so which one it loads into is not known
    here: silent unless every model got the same names (a unet and a text encoder each given 'default')."""
    hooks = {}
    for index, event in enumerate(facts.events):
        if event.method not in LOAD_STATE_HOOKS or not event.args:
            continue
        per_model: dict[str, list] = {}
        for e in facts.events[:index]:
            if e.method == "add_adapter" and e.scope is event.scope and isinstance(e.node.func, cst.Attribute):
                per_model.setdefault(facts.code_of(e.node.func.value), []).append(e)
        names = {tuple(_literal(e, 1, "adapter_name", "default") for e in calls) for calls in per_model.values()}
        if len(names) != 1 or None in next(iter(names)):
            continue
        for value in event.args[0]:
            if value.kind == FUNCTION:
                hooks[id(value.node)] = (names.pop(), tuple(calls[0].node for calls in per_model.values()))
                break
    return hooks


def _loaded_into(event) -> list:
    """The models the loader loads into: its receiver (a pipeline's models), or the unet=/transformer= argument."""
    keyword = DIFFUSERS_LORA_LOADERS[event.method][0]
    values = event.receiver if keyword is None else (event.arg(2, keyword) or ())
    out = []
    for value in values:
        if value.kind == DIFFUSERS_MODEL and value.get("class_name", "").endswith("Pipeline"):
            out.extend(value.get("models") or (value,))  # no model passed in: its own, fresh one
        else:
            out.append(value)
    return out


def _new_adapter(event, existing) -> str | None:
    """The name the loader gives the new adapter ("'default_1'"); None when it is not known here, when it
    reuses an existing name (diffusers refuses: "already in use"), or with hotswap= (replaces in place)."""
    if "hotswap" in event.kwargs or event.star_kwargs:
        return None
    name = _literal(event, DIFFUSERS_LORA_LOADERS[event.method][1], "adapter_name", MISSING_NAME)
    if name is MISSING_NAME:
        return f"'default_{len(existing)}'"
    return f"'{name}'" if isinstance(name, str) and name not in existing else None


MISSING_NAME = object()


def _literal(event, index, keyword, absent):
    """A literal argument; `absent` when not passed, None when not literal."""
    values = event.arg(index, keyword)
    return absent if values is None else const_value(values, None)


def _trained_after(facts, index: int, scope, depth: int = 4) -> bool:
    """A backward pass follows the call in its function, or in a function that called this one (its
    call is recorded after the callee's calls), up to `depth` callers."""
    later = facts.events[index + 1:]
    if any(e.method == "backward" and e.scope is scope for e in later):
        return True
    for offset, caller in enumerate(later):
        if depth and any(callee is scope for callee in caller.callees):
            return _trained_after(facts, index + 1 + offset, caller.scope, depth - 1)
    return False


register(Rule(CODE, "adapter-not-active",
              "An adapter loaded with load_adapter(..., is_trainable=True) is trained without set_adapter(), or a "
              "diffusers LoRA loader resumes into a second adapter next to add_adapter's.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
