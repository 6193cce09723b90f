"""PD404: the pad token is the eos token and the collator masks every pad-id label, eos included."""

import libcst as cst

from peftdoctor.facts.library import (
    NO_GRAD_CONTEXTS,
    NO_PAD_TOKEN_CHECKPOINTS,
    PAD_MASKING_COLLATORS,
    sft_default_collator_masks_pad,
)
from peftdoctor.facts.names import dotted
from peftdoctor.facts.values import (
    BASE_MODEL,
    CONST,
    MISSING,
    PEFT_MODEL,
    TOKENIZER,
    TRAINER,
    TRAINING_ARGS,
    const_value,
)
from peftdoctor.registry import Rule, register
from peftdoctor.facts.api_versions import shown
from peftdoctor.rules.base import NEEDS_PEFT, finding

CODE = "PD404"
WHAT_HAPPENS = ("every label equal to pad_token_id is set to -100, and that is the eos id: no eos is ever a "
                "target, so the model never learns to stop (measured: a LoRA model trained this way gives eos a "
                "probability of 1e-6 where its rows end, 0.9999 with a pad token of its own) and generates until "
                "max_new_tokens")
HINT = ("give the tokenizer a pad token of its own (tokenizer.add_special_tokens({'pad_token': '<pad>'}) and "
        "resize the embeddings, or a reserved/unk token), or use a collator that masks padding by "
        "attention_mask, not by token id")
SFT_COLLATOR_POSITION = 2  # SFTTrainer(model, args, data_collator, ...) in every trl release


def _only_when_missing(tokenizer) -> bool:
    """The eos was set as pad under `if tokenizer.pad_token is None:` (or `if not tokenizer.pad_token_id:`)."""
    return any(not holds and "pad_token" in text for text, holds in tokenizer.get("guard") or ())


def _no_pad_checkpoint(checkpoint) -> bool:
    """A checkpoint named in the script, of a family whose tokenizer has no pad token."""
    return isinstance(checkpoint, str) and any(family in checkpoint.lower() for family in NO_PAD_TOKEN_CHECKPOINTS)


def _has_no_pad_of_its_own(tokenizer) -> bool:
    return _no_pad_checkpoint(const_value(tokenizer.get("source"), None))


def _model_checkpoints(values) -> list | None:
    """The checkpoint each path's model was loaded from (a name, or a model's from_pretrained argument);
    None when some path's is not known here."""
    found = []
    for value in values or ():
        if value.get("maybe"):
            continue
        if value.kind == CONST:
            found.append(value.get("value"))
        elif value.kind == BASE_MODEL:
            found.append(const_value(value.get("source"), None))
        elif value.kind == PEFT_MODEL and value.get("base"):
            found.extend(const_value(base.get("source"), None) for base in value.get("base"))
        else:
            return None
    return found or None


def _pads_with_eos(values):
    """A tokenizer that some path brings here with pad = eos. A fallback that runs only when the tokenizer
    has no pad token counts when its checkpoint is one of a family known to have none."""
    for value in values or ():
        if value.kind != TOKENIZER or not value.get("pad_is_eos") or value.get("maybe"):
            continue
        if _only_when_missing(value) and not _has_no_pad_of_its_own(value):
            continue
        return value
    return None


def _where_pad_set(facts, tokenizer) -> str:
    node = tokenizer.get("pad_set_at")
    return f" (pad = eos at {facts.where(node)})" if node is not None else ""


def _evaluation_only(facts, event) -> bool:
    """The collator is built in a function that runs under torch.no_grad()/inference_mode() and neither
    steps backward nor builds a trainer: its labels only score the eos in an evaluation, nothing learns."""
    scope = event.scope
    if not isinstance(scope, cst.FunctionDef) or facts.has_backward(scope):
        return False
    here = [e for e in facts.events if e.scope is scope]
    if any(v.kind == TRAINER for e in here for v in e.result):
        return False
    decorators = {dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator)
                  for d in scope.decorators}
    return bool(decorators & set(NO_GRAD_CONTEXTS)) or any(e.name in NO_GRAD_CONTEXTS for e in here)


def _collator_findings(facts):
    for event in facts.events:
        mlm_default = PAD_MASKING_COLLATORS.get(event.name)
        if mlm_default is None or _evaluation_only(facts, event):
            continue
        mlm = event.arg(1, "mlm") if mlm_default else event.kwargs.get("mlm")
        if (const_value(mlm, MISSING) if mlm is not None else mlm_default) is not False:
            continue  # masked-LM training, or not known here
        tokenizer = _pads_with_eos(event.arg(0, "tokenizer") if mlm_default else event.kwargs.get("tokenizer"))
        if tokenizer is None:
            continue
        collator = event.name.rsplit(".", 1)[-1]
        yield finding(
            facts, event.node, CODE,
            f"{collator} with a tokenizer whose pad token is its eos token{_where_pad_set(facts, tokenizer)}: "
            f"{WHAT_HAPPENS}",
            HINT,
        )


def _packing(facts, event):
    """SFTTrainer's `packing`: its own keyword, else the SFTConfig's; MISSING when left at its default."""
    if "packing" in event.kwargs:
        return const_value(event.kwargs["packing"], None)
    config_nodes = {id(v.node) for v in event.arg(1, "args") or () if v.kind == TRAINING_ARGS}
    if not config_nodes:
        return MISSING if event.arg(1, "args") is None else None
    for made in facts.events:
        if id(made.node) in config_nodes:
            return const_value(made.kwargs["packing"], None) if "packing" in made.kwargs else MISSING
    return None


def _sft_default_collator_findings(facts, ctx):
    for event in facts.events:
        trainers = [v for v in event.result if v.kind == TRAINER and v.node is event.node]
        if not trainers or not trainers[0].get("class_name", "").endswith("SFTTrainer"):
            continue
        if "data_collator" in event.kwargs or event.star_kwargs or len(event.args) > SFT_COLLATOR_POSITION:
            continue
        passed = event.kwargs.get("tokenizer") or event.kwargs.get("processing_class")
        if passed is not None:
            tokenizer = _pads_with_eos(passed)
            if tokenizer is None:
                continue
            why = f"the tokenizer's pad token is its eos token{_where_pad_set(facts, tokenizer)}"
        else:
            checkpoints = _model_checkpoints(event.arg(0, "model"))
            if not checkpoints or not all(_no_pad_checkpoint(c) for c in checkpoints):
                continue
            why = (f"without a tokenizer it loads {checkpoints[0]}'s own, which has no pad token, and sets its "
                   "pad token to the eos token")
        trl = ctx.version("trl", facts)
        if not sft_default_collator_masks_pad(trl, _packing(facts, event)):
            continue
        yield finding(
            facts, event.node, CODE,
            f"SFTTrainer without data_collator on trl {shown(trl.version)} uses transformers' "
            f"DataCollatorForLanguageModeling(mlm=False), and {why}: {WHAT_HAPPENS}",
            HINT + "; trl >= 0.16.1 masks padding by position",
            versions=trl.text,
        )


def check(facts, ctx):
    yield from _collator_findings(facts)
    yield from _sft_default_collator_findings(facts, ctx)


register(Rule(CODE, "eos-never-learned",
              "pad_token = eos_token with a collator that masks every pad-id label: eos is never learned.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
