"""PD302: tokens added and embeddings resized, but the new rows are never trained or saved."""

from peftdoctor.facts.library import NOT_LITERAL
from peftdoctor.facts.values import MISSING, PEFT_MODEL, TRAINER, const_value
from peftdoctor.registry import Rule, register
from peftdoctor.rules.base import NEEDS_PEFT, PEFT_LOADERS, all_base, arg_code, finding, known_configs

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
    verdicts = [_names_embedding(fields.get(key, MISSING)) for key in ("target_modules", "modules_to_save")]
    if True in verdicts:
        return True
    if None in verdicts:
        return None
    return False


def _resized(values) -> bool:
    return all_base(values) and all(v.get("resized") and v.get("new_tokens") for v in values)


def check(facts, ctx):
    for event in facts.calls("peft.get_peft_model"):
        base = event.arg(0, "model")
        if not _resized(base):
            continue
        configs = known_configs(event.arg(1, "peft_config"))
        if configs is None or any(_config_learns_new_rows(c) is not False for c in configs):
            continue
        resized_line = facts.line_of(base[0].get("resized_at"))
        yield finding(
            facts, event.node, CODE,
            f"tokens were added and the embeddings resized (line {resized_line}), but the peft config trains "
            "no embedding layer: the new tokens keep their random initial embeddings",
            "add trainable_token_indices=... (peft >= 0.15) or put the embedding (and lm_head) in "
            "target_modules / modules_to_save",
        )
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


def _saved_with_new_tokens(facts) -> dict[str, int]:
    """Path expression -> line, for saves of adapters trained with added tokens."""
    saved = {}
    for event in facts.events:
        if event.method == "save_pretrained":
            models = [v for v in event.receiver if v.kind == PEFT_MODEL]
        elif event.method == "save_model":
            models = [m for t in event.receiver if t.kind == TRAINER for m in t.get("trained") or ()]
        else:
            continue
        path = arg_code(facts, event, 0, "save_directory" if event.method == "save_pretrained" else "output_dir")
        if path and models and all(v.kind == PEFT_MODEL and _resized(v.get("base")) for v in models):
            saved.setdefault(path, facts.line_of(event.node))
    return saved


def _reloaded_onto_unresized_base(facts):
    saved = _saved_with_new_tokens(facts)
    if not saved:
        return
    for event in facts.calls(*PEFT_LOADERS):
        base = event.arg(0, "model")
        path = arg_code(facts, event, 1, "model_id")
        if path in saved and all_base(base) and not any(v.get("resized") for v in base):
            yield finding(
                facts, event.node, CODE,
                f"the adapter saved at line {saved[path]} was trained with added tokens, but it is loaded onto a "
                "base whose embeddings were not resized: loading fails with a size mismatch (or, without the "
                "saved embeddings, the new token ids are out of range)",
                "resize the base first: base.resize_token_embeddings(len(tokenizer)) with the tokenizer saved "
                "beside the adapter",
            )


register(Rule(CODE, "new-tokens-not-learned",
              "Added tokens' embedding rows are never trained or are dropped on save.",
              kind="static", check=check, needs_any=NEEDS_PEFT))
