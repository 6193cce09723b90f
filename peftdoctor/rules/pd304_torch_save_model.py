"""PD304: a whole PeftModel object pickled with torch.save instead of saved with save_pretrained; or a
PeftModel's whole state_dict() saved with torch.save where the project's PeftModel.from_pretrained reads it."""

import libcst as cst

from peftdoctor.facts.library import descendants
from peftdoctor.facts.values import PEFT_CONFIG, PEFT_MODEL, STATE_DICT
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import (
    NEEDS_PEFT,
    argument_node,
    describe,
    finding,
    folder_keys,
    on_some_path,
    path_keys,
    path_string,
    same_path,
)

CODE = "PD304"
# The weights file peft reads from an adapter folder when there is no adapter_model.safetensors.
ADAPTER_WEIGHTS = "adapter_model.bin"
# Loads of an adapter folder: (call pattern, position and keyword of the folder).
ADAPTER_LOADS = (("peft.PeftModel*.from_pretrained", 1, "model_id"),
                 ("peft.PeftMixedModel.from_pretrained", 1, "model_id"),
                 ("peft.AutoPeftModel*.from_pretrained", 0, "pretrained_model_name_or_path"))
PATH_JOINS = ("os.path.join", "posixpath.join", "pathlib.Path", "Path")


def _whole_model(facts, event):
    peft = on_some_path(event.arg(0, "obj"), PEFT_MODEL)
    if peft is None:
        return None
    return finding(
        facts, event.node, CODE,
        f"torch.save pickles the whole PeftModel object (from {describe(facts, peft)}), base weights included: "
        "torch.load refuses the file by default since torch 2.6 (weights_only=True raises UnpicklingError), "
        "model.load_state_dict(torch.load(path)) raises TypeError ('Expected state_dict to be dict-like'), "
        "and PeftModel.from_pretrained cannot read it",
        "save the adapter with model.save_pretrained(folder) and load it with "
        "PeftModel.from_pretrained(base, folder)",
    )


# ----------------------------------------------------------------- where a path points
def _assigned(node, scope):
    """The expression a plain name was given by its one assignment in the scope, else the node itself."""
    if not isinstance(node, cst.Name):
        return node
    found = [n.value for n in descendants(scope) if isinstance(n, cst.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0].target, cst.Name) and n.targets[0].target.value == node.value]
    return found[0] if len(found) == 1 else node


def _adapter_folder(facts, path, scope) -> set | None:
    """The keys of folder F when `path` is F/adapter_model.bin (os.path.join, Path /, f-string, +, a literal)."""
    path = _assigned(path, scope)
    if isinstance(path, cst.Call) and facts.code_of(path.func) == "str" and len(path.args) == 1:
        path = path.args[0].value
    literal = path_string(path)
    if literal is not None:
        folder, _, name = literal.rpartition("/")
        return {("literal", folder)} if name == ADAPTER_WEIGHTS and folder else None
    if isinstance(path, cst.Call) and len(path.args) == 2 and path_string(path.args[1].value) == ADAPTER_WEIGHTS:
        join = next((e for e in facts.events if e.node is path and e.name in PATH_JOINS), None)
        return path_keys(facts, path.args[0].value, join.args[0] if join and join.args else None) if join else None
    if isinstance(path, cst.BinaryOperation) and isinstance(path.operator, (cst.Divide, cst.Add)):
        name = path_string(path.right)
        if name is not None and name.lstrip("/") == ADAPTER_WEIGHTS:
            left = path.left
            if isinstance(left, cst.Call) and facts.code_of(left.func) in PATH_JOINS and len(left.args) == 1:
                left = left.args[0].value
            return path_keys(facts, left)
    if isinstance(path, cst.FormattedString) and len(path.parts) == 2 and \
            isinstance(path.parts[0], cst.FormattedStringExpression) and \
            isinstance(path.parts[1], cst.FormattedStringText) and path.parts[1].value == "/" + ADAPTER_WEIGHTS:
        return path_keys(facts, path.parts[0].expression)
    return None


# ----------------------------------------------------------------- the state_dict case
def _adapter_loads(facts):
    for pattern, index, keyword in ADAPTER_LOADS:
        for event in facts.calls(pattern):
            yield event, folder_keys(facts, event, index, keyword)


def _folder_writes(facts, keys, scope) -> set:
    """What the project's saves into the same folder write there: "adapter" (a PeftModel's save_pretrained or a
    trainer's save_model: adapter_model.safetensors, which peft reads before any .bin), "config" (a peft
    config's save_pretrained: adapter_config.json)."""
    written = set()
    for event in facts.method_calls("save_pretrained") + facts.method_calls("save_model"):
        if not same_path(keys, scope, folder_keys(facts, event, 0, "save_directory"), event.scope):
            continue
        if event.method == "save_model" or any(v.kind == PEFT_MODEL for v in event.receiver):
            written.add("adapter")
        elif any(v.kind == PEFT_CONFIG for v in event.receiver) or \
                "peft_config" in facts.code_of(event.node.func.value):
            written.add("config")
    return written


def _state_dict_read_by_from_pretrained(facts, ctx, event):
    saved = on_some_path(event.arg(0, "obj"), STATE_DICT)
    path = argument_node(event, 1, "f")
    if saved is None or path is None:
        return None
    as_file = path_keys(facts, path, event.arg(1, "f"))
    folder = _adapter_folder(facts, path, event.scope)
    for load, load_keys in _adapter_loads(facts):
        loader = f"{facts.code_of(load.node.func)}() at {facts.where(load.node)}"
        if same_path(as_file, event.scope, load_keys, load.scope):
            what = (f"{loader} is given this file as the adapter: it expects a folder with adapter_config.json and "
                    "raises ValueError (\"Can't find 'adapter_config.json'\")")
        elif folder is not None and same_path(folder, event.scope, load_keys, load.scope):
            written = _folder_writes(facts, folder, event.scope)
            if "adapter" in written:
                continue
            what = _read_as_adapter(loader, "config" in written, ctx.version("peft", facts))
        else:
            continue
        return finding(
            facts, event.node, CODE,
            f"torch.save writes the whole state_dict() of the PeftModel (from "
            f"{describe(facts, saved.get('model')[0])}): base weights included, keys named with the adapter "
            f"(lora_A.default.weight); {what}",
            "save the adapter with model.save_pretrained(folder) (adapter_config.json and "
            "adapter_model.safetensors, adapter weights only) and load it with PeftModel.from_pretrained(base, folder)",
        )
    return None


def _read_as_adapter(loader: str, config_written: bool, peft) -> str:
    if not config_written:
        return (f"{loader} reads that folder, where nothing writes adapter_config.json: it raises ValueError "
                "(\"Can't find 'adapter_config.json'\")")
    if peft.at_least(0, 21):
        return (f"{loader} reads it as adapter_model.bin; with {peft.text}, peft loads the adapter from it but also "
                "writes the saved base weights over the base model it is given (measured: given another base, the "
                "outputs are those of the base saved in the file), from a file 18x the adapter's size on a tiny "
                "Llama; peft <= 0.20 loads none of those keys")
    return (f"{loader} reads it as adapter_model.bin; with {peft.text}, peft loads none of those keys (measured: "
            "peft 0.13 silently, 0.15-0.20 with only a 'Found missing adapter keys' warning), so the adapter stays "
            "at its initialisation and the model answers exactly as the plain base")


def check(facts, ctx):
    for event in facts.calls("torch.save"):
        found = _whole_model(facts, event) or _state_dict_read_by_from_pretrained(facts, ctx, event)
        if found is not None:
            yield found


register(Rule(CODE, "torch-save-whole-model",
              "torch.save(model) pickles a whole PeftModel, or its whole state_dict() is saved where "
              "PeftModel.from_pretrained reads an adapter.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
