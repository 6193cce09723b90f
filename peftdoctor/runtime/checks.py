"""The PD701-PD706 checks on a loaded adapter. Called only after torch is imported."""

from __future__ import annotations

from collections import defaultdict

from peftdoctor.finding import Finding, Severity
from peftdoctor.runtime.device import tolerance_for

NESTED_PREFIX = "base_model.model.base_model.model."
SAMPLE = 4096  # elements per base weight kept to verify unmerge restores it


def _few(names, limit: int = 3) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def _finding(code, message, where, severity=Severity.ERROR, hint="", **extra) -> Finding:
    return Finding(code=code, message=message, path=where, line=0, hint=hint, severity=severity, extra=extra)


# PD701 ---------------------------------------------------------------------

def key_findings(loaded, shapes: dict, where: str) -> list[Finding]:
    """Adapter keys the model did not take, keys it expected but did not get, random base weights."""
    out = []
    if loaded.missing_keys:
        out.append(_finding(
            "PD701", f"{len(loaded.missing_keys)} adapter weight(s) of the model were not in the checkpoint "
            f"and keep their initial values: {_few(loaded.missing_keys)}", where,
            hint="the adapter was saved from a different model structure (double wrapping, other base class "
            "or architecture); load it onto the model it was trained on",
            missing=loaded.missing_keys))
    if loaded.unexpected_keys:
        out.append(_finding(
            "PD701", f"{len(loaded.unexpected_keys)} saved adapter weight(s) fit nothing in the base and were "
            f"ignored: {_few(loaded.unexpected_keys)}", where,
            hint="the saved key names do not match the base model's module names",
            unexpected=loaded.unexpected_keys))
    for message in loaded.messages:
        if "missing adapter keys" in message or "Found missing" in message:
            continue  # already reported from load_result
        if "no module was matched" in message or "did not match any targeted module" in message:
            out.append(_finding("PD701", " ".join(message.split())[:300], where, Severity.WARNING))
    return out


def head_findings(base_missing: list[str], shapes: dict, where: str) -> list[Finding]:
    """Base weights that transformers initialised randomly and the adapter does not provide."""
    saved = set(shapes)
    random_rows = [k for k in base_missing
                   if not any(s.endswith("." + k) or s.endswith("." + k.replace(".weight", ".modules_to_save.weight"))
                              for s in saved)]
    if not random_rows:
        return []
    return [_finding(
        "PD701", f"{len(random_rows)} weight(s) are in neither the base nor the adapter and get new random "
        f"values on every load: {_few(random_rows)}", where,
        hint="a task head trained (or created) during fine-tuning must be saved with the adapter: set "
        "task_type (e.g. SEQ_CLS) or modules_to_save=[...] in LoraConfig", random=random_rows)]


def target_findings(model, adapter_config: dict, where: str) -> list[Finding]:
    """Entries of a target_modules list that matched no module of the base."""
    targets = adapter_config.get("target_modules")
    if not isinstance(targets, (list, tuple)):
        return []
    names = list(getattr(model.base_model, "targeted_module_names", []) or [])
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not unmatched:
        return []
    return [_finding("PD701", f"target module(s) {_few(unmatched)} match nothing in the base model", where,
                     Severity.WARNING, hint="check the module names with print(model) on the base",
                     unmatched=unmatched)]


# PD706 ---------------------------------------------------------------------

def nesting_findings(model, shapes: dict, where: str) -> list[Finding]:
    """A PeftModel inside the loaded PeftModel, tuner layers in tuner layers, or keys saved that way."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    nested_keys = [k for k in shapes if k.startswith(NESTED_PREFIX)]
    if nested_keys:
        out.append(_finding(
            "PD706", f"the adapter was saved from a PeftModel wrapped in another PeftModel: "
            f"{len(nested_keys)} key(s) start with '{NESTED_PREFIX}', e.g. {nested_keys[0]}", where,
            hint="call get_peft_model or PeftModel.from_pretrained once, on the plain base model"))
    if model is None:
        return out
    for name, module in model.named_modules():
        if name and isinstance(module, PeftModel):
            out.append(_finding("PD706", f"PeftModel nested inside the PeftModel at '{name}'", where))
            break
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            inner = [n for n, m in module.named_modules() if n and isinstance(m, BaseTunerLayer)]
            if inner:
                out.append(_finding("PD706", f"adapter layer inside adapter layer at '{name}.{inner[0]}'", where))
                break
    return out


# PD704 ---------------------------------------------------------------------

def trainable_summary(model) -> dict:
    """dtype name -> (parameter count, tensor names) of the trainable parameters."""
    summary: dict = defaultdict(lambda: [0, []])
    for name, param in model.named_parameters():
        if param.requires_grad:
            entry = summary[str(param.dtype).replace("torch.", "")]
            entry[0] += param.numel()
            entry[1].append(name)
    return dict(summary)


def describe_trainable(summary: dict) -> str:
    return ", ".join(f"{count:,} {dtype} ({len(names)} tensors)" for dtype, (count, names) in sorted(summary.items()))


def trainable_findings(model, where: str, *, amp: str = "") -> list[Finding]:
    summary = trainable_summary(model)
    counts = {dtype: entry[0] for dtype, entry in summary.items()}
    if not summary:
        return [_finding("PD704", "no trainable parameters: training would update nothing", where,
                         hint="load with is_trainable=True, or check that target_modules matched")]
    out = []
    if "float16" in summary:
        names = summary["float16"][1]
        out.append(_finding(
            "PD704", f"{counts['float16']:,} trainable parameters are float16 ({_few(names)}): "
            "mixed precision refuses to unscale fp16 gradients", where,
            hint="keep trainable weights in float32 (autocast_adapter_dtype=True, or .float() on them); "
            "load the base in bfloat16 or float32", dtypes=counts))
    if "bfloat16" in summary:
        names = summary["bfloat16"][1]
        out.append(_finding(
            "PD704", f"{counts['bfloat16']:,} trainable parameters are bfloat16 ({_few(names)}): "
            "updates smaller than bf16 resolution are lost", where, Severity.WARNING,
            hint="keep trainable weights in float32", dtypes=counts))
    if not out:
        out.append(_finding("PD704", f"trainable parameters: {describe_trainable(summary)}", where,
                            Severity.INFO, dtypes=counts))
    return out


# PD705 ---------------------------------------------------------------------

def token_embedding(model):
    """The token embedding (a module with a 2-D weight), or None: vision models embed patches instead."""
    try:
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except (NotImplementedError, AttributeError):
        return None
    weight = getattr(embedding, "weight", None)
    return embedding if weight is not None and weight.dim() == 2 else None


def embedding_names(model) -> tuple[str, str]:
    """Module names of the input and output embeddings of a transformers model."""
    names = {id(m): n for n, m in model.named_modules()}
    inp = token_embedding(model)
    try:
        outp = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    except (NotImplementedError, AttributeError):
        outp = None
    return names.get(id(inp), ""), names.get(id(outp), "")


def saved_embedding_rows(shapes: dict, module: str) -> int | None:
    """Rows of a saved copy (modules_to_save) or LoRA of the embedding module `module`."""
    if not module:
        return None
    rows = None
    for key, shape in shapes.items():
        if f".{module}." not in f".{key}":
            continue
        tail = key.split(f"{module}.", 1)[1]
        if tail in ("weight", "modules_to_save.weight") and len(shape) == 2:
            rows = shape[0]
        elif tail.startswith("lora_embedding_A") and len(shape) == 2:
            rows = shape[1]
        elif tail.startswith("lora_B") and len(shape) == 2 and "embed" not in module:
            rows = shape[0]  # LoRA on an untied lm_head: B is (vocab, r)
    return rows


def plan_embeddings(model, shapes: dict, adapter_config: dict, tokenizer_len: int | None, where: str):
    """Rows to resize the base to before loading (or None), and the PD705 findings."""
    inp_name, out_name = embedding_names(model)
    if not inp_name:
        return None, []
    base_rows = token_embedding(model).weight.shape[0]
    saved_in = saved_embedding_rows(shapes, inp_name)
    saved_out = saved_embedding_rows(shapes, out_name) if out_name and out_name != inp_name else None
    saved = max([r for r in (saved_in, saved_out) if r is not None], default=None)
    out, resize = [], None
    if saved is not None and saved != base_rows:
        resize = saved
        out.append(_finding(
            "PD705", f"the adapter's saved embeddings have {saved} rows but the base has {base_rows}: "
            f"loading fails with a size mismatch unless the base is resized first", where, Severity.WARNING,
            hint=f"call base.resize_token_embeddings({saved}) before PeftModel.from_pretrained", saved_rows=saved))
        tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
        if out_name and out_name != inp_name and not tied and saved_in and saved_in > base_rows and saved_out is None:
            out.append(_finding(
                "PD705", f"rows {base_rows}..{saved_in - 1} of '{out_name}' are not saved: after resizing they "
                "are random", where, hint=f"add '{out_name}' to modules_to_save"))
    rows = saved if saved is not None else base_rows
    if tokenizer_len is not None and tokenizer_len > rows:
        source = "the adapter's saved embeddings" if saved is not None else "the base (the adapter saved none)"
        out.append(_finding(
            "PD705", f"the tokenizer beside the adapter has {tokenizer_len} tokens but {source} has {rows} rows: "
            f"token ids {rows}..{tokenizer_len - 1} have no trained row (out of range, or random after a resize)",
            where, hint="save the resized embeddings with the adapter: modules_to_save=['embed_tokens', "
            "'lm_head'] or trainable_token_indices, or save_embedding_layers=True",
            tokenizer=tokenizer_len, rows=rows))
    indices = adapter_config.get("trainable_token_indices")
    flat = []
    if isinstance(indices, list):
        flat = indices
    elif isinstance(indices, dict):
        flat = [i for v in indices.values() for i in (v or [])]
    if flat and max(flat) >= rows:
        out.append(_finding("PD705", f"trainable_token_indices go up to {max(flat)} but the embeddings have "
                            f"{rows} rows", where))
    return resize, out


# PD702 / PD703 ---------------------------------------------------------------

def make_batch(model, rows: int, device):
    """Seeded token ids within the vocabulary: the same batch on every run."""
    import torch

    config = getattr(model, "config", None)
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 16
    seq = max(2, min(16, int(max_len)))
    batch = 2 if getattr(config, "pad_token_id", None) is not None or "CausalLM" in type(model).__name__ else 1
    generator = torch.Generator().manual_seed(0)
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":  # vision: seeded images
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        channels = getattr(config, "num_channels", 3)
        pixels = torch.randn((batch, channels, size, size), generator=generator)
        dtype = next(model.parameters()).dtype
        return {"pixel_values": pixels.to(device=device, dtype=dtype)}
    low = 3 if rows > 8 else 0  # skip the usual special ids
    ids = torch.randint(low, max(rows, low + 1), (batch, seq), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, : max(1, seq // 2)]
    return inputs


def run_forward(model, inputs):
    import torch

    with torch.no_grad():
        output = model(**inputs)
    for name in ("logits", "last_hidden_state", "start_logits"):
        value = getattr(output, name, None)
        if value is not None:
            return value.detach().float().cpu()
    if isinstance(output, (tuple, list)):
        return output[0].detach().float().cpu()
    return output.detach().float().cpu()


def _tuner_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def snapshot_base_weights(model) -> dict:
    """A strided sample of each adapted base weight, in float32, to check unmerge restores it."""
    snap = {}
    for name, layer in _tuner_layers(model):
        weight = getattr(layer.get_base_layer(), "weight", None)
        if weight is None or weight.device.type == "meta":
            continue
        flat = weight.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        snap[name] = flat[::step][:SAMPLE].float().cpu().clone()
    return snap


def compare_snapshot(model, snap: dict) -> tuple[float, float, str]:
    """Max abs and relative change of the sampled base weights, and the worst layer."""
    worst, worst_rel, worst_name = 0.0, 0.0, ""
    layers = dict(_tuner_layers(model))
    for name, before in snap.items():
        weight = layers[name].get_base_layer().weight.detach().reshape(-1)
        step = max(1, weight.numel() // SAMPLE)
        after = weight[::step][:SAMPLE].float().cpu()
        diff = (after - before).abs().max().item()
        scale = max(before.abs().max().item(), 1e-12)
        if diff / scale > worst_rel or worst_name == "":
            worst, worst_rel, worst_name = diff, diff / scale, name
        worst = max(worst, diff)
    return worst, worst_rel, worst_name


def all_lora_b_zero(model) -> bool:
    found = False
    for name, param in model.named_parameters():
        if ".lora_B." in name or ".lora_embedding_B." in name:
            found = True
            if param.detach().abs().max().item() != 0:
                return False
    return found


def _diff(a, b) -> tuple[float, float]:
    max_abs = (a - b).abs().max().item()
    scale = max(b.abs().max().item(), 1e-12)
    return max_abs, max_abs / scale


def forward_findings(model, *, dtype: str, quantized: bool, rows: int, device, merge_check: bool,
                     where: str, timings: dict | None = None, not_loaded: bool = False) -> list[Finding]:
    """PD703 (adapter vs disabled) and PD702 (merged vs unmerged, and unmerge restores the base)."""
    import time

    out = []
    model.eval()
    inputs = make_batch(model, rows, device)
    start = time.perf_counter()
    adapted = run_forward(model, inputs)
    with model.disable_adapter():
        disabled = run_forward(model, inputs)
    if timings is not None:
        timings["forward"] = time.perf_counter() - start
    import torch

    if not torch.isfinite(adapted).all():
        out.append(_finding("PD702", "the adapted model's output has inf/nan before any merge "
                            f"({dtype}); the adapter's weights overflow this dtype", where,
                            hint="run the base in float32 or bfloat16"))
        return out
    if adapted.shape != disabled.shape and adapted.dim() >= 2 and adapted.shape[0] == disabled.shape[0]:
        adapted = adapted[:, -disabled.shape[1]:]  # prompt tuning prepends its virtual tokens to the output
    noop_abs, noop_rel = _diff(adapted, disabled)
    if noop_rel <= 1e-6:
        if not_loaded:
            why = "the saved weights did not load into the model (see PD701)"
        elif all_lora_b_zero(model):
            why = "every lora_B weight is zero: the adapter was never trained"
        else:
            why = "the adapter sits in modules that do not change the output, or was never trained"
        out.append(_finding("PD703", f"outputs with the adapter equal outputs with it disabled "
                            f"(max abs diff {noop_abs:.3g}): {why}", where, noop_abs=noop_abs))
    if not merge_check:
        return out
    if not hasattr(model, "merge_adapter") or getattr(model, "peft_config", {}).get("default") is None or \
            model.peft_config["default"].is_prompt_learning:
        return out
    tol = tolerance_for(dtype)
    snap = {} if quantized else snapshot_base_weights(model)
    start = time.perf_counter()
    try:
        model.merge_adapter()
    except Exception as exc:  # e.g. tied weights, or a tuner without merge support
        out.append(_finding("PD702", f"merge_adapter() failed: {' '.join(str(exc).split())[:200]}", where,
                            Severity.WARNING))
        return out
    try:
        merged = run_forward(model, inputs)
    finally:
        model.unmerge_adapter()
    if timings is not None:
        timings["merge"] = time.perf_counter() - start
    if not torch.isfinite(merged).all():
        out.append(_finding("PD702", f"the merged model's output has inf/nan but the unmerged one is finite: "
                            f"merged weights overflow {dtype}", where,
                            hint="merge into a float32 copy of the base"))
        return out
    max_abs, rel = _diff(merged, adapted)
    w_abs, w_rel, w_name = compare_snapshot(model, snap) if snap else (0.0, 0.0, "")
    numbers = (f"merged vs unmerged max abs diff {max_abs:.3g}, max rel diff {rel:.3g} "
               f"({dtype} tolerance {tol:g}); base weights after unmerge: max abs change {w_abs:.3g}")
    extra = dict(max_abs=max_abs, max_rel=rel, tolerance=tol, dtype=dtype, unmerge_abs=w_abs, unmerge_rel=w_rel)
    if quantized:
        out.append(_finding("PD702", f"merging into a quantized (4/8-bit) base is lossy: {numbers}", where,
                            Severity.WARNING, hint="merge into a float16/bfloat16/float32 copy of the base",
                            **extra))
    elif rel > tol:
        out.append(_finding("PD702", f"merged and unmerged outputs disagree beyond tolerance: {numbers}", where,
                            hint="merge into a float32 copy of the base, or keep the adapter unmerged",
                            **extra))
    elif w_rel > tol:
        out.append(_finding("PD702", f"unmerge_adapter() does not restore the base weights (worst at "
                            f"'{w_name}', rel {w_rel:.3g}): {numbers}", where,
                            hint="do not merge/unmerge repeatedly in low precision; reload the base instead",
                            **extra))
    else:
        out.append(_finding("PD702", f"ok: {numbers}", where, Severity.INFO, **extra))
    return out
