"""`diagnose(model)`: check a live model the moment before `trainer.train()`.

Nothing here runs the model; it reads the module tree, parameters and hooks.
"""

from __future__ import annotations

from peftdoctor.finding import Finding, Severity
from peftdoctor.runtime.errors import UnhealthyModel

WHERE = "<model>"
HEAD_NAMES = ("classifier", "score", "qa_outputs", "pre_classifier")
ADAPTER_MARKERS = ("lora_", "modules_to_save", "trainable_tokens", "prompt_encoder", "ia3_", "oft_", "boft_",
                   "vera_", "hada_", "lokr_", "adaption_", "fourierft_", "hra_", "bone_", "ln_tuning")


def _f(code, message, severity=Severity.ERROR, hint="", **extra) -> Finding:
    return Finding(code=code, message=message, path=WHERE, line=0, hint=hint, severity=severity, extra=extra)


def _few(names, limit=3) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _nesting(model) -> list[Finding]:
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    inner = [n for n, m in model.named_modules() if n and isinstance(m, PeftModel)]
    if inner:
        depth = 1 + len(inner) if isinstance(model, PeftModel) else len(inner)
        out.append(_f("PD706", f"PeftModel nested {depth} deep (inner one at '{inner[0]}'): the outer wrapper's "
                      "adapter is what gets saved, under doubled key names", depth=depth,
                      hint="call get_peft_model or PeftModel.from_pretrained once, on the plain base model"))
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            deeper = [n for n, m in module.named_modules() if n and isinstance(m, BaseTunerLayer)]
            if deeper:
                out.append(_f("PD706", f"adapter layer inside adapter layer at '{name}.{deeper[0]}'"))
                break
    return out


def _trainable(model, training_args) -> list[Finding]:
    from peftdoctor.runtime.checks import describe_trainable, trainable_summary

    summary = trainable_summary(model)
    if not summary:
        return [_f("PD704", "no trainable parameters: training would update nothing",
                   hint="use get_peft_model, or PeftModel.from_pretrained(..., is_trainable=True)")]
    fp16_amp = bool(getattr(training_args, "fp16", False))
    bf16_amp = bool(getattr(training_args, "bf16", False))
    out = []
    if "float16" in summary:
        count, names = summary["float16"]
        amp = " and fp16=True: the grad scaler raises 'Attempting to unscale FP16 gradients'" if fp16_amp else \
            ": plain fp16 updates underflow"
        out.append(_f("PD704", f"{count:,} trainable parameters are float16 ({_few(names)}){amp}",
                      Severity.ERROR if fp16_amp or not bf16_amp else Severity.WARNING,
                      hint="cast trainable parameters to float32 (peft's autocast_adapter_dtype does this for "
                      "adapter layers, not for modules_to_save)"))
    if "bfloat16" in summary:
        count, names = summary["bfloat16"]
        out.append(_f("PD704", f"{count:,} trainable parameters are bfloat16 ({_few(names)}): small updates are "
                      "rounded away", Severity.WARNING, hint="keep trainable parameters in float32"))
    unsaved = [n for n in summary_names(summary) if not any(mark in n for mark in ADAPTER_MARKERS)]
    if unsaved and _is_peft(model):
        out.append(_f("PD701", f"{len(unsaved)} trainable tensor(s) are not adapter weights and will not be in "
                      f"the saved adapter: {_few(unsaved)}", Severity.WARNING,
                      hint="list their modules in modules_to_save instead of setting requires_grad by hand"))
    out.append(_f("PD704", f"trainable parameters: {describe_trainable(summary)}", Severity.INFO))
    return out


def summary_names(summary) -> list[str]:
    return [n for _, names in summary.values() for n in names]


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _heads(model) -> list[Finding]:
    """A task head that is frozen and not in modules_to_save stays random and is not saved."""
    if not _is_peft(model):
        return []
    from peft.utils import ModulesToSaveWrapper

    out = []
    base = model.get_base_model()
    for name, module in base.named_children():
        if name not in HEAD_NAMES or isinstance(module, ModulesToSaveWrapper):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(_f("PD701", f"task head '{name}' is frozen and not in modules_to_save: it keeps its random "
                          "initialisation and is not saved with the adapter",
                          hint=f"set task_type (e.g. 'SEQ_CLS') or modules_to_save=['{name}'] in the peft config"))
    return out


def _embeddings(model, tokenizer) -> list[Finding]:
    if tokenizer is None or not hasattr(model, "get_input_embeddings"):
        return []
    embedding = model.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is None:
        return []
    rows, size = weight.shape[0], len(tokenizer)
    if size > rows:
        return [_f("PD705", f"len(tokenizer) is {size} but the input embeddings have {rows} rows: token ids "
                   f"{rows}..{size - 1} are out of range", hint=f"model.resize_token_embeddings({size}) before "
                   "get_peft_model, and save the embeddings (modules_to_save or trainable_token_indices)")]
    added = size - int(getattr(tokenizer, "vocab_size", size) or size)
    trainable = any(p.requires_grad for n, p in model.named_parameters()
                    if "embed" in n or "wte" in n or "word_embeddings" in n)
    if added > 0 and not trainable:
        return [_f("PD705", f"the tokenizer has {added} added token(s) whose embedding rows are frozen: they stay "
                   "at their resize initialisation and are not saved with the adapter", Severity.WARNING,
                   hint="add the embedding layer to modules_to_save, or use trainable_token_indices")]
    return []


def _checkpointing(model) -> list[Finding]:
    """Reentrant checkpointing needs an input that requires grad, else frozen-base adapters get none."""
    modules = list(model.modules())
    if not any(getattr(m, "gradient_checkpointing", False) is True for m in modules):
        return []
    reentrant = False
    for m in modules:
        func = getattr(m, "_gradient_checkpointing_func", None)
        keywords = getattr(func, "keywords", None)
        if isinstance(keywords, dict) and keywords.get("use_reentrant", False):
            reentrant = True
            break
    if not reentrant:
        return []
    hooked = any(getattr(m, "_require_grads_hooks", None) for m in modules)
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if hooked or (embedding is not None and getattr(embedding, "_forward_hooks", None)):
        return []
    if embedding is not None and getattr(getattr(embedding, "weight", None), "requires_grad", False):
        return []
    return [_f("PD707", "reentrant gradient checkpointing is on but the inputs do not require grad: the adapter "
               "layers inside checkpointed blocks get no gradient",
               hint="call model.enable_input_require_grads(), or use gradient_checkpointing_kwargs="
               "{'use_reentrant': False}")]


def _active(model) -> list[Finding]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        if _is_peft(model) and model.peft_config and all(c.is_prompt_learning for c in model.peft_config.values()):
            return []
        return [_f("PD708", "the model has no adapter layers", Severity.WARNING,
                   hint="wrap it with get_peft_model(model, config)")]
    out = []
    disabled = [n for n, m in layers if getattr(m, "disable_adapters", False)]
    if disabled:
        out.append(_f("PD708", f"adapters are disabled in {len(disabled)} layer(s) ({_few(disabled)}): training "
                      "would run the base alone", hint="leave the `with model.disable_adapter():` block, or "
                      "call enable_adapters()"))
    merged = [n for n, m in layers if getattr(m, "merged", False)]
    if merged:
        out.append(_f("PD708", f"the adapter is merged into {len(merged)} layer(s) ({_few(merged)}): gradients "
                      "reach the adapter weights but the forward uses the merged copy",
                      hint="call model.unmerge_adapter() before training"))
    return out


def diagnose(model, *, tokenizer=None, training_args=None) -> list[Finding]:
    """Findings about a live (Peft)model: nesting, trainables vs AMP, heads, embeddings, checkpointing."""
    from peftdoctor.runtime.loading import require_runtime

    require_runtime(offline=False)
    findings = []
    findings += _nesting(model)
    findings += _active(model)
    findings += _trainable(model, training_args)
    findings += _heads(model)
    findings += _embeddings(model, tokenizer)
    findings += _checkpointing(model)
    return findings


def report(findings) -> str:
    lines = []
    for f in findings:
        lines.append(f"  {f.code} [{f.severity.value}] {f.message}")
        if f.hint:
            lines.append(f"      hint: {f.hint}")
    return "\n".join(lines)


def assert_healthy(model, *, tokenizer=None, training_args=None) -> list[Finding]:
    """diagnose(), then raise UnhealthyModel with a readable report if any finding is an error."""
    findings = diagnose(model, tokenizer=tokenizer, training_args=training_args)
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        raise UnhealthyModel(f"peftdoctor found {len(errors)} error(s) in the model:\n{report(errors)}", findings)
    return findings
