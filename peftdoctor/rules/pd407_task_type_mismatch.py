"""PD407: a classification task_type on a causal language model, which has no classification head."""

from peftdoctor.facts.library import HEAD_TASK_TYPES, is_causal_lm_class
from peftdoctor.facts.values import BASE_MODEL
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding, known_configs

CODE = "PD407"


def _causal_base(values):
    """A causal LM base that some path brings to the wrap."""
    for value in values or ():
        if value.kind == BASE_MODEL and not value.get("maybe") and is_causal_lm_class(value.get("class_name")):
            return value
    return None


def check(facts, ctx):
    for event in facts.calls("peft.get_peft_model"):
        base = _causal_base(event.arg(0, "model"))
        configs = known_configs(event.arg(1, "peft_config"))
        if base is None or not configs:
            continue
        tasks = {c.get("fields", {}).get("task_type") for c in configs}
        if len(tasks) != 1 or not tasks <= HEAD_TASK_TYPES:
            continue
        task = tasks.pop()
        yield finding(
            facts, event.node, CODE,
            f"task_type={task} on a causal language model ({describe(facts, base)}): it has no classification "
            "head, peft's modules_to_save for the head match nothing, the logits are one score per vocabulary "
            "token at every position, and a batch with class labels fails in the language-model loss "
            "(measured: ValueError: Expected input batch_size (...) to match target batch_size (...))",
            f"load the model with the matching head (AutoModelFor{_head_class(task)}.from_pretrained(..., "
            "num_labels=...)), or use task_type=\"CAUSAL_LM\" to fine-tune the language model",
        )


def _head_class(task: str) -> str:
    return {"SEQ_CLS": "SequenceClassification", "TOKEN_CLS": "TokenClassification",
            "QUESTION_ANS": "QuestionAnswering"}[task]


register(Rule(CODE, "task-type-mismatch",
              "A classification task_type on a causal language model, which has no classification head.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
