"""PD306: a merged model is saved to a folder meant to be loaded on its own, and no tokenizer goes there.

`merge_and_unload()` gives a plain transformers model; its `save_pretrained` writes config.json and the
weights only. A folder that is then loaded by name (`from_pretrained(folder)`, a pipeline, vLLM) or pushed
to the hub needs the tokenizer files (and the chat template in tokenizer_config.json) as well.
"""

import libcst as cst

from peftdoctor.facts.values import BASE_MODEL, CONST, TOKENIZER
from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, arg_code, finding

CODE = "PD306"
SAVES = ("save_pretrained", "push_to_hub")
MAX_CALLER_DEPTH = 4  # as deep as the facts inline calls


def _may_write_tokenizer(event) -> bool:
    """A call that may put tokenizer files into a folder without naming a tokenizer: a Trainer saves its
    processing_class with save_model(); shutil may copy them from the base's folder."""
    return event.method == "save_model" or event.name.startswith("shutil.")


def _merged(values):
    """The result of merge_and_unload() on some real path."""
    for value in values or ():
        if value.kind == BASE_MODEL and value.get("plain_again") and not value.get("maybe") and \
                isinstance(value.node, cst.Call) and isinstance(value.node.func, cst.Attribute) and \
                value.node.func.attr.value == "merge_and_unload":
            return value
    return None


def _folder(facts, event):
    """(source text, literal value or None) of the folder or hub repo a save or load call names."""
    if event.name.endswith(".from_pretrained") and not event.name.startswith("."):
        keyword = "pretrained_model_name_or_path"
    else:
        keyword = "save_directory" if event.method == "save_pretrained" else "repo_id"
    values = event.arg(0, keyword) or ()
    literals = {v.get("value") for v in values if v.kind == CONST}
    literal = None
    if values and all(v.kind == CONST for v in values) and len(literals) == 1:
        literal = literals.pop()
    return arg_code(facts, event, 0, keyword), literal if isinstance(literal, str) else None


def _same(one, other) -> bool:
    return (one[0] is not None and one[0] == other[0]) or (one[1] is not None and one[1] == other[1])


def _may_be_same(one, other) -> bool:
    """Two folders that may be the same: the same text or literal, or one of them not a literal."""
    return _same(one, other) or one[1] is None or other[1] is None


def _nearby_events(facts, save):
    """The calls of this file and of the functions that call the save's function, in any module of the
    project, up the call chain: a caller may save the tokenizer to the folder it passed in."""
    project = facts.interpreter.project
    if project is None:
        return facts.events
    everything = [event for interp in project.interpreters() for event in interp.events]
    scopes, found = {id(save.scope)}, list(facts.events)
    for _ in range(MAX_CALLER_DEPTH):
        callers = [event for event in everything if any(id(fn) in scopes for fn in event.callees)]
        new_scopes = {id(event.scope) for event in callers} - scopes
        if not new_scopes:
            break
        scopes |= new_scopes
    found.extend(event for event in everything if id(event.scope) in scopes)
    return found


def _tokenizer_saves(facts, events):
    for event in events:
        if event.method not in SAVES or not event.name.startswith("."):
            continue
        receiver = facts.code_of(event.node.func.value).lower()
        if any(v.kind == TOKENIZER for v in event.receiver) or "tokenizer" in receiver or "processor" in receiver:
            yield _folder(facts, event)


def _loaded_later(facts, save, folder):
    """A later `*.from_pretrained(folder)` in the same function: the folder is used as a model of its own."""
    events = facts.events
    start = next(i for i, event in enumerate(events) if event is save)
    for event in events[start + 1:]:
        if event.scope is save.scope and event.name.endswith(".from_pretrained") and \
                not event.name.startswith(".") and _same(_folder(facts, event), folder):
            return event
    return None


def check(facts, ctx):
    for save in SAVES:
        for event in facts.method_calls(save):
            if _merged(event.receiver) is None:
                continue
            folder = _folder(facts, event)
            if folder[0] is None:
                continue
            pushed = any(v.kind == CONST and v.get("value") is True for v in event.kwargs.get("push_to_hub", ()))
            if save == "push_to_hub" or pushed:
                repo = next((facts.code_of(a.value) for a in event.node.args
                             if a.keyword is not None and a.keyword.value == "repo_id"), folder[0])
                where = f"pushed to the hub as {repo}"
            else:
                load = _loaded_later(facts, event, folder)
                if load is None:
                    continue
                where = f"saved to {folder[0]} and loaded from there by {facts.code_of(load.node.func)}() at " \
                    f"{facts.where(load.node)}"
            nearby = _nearby_events(facts, event)
            if any(_may_write_tokenizer(other) for other in nearby) or \
                    any(_may_be_same(folder, other) for other in _tokenizer_saves(facts, nearby)):
                continue
            yield finding(
                facts, event.node, CODE,
                f"the merged model is {where}, but no tokenizer is saved there: it holds config.json and the "
                "weights only, so AutoTokenizer.from_pretrained or a pipeline on it "
                "fails (transformers 5.24: \"Couldn't instantiate the backend tokenizer\"), and the chat "
                "template is lost",
                f"save the tokenizer next to the model: tokenizer.{save}({folder[0]}"
                f"{', push_to_hub=True' if pushed and save == 'save_pretrained' else ''})",
                severity=Severity.WARNING,
            )


register(Rule(CODE, "merged-model-without-tokenizer",
              "A merged model is saved to a folder that is loaded on its own or pushed, with no tokenizer in it.",
              Severity.WARNING, kind="static", check=check, needs_any=NEEDS_PEFT))
