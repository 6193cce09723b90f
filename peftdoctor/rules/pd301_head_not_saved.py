"""PD301: a model with a fresh task head is wrapped by a config that neither trains nor saves the head."""

from peftdoctor.facts.library import HEAD_TASK_TYPES, NOT_LITERAL
from peftdoctor.facts.values import MISSING
from peftdoctor.registry import Rule, register
from peftdoctor.facts.values import BASE_MODEL
from peftdoctor.rules.base import NEEDS_PEFT, finding, known_configs

CODE = "PD301"


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
    return task == head_task


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
        wanted = f"task_type=\"{head_task}\"" if head_task else "modules_to_save=[<head module name>]"
        fix = None
        if head_task and len(configs) == 1 and "task_type" not in configs[0].get("fields", {}):
            fix = {"kind": "add_keyword", "keyword": "task_type", "value": f'"{head_task}"'}
        yield finding(
            facts, event.node, CODE,
            f"{class_name} has a freshly initialised head, but the peft config has neither a matching task_type "
            "nor modules_to_save: the head stays frozen at its random init and is not saved with the adapter",
            f"add {wanted} to the LoraConfig so the head is trained and saved",
            fix=fix,
            fix_node=configs[0].node,
        )


register(Rule(CODE, "task-head-not-saved",
              "A fresh classification/QA head is neither trained nor saved (no task_type, no modules_to_save).",
              kind="static", check=check, needs_any=NEEDS_PEFT))
