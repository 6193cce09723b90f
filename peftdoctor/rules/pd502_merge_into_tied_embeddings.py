"""PD502: a LoRA adapter on lm_head or the input embedding of a tied-embedding base is merged.

When the base ties lm_head to the input embedding, both are one matrix. Merging a LoRA layer on either
adds its update to that one matrix, so the other layer changes too: the merged model no longer computes
what the adapter computed. The tie must be knowable from the script (`tie_word_embeddings=True`, or a
model class whose checkpoints all tie); otherwise the rule stays silent.
"""

from peftdoctor.facts.library import NOT_LITERAL, TIED_LAYER_NAMES
from peftdoctor.facts.values import BASE_MODEL, PEFT_MODEL, MISSING
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, describe, finding, known_configs

CODE = "PD502"
MERGES = ("merge_and_unload", "merge_adapter")


def _tied_targets(config) -> list[str]:
    """The tied layers a literal LoRA config puts an adapter on (target_modules), else []."""
    fields = config.get("fields", {})
    if fields.get("ensure_weight_tying", MISSING) not in (MISSING, False):
        return []  # peft ties the two adapters itself: not measured here, so not judged
    targets = fields.get("target_modules", MISSING)
    if targets in (MISSING, None, NOT_LITERAL):
        return []
    if isinstance(targets, str):
        return [name for name in TIED_LAYER_NAMES if name in targets]
    return [name for name in TIED_LAYER_NAMES if any(str(t).split(".")[-1] == name for t in targets)]


def _tied_adapter(values):
    """(peft model, its tied base, the tied layers it adapts) on some real path, or None."""
    for value in values or ():
        if value.kind != PEFT_MODEL or value.get("maybe"):
            continue
        bases = value.get("base") or ()
        if not bases or not all(b.kind == BASE_MODEL and b.get("tied") is True for b in bases):
            continue
        configs = known_configs(value.get("config"))
        if configs is None:
            continue
        for config in configs:
            layers = _tied_targets(config)
            if layers:
                return value, bases[0], layers
    return None


def check(facts, ctx):
    for merge in MERGES:
        for event in facts.method_calls(merge):
            found = _tied_adapter(event.receiver)
            if found is None:
                continue
            _, base, layers = found
            yield finding(
                facts, event.node, CODE,
                f"{merge}() merges a LoRA adapter on {', '.join(layers)} into a base that ties lm_head to the "
                f"input embedding ({describe(facts, base)}): the two layers are one matrix, so the merge changes "
                "both, and the merged model's logits differ from the adapter's (by more than 1 on a tiny tied "
                "Llama), in memory and after save and reload",
                "keep lm_head and the embedding out of target_modules (list them in modules_to_save, which peft "
                "unties on merge), or serve the adapter unmerged",
            )


register(Rule(CODE, "merge-into-tied-embeddings",
              "A LoRA adapter on lm_head or the embedding of a tied-embedding base is merged: both layers change.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
