"""PD302: tokens added and embeddings resized, but the new rows are never trained or saved."""

from peftdoctor.facts.library import NOT_LITERAL
from peftdoctor.facts.values import (
    BASE_MODEL,
    CONST,
    MISSING,
    PEFT_MODEL,
    TRAINER,
    Value,
    const_value,
)
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import (
    NEEDS_PEFT,
    PEFT_LOADERS,
    all_base,
    finding,
    folder_keys,
    known_configs,
    same_path,
)

CODE = "PD302"
EMBEDDING_WORDS = ("embed", "lm_head", "wte", "shared", "word_embeddings", "output_layer")


def _names_embedding(value) -> bool | None:
    """True/False for a literal module list or pattern; None when not literal."""
    if value in (MISSING, None):
        return False
    if value is NOT_LITERAL:
        return None
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple, set)) else None
    if names is None:
        return None
    return any(isinstance(n, str) and any(word in n for word in EMBEDDING_WORDS) for n in names)


def _config_learns_new_rows(config) -> bool | None:
    fields = config.get("fields", {})
    if fields.get("trainable_token_indices", MISSING) not in (MISSING, None):
        return True
    alternatives = config.get("alternatives") or {}
    verdicts = []
    for key in ("target_modules", "modules_to_save"):
        field = fields.get(key, MISSING)
        if field is NOT_LITERAL and key in alternatives:  # one literal per path: each must be judged
            per_path = [_names_embedding(value) for value in alternatives[key]]
            verdicts.append(True if True in per_path else None if None in per_path else False)
        else:
            verdicts.append(_names_embedding(field))
    if True in verdicts:
        return True
    if None in verdicts:
        return None
    return False


def _resized(values) -> bool:
    return all_base(values) and all(v.get("resized") and v.get("new_tokens") for v in values)


def _resized_with_new_tokens(values) -> Value | None:
    """A base model that some path brings here with added tokens and resized embeddings."""
    for value in values or ():
        if value.kind == BASE_MODEL and value.get("resized") and value.get("new_tokens") and not value.get("maybe"):
            return value
    return None


def _configs_on_wrap(values) -> list[Value] | None:
    """The peft configs of the paths that wrap (a `None` peft_config path does not wrap);
    None when one of them is not known here."""
    configs = [v for v in values or () if not (v.kind == CONST and v.get("value") is None)]
    return known_configs(configs)


def _wrap_sites(facts):
    """(call, base values, config values): get_peft_model, and trainers given peft_config=."""
    for event in facts.calls("peft.get_peft_model"):
        yield event, event.arg(0, "model"), event.arg(1, "peft_config")
    for event in facts.events:
        for trainer in event.result:
            if trainer.kind == TRAINER and trainer.node is event.node and trainer.get("peft_config") is not None:
                yield event, trainer.get("model"), trainer.get("peft_config")


def _learns_none(configs) -> bool:
    return bool(configs) and all(_config_learns_new_rows(c) is False for c in configs)


def check(facts, ctx):
    for event, base, config_values in _wrap_sites(facts):
        resized = _resized_with_new_tokens(base)
        if resized is None or not _learns_none(_configs_on_wrap(config_values)):
            continue
        yield finding(
            facts, event.node, CODE,
            f"tokens were added and the embeddings resized ({facts.where(resized.get('resized_at'))}), but the "
            "peft config trains no embedding layer: the new tokens keep their random initial embeddings",
            "add trainable_token_indices=... (peft >= 0.15) or put the embedding (and lm_head) in "
            "target_modules / modules_to_save",
        )
    yield from _resized_after_wrap(facts)
    for event in facts.method_calls("save_pretrained"):
        if const_value(event.kwargs.get("save_embedding_layers"), MISSING) is not False:
            continue
        models = [v for v in event.receiver if v.kind == PEFT_MODEL]
        if models and len(models) == len(event.receiver) and all(_resized(v.get("base")) for v in models):
            yield finding(
                facts, event.node, CODE,
                "save_embedding_layers=False drops the resized embedding matrices: the new tokens' rows are "
                "lost; a re-resized base gets different random rows, an unresized one fails with IndexError "
                "on the new token ids",
                "leave save_embedding_layers at its default ('auto') when tokens were added",
            )

    yield from _reloaded_onto_unresized_base(facts)


def _wrapped_adapters(value) -> list[Value]:
    """The PeftModels a resize reaches: the model itself, or one set as its submodule (`m.model = wrap(...)`)."""
    if value.kind == PEFT_MODEL:
        return [value]
    if value.kind == BASE_MODEL:
        return [v for v in value.get("inner_peft") or () if v.kind == PEFT_MODEL]
    return []


def _resized_after_wrap(facts):
    """resize_token_embeddings after get_peft_model: peft froze the embedding, the new rows stay frozen."""
    for event in facts.method_calls("resize_token_embeddings"):
        for value in event.result:  # the resized model, one per path
            adapters = _wrapped_adapters(value)
            if not adapters or value.get("maybe") or not value.get("new_tokens"):
                continue
            configs = known_configs([c for a in adapters for c in a.get("config") or ()])
            if not _learns_none(configs):
                continue
            yield finding(
                facts, event.node, CODE,
                f"the embeddings are resized for added tokens after the model was wrapped by peft "
                f"({facts.where(adapters[0].node)}), whose config trains no embedding layer: the new rows are "
                "created frozen, are never trained and are not saved with the adapter",
                "add the tokens and resize before get_peft_model, and train the new rows: "
                "trainable_token_indices=... (peft >= 0.15) or the embedding in modules_to_save",
            )
            break


def _saved_with_new_tokens(facts) -> list[tuple[set, object, int]]:
    """(path keys, scope, line) of the saves of adapters trained with added tokens."""
    saved = []
    for event in facts.events:
        if event.method == "save_pretrained":
            models = [v for v in event.receiver if v.kind == PEFT_MODEL]
        elif event.method == "save_model":
            models = [m for t in event.receiver if t.kind == TRAINER for m in t.get("trained") or ()]
        else:
            continue
        keys = folder_keys(facts, event, 0, "save_directory" if event.method == "save_pretrained" else "output_dir")
        if keys and models and all(v.kind == PEFT_MODEL and _resized(v.get("base")) for v in models):
            saved.append((keys, event.scope, facts.line_of(event.node)))
    return saved


def _reloaded_onto_unresized_base(facts):
    saved = _saved_with_new_tokens(facts)
    if not saved:
        return
    for event in facts.calls(*PEFT_LOADERS):
        base = event.arg(0, "model")
        keys = folder_keys(facts, event, 1, "model_id")
        line = next((line for saved_keys, scope, line in saved
                     if same_path(saved_keys, scope, keys, event.scope)), None)
        if line is not None and all_base(base) and not any(v.get("resized") for v in base):
            yield finding(
                facts, event.node, CODE,
                f"the adapter saved at line {line} was trained with added tokens, but it is loaded onto a "
                "base whose embeddings were not resized: loading fails with a size mismatch (or, without the "
                "saved embeddings, the new token ids are out of range)",
                "resize the base first: base.resize_token_embeddings(len(tokenizer)) with the tokenizer saved "
                "beside the adapter",
            )


register(Rule(CODE, "new-tokens-not-learned",
              "Added tokens' embedding rows are never trained or are dropped on save.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
