"""PD301: a model with a fresh task head is wrapped by a config that neither trains nor saves the head."""

from peftdoctor.facts.library import (
    GENERATION_TASK_TYPES,
    HEAD_MODULES_OF_TASK_TYPE,
    HEAD_TASK_TYPES,
    NOT_LITERAL,
    PRETRAINED_MODEL_WITHOUT_GENERATE,
)
from peftdoctor.facts.values import BASE_MODEL, MISSING
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, finding, known_configs

CODE = "PD301"
FROZEN = "the head stays frozen at its random init and is not saved with the adapter"


def _config_covers_head(config, head_task) -> bool:
    fields = config.get("fields", {})
    task = fields.get("task_type", MISSING)
    modules = fields.get("modules_to_save", MISSING)
    if task is NOT_LITERAL or modules is NOT_LITERAL:
        return True  # decided elsewhere: stay silent
    if modules not in (MISSING, None, [], ()):
        return True
    if head_task is None:
        return task in HEAD_TASK_TYPES
    # SEQ_CLS and TOKEN_CLS both make peft train and save `classifier` and `score`: either covers either head.
    return isinstance(task, str) and HEAD_MODULES_OF_TASK_TYPE.get(task) == HEAD_MODULES_OF_TASK_TYPE[head_task]


def what_happens(task, class_name: str, head_task, transformers_version) -> str:
    """What get_peft_model does with this config and head, as measured (tests/test_truth_k.py)."""
    if task in (MISSING, None):
        return f"{class_name} has a freshly initialised head, but the peft config has neither task_type nor " \
               f"modules_to_save: {FROZEN}"
    if task in GENERATION_TASK_TYPES:
        if transformers_version.below(*PRETRAINED_MODEL_WITHOUT_GENERATE):
            return f"task_type={task} on {class_name} wraps it for generation and trains no head: {FROZEN}"
        if head_task is not None:  # a *ForSequenceClassification-style class: no generate()
            return f"task_type={task} makes get_peft_model raise AttributeError: peft reads the model's " \
                   f"prepare_inputs_for_generation, and {class_name} has none (no generate())"
        return f"task_type={task} makes get_peft_model raise AttributeError when {class_name} has no generate() " \
               f"(peft reads its prepare_inputs_for_generation); if it has one, no head is trained: {FROZEN}"
    saved = HEAD_MODULES_OF_TASK_TYPE.get(task) if isinstance(task, str) else None
    trains = f"makes peft train and save {' and '.join(saved)}, not this head" if saved else "trains no head"
    return f"{class_name} has a freshly initialised head, but task_type={task} {trains}: {FROZEN}"


def check(facts, ctx):
    for event in facts.calls("peft.get_peft_model"):
        heads = [v for v in event.arg(0, "model") or () if v.kind == BASE_MODEL and v.get("head")
                 and not v.get("maybe")]  # some path brings a fresh head here
        if not heads:
            continue
        configs = known_configs(event.arg(1, "peft_config"))
        if configs is None:
            continue
        head_tasks = {v.get("head_task") for v in heads}
        if len(head_tasks) != 1:
            continue
        head_task = head_tasks.pop()
        if any(_config_covers_head(config, head_task) for config in configs):
            continue
        class_name = heads[0].get("class_name")
        task = configs[0].get("fields", {}).get("task_type", MISSING)
        transformers_version = ctx.version("transformers", facts)
        wanted = f"task_type=\"{head_task}\"" if head_task else "modules_to_save=[<head module name>]"
        fix = None
        if head_task and len(configs) == 1 and "task_type" not in configs[0].get("fields", {}):
            fix = {"kind": "add_keyword", "keyword": "task_type", "value": f'"{head_task}"'}
        instead = "add" if task in (MISSING, None) else f"replace task_type={task} by"
        yield finding(
            facts, event.node, CODE,
            what_happens(task, class_name, head_task, transformers_version),
            f"{instead} {wanted} in the LoraConfig so the head is trained and saved",
            versions=transformers_version.text if task in GENERATION_TASK_TYPES else "",
            fix=fix,
            fix_node=configs[0].node,
        )


register(Rule(CODE, "task-head-not-saved",
              "A fresh classification/QA head is neither trained nor saved (no task_type or another head's, no "
              "modules_to_save); a generation task_type makes get_peft_model raise.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
