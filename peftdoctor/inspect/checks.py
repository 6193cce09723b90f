"""The PD603-PD610 checks on one adapter's tensor index (names, dtypes, shapes).

Each check is a function `(adapter) -> list[Finding]`; only PD605 and PD606
look at values, through the adapter's value reader, one tensor at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect.findings import finding
from peftdoctor.inspect.pattern_keys import UNKNOWN, PatternKeys
from peftdoctor.inspect.safetensors_header import FLOAT_DTYPES, TensorInfo

PREFIX = "base_model.model."
DOUBLE_WRAP = "base_model.model.base_model.model."
LORA_ROLES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
ADAPTER_PARTS = (*LORA_ROLES, "lora_magnitude_vector", "modules_to_save", "original_module")
_NAMED_ADAPTER = re.compile(r"\.(" + "|".join(ADAPTER_PARTS) + r")\.([^.]+)(?:\.|$)")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<role>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")
HEAD_TASKS = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"),
              "QUESTION_ANS": ("qa_outputs",)}
EMBEDDING_NAMES = ("embed_tokens", "wte", "word_embeddings", "embed_in", "shared", "tok_embeddings",
                   "lm_head", "embed_out")
HALF = {"F16": "fp16", "BF16": "bf16"}


@dataclass
class Adapter:
    """Everything the checks need about one saved adapter."""

    folder: Path
    config: dict
    weights: Path
    tensors: list[TensorInfo]
    values: object = None  # a values.ValueReader, or None when values cannot be read
    base_dir: Path | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type", "")).upper()

    def lora_tensors(self, *roles: str) -> list[tuple[str, str, TensorInfo]]:
        """(module, role, tensor) for LoRA A/B weights, module names without the peft prefix."""
        out = []
        for tensor in self.tensors:
            match = _LORA_KEY.match(tensor.name)
            if match and (not roles or match["role"] in roles):
                out.append((_strip(match["module"]), match["role"], tensor))
        return out


def _strip(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def _example(names: list[str], limit: int = 2) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_nested_keys(adapter: Adapter) -> list[Finding]:
    """PD603: names peft's loader will not match, so those weights are silently skipped."""
    found = []
    total = len(adapter.tensors)
    wrapped = [t.name for t in adapter.tensors if t.name.startswith(DOUBLE_WRAP)]
    if wrapped:
        found.append(finding(
            "PD603", f"{len(wrapped)} of {total} weight names start with '{DOUBLE_WRAP}' (model wrapped by peft "
            f"twice), e.g. {_example(wrapped, 1)}: PeftModel.from_pretrained will load none of them",
            str(adapter.weights),
            hint="Call get_peft_model once (not on a PeftModel); re-save after stripping one "
                 "'base_model.model.' prefix."))
    named = [t.name for t in adapter.tensors if carries_adapter_name(t.name)]
    if named:
        found.append(finding(
            "PD603", f"{len(named)} of {total} weight names carry an adapter name, e.g. {_example(named, 1)}: "
            "saved from model.state_dict() instead of save_pretrained, peft will not load them",
            str(adapter.weights),
            hint="Save with model.save_pretrained(...) (or get_peft_model_state_dict), which strips adapter names."))
    return found


def carries_adapter_name(name: str) -> bool:
    match = _NAMED_ADAPTER.search(name)
    if not match:
        return False
    if match[1] == "original_module":
        return True
    return match[2] not in ("weight", "bias")


def check_shapes(adapter: Adapter) -> list[Finding]:
    """PD604: lora_A rows and lora_B columns must equal the module's rank."""
    if adapter.peft_type != "LORA":
        return []
    rank = adapter.config.get("r")
    rank_pattern = adapter.config.get("rank_pattern") or {}
    alpha_pattern = adapter.config.get("alpha_pattern") or {}
    if type(rank) is not int or rank <= 0 or not isinstance(rank_pattern, dict):
        return []
    modules: dict[str, dict[str, TensorInfo]] = {}
    for module, role, tensor in adapter.lora_tensors():
        modules.setdefault(module, {})[role.replace("embedding_", "")] = tensor
    found = []
    path = str(adapter.weights)
    rank_keys = PatternKeys(rank_pattern, modules)
    for module, parts in sorted(modules.items()):
        key = rank_keys.key_for(module)
        expected = rank_pattern[key] if isinstance(key, str) else rank
        where = f"rank_pattern['{key}']" if key is not None else "r"
        a, b = parts.get("lora_A"), parts.get("lora_B")
        if a is None or b is None:
            have, lacks = ("lora_A", "lora_B") if a is not None else ("lora_B", "lora_A")
            found.append(finding("PD604", f"module '{module}' has {have} but no {lacks}", path))
            continue
        if len(a.shape) < 2 or len(b.shape) < 2:
            continue  # placeholders: PD607
        rows, cols = a.shape[0], b.shape[1]
        if rows != cols:
            found.append(finding("PD604", f"module '{module}': lora_A has {rows} rows but lora_B has {cols} "
                                          f"columns; they must both equal the rank", path))
        elif rows != expected and key is not UNKNOWN:
            found.append(finding("PD604", f"module '{module}' has rank {rows} but {where} = {expected} in "
                                          f"adapter_config.json", path,
                                 hint="Fix r / rank_pattern in adapter_config.json to match the saved weights."))
    for label, patterns in (("rank_pattern", rank_pattern), ("alpha_pattern", alpha_pattern)):
        if not isinstance(patterns, dict) or not modules:
            continue
        for key in PatternKeys(patterns, modules).unmatched():
            found.append(finding("PD604", f"{label} key '{key}' matches no adapted module", path,
                                 severity=Severity.WARNING,
                                 hint="Pattern keys are matched against the end of module names, "
                                      "e.g. 'layers.0.self_attn.q_proj'."))
    return found


def check_untrained(adapter: Adapter) -> list[Finding]:
    """PD605: every LoRA module with an all-zero factor means peft's initialisation was saved unchanged.

    peft zeroes lora_B (and lora_embedding_A for embeddings), so the product
    B @ A is zero until training moves it.
    """
    if adapter.values is None or adapter.peft_type != "LORA":
        return []
    modules: dict[str, list[TensorInfo]] = {}
    for module, role, tensor in adapter.lora_tensors():
        if tensor.numel and not tensor.name.endswith(".bias"):
            modules.setdefault(module, []).append(tensor)
    if not modules:
        return []
    for parts in modules.values():
        # B first: it is the factor peft zeroes for linear layers, so one read usually settles it.
        parts.sort(key=lambda t: "lora_B" not in t.name)
        if not any(adapter.values.all_zero(t) for t in parts):
            return []
    extra = ""
    if any("lora_" not in t.name for t in adapter.tensors):
        extra = " (only the saved modules_to_save copies can differ from the base)"
    return [finding("PD605", f"all {len(modules)} LoRA modules have an all-zero factor (lora_B), as peft "
                             f"initialises them: the LoRA layers are a no-op{extra}", str(adapter.weights),
                    hint="The adapter was saved before training changed it: check that the optimizer got the "
                         "PeftModel's parameters and that training ran steps.")]


def check_non_finite(adapter: Adapter) -> list[Finding]:
    """PD606: NaN or Inf anywhere poisons every output that passes through it."""
    if adapter.values is None:
        return []
    bad = []
    for tensor in adapter.tensors:
        if tensor.dtype in FLOAT_DTYPES:
            count = adapter.values.count_non_finite(tensor)
            if count:
                bad.append((tensor.name, count, tensor.numel))
    if not bad:
        return []
    name, count, numel = bad[0]
    more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
    return [finding("PD606", f"NaN/Inf in '{name}' ({count} of {numel} values){more}", str(adapter.weights),
                    hint="Training diverged (learning rate, fp16 overflow): use an earlier checkpoint.",
                    tensors=[b[0] for b in bad])]


def _must_be_matrix(name: str) -> bool:
    match = _LORA_KEY.match(name)
    return bool(match) and not name.endswith(".bias")


def check_placeholders(adapter: Adapter) -> list[Finding]:
    """PD607: ZeRO-3 partitions parameters; saving without gathering writes empty tensors."""
    bad = [t.name for t in adapter.tensors
           if t.numel == 0 or (_must_be_matrix(t.name) and len(t.shape) < 2)]
    if not bad:
        return []
    return [finding("PD607", f"{len(bad)} of {len(adapter.tensors)} tensors are empty or 1-D placeholders, "
                             f"e.g. {_example(bad)}: saved under DeepSpeed ZeRO-3 without gathering",
                    str(adapter.weights),
                    hint="Save with trainer.save_model() or accelerator.get_state_dict(model), or set "
                         "stage3_gather_16bit_weights_on_model_save: true.")]


def check_dtypes(adapter: Adapter) -> list[Finding]:
    """PD608: half-precision trainable weights (info), mixed dtypes among the adapter layers (warning)."""
    layer = [t for t in adapter.tensors if t.dtype in FLOAT_DTYPES and "lora_" in t.name]
    counts = Counter(t.dtype for t in layer)
    path = str(adapter.weights)
    if len(counts) > 1:
        listed = ", ".join(f"{n} {d}" for d, n in counts.most_common())
        return [finding("PD608", f"adapter layers saved in mixed dtypes ({listed})", path,
                        severity=Severity.WARNING,
                        hint="Part of the adapter was cast after creation; keep adapter weights in one dtype "
                             "(peft autocasts them to float32).")]
    if counts and next(iter(counts)) in HALF:
        dtype = HALF[next(iter(counts))]
        return [finding("PD608", f"trainable weights stored in {dtype}", path, severity=Severity.INFO,
                        hint="Half-precision trainable weights lose small updates; train them in float32 "
                             "(autocast_adapter_dtype=True, the default) unless this was intended.")]
    return []


def _module_names(adapter: Adapter) -> set[str]:
    names = set()
    for tensor in adapter.tensors:
        module = _strip(tensor.name).rsplit(".", 1)[0]
        names.add(module)
    return names


def _has_module(modules: set[str], wanted: str) -> bool:
    return any(m == wanted or m.endswith("." + wanted) for m in modules)


def check_heads(adapter: Adapter, skip=()) -> list[Finding]:
    """PD609: a declared head / modules_to_save that is absent from the file stays random on load.

    `skip`: modules_to_save entries that match no module of the base (PD613 names them).
    """
    task = str(adapter.config.get("task_type") or "").upper()
    declared = adapter.config.get("modules_to_save") or []
    if isinstance(declared, str):
        declared = [declared]
    if not isinstance(declared, (list, tuple)):
        declared = []  # a malformed value; PD601 is about the config itself
    declared = [d for d in declared if isinstance(d, str)]
    modules = _module_names(adapter)
    auto = HEAD_TASKS.get(task, ())
    missing = [name for name in declared
               if name not in auto and name not in skip and not _has_module(modules, name)]
    path = str(adapter.weights)
    found = []
    if auto and not any(_has_module(modules, name) for name in {*auto, *declared}):
        found.append(finding(
            "PD609", f"task_type {task} but no head weights ({' / '.join(auto)}) in the file: the head is "
            "randomly initialised on every load", path,
            hint="Load the base with its task head (e.g. AutoModelForSequenceClassification) before "
                 "get_peft_model, or list the head in modules_to_save."))
    if missing:
        found.append(finding("PD609", f"modules_to_save {missing} declared but not saved in the file", path,
                             hint="Check the module names against model.named_modules(); the saved copies "
                                  "are what makes these modules trained."))
    return found


def check_new_tokens(adapter: Adapter, token_info: tuple[int, str] | None, vocab_size: int | None) -> list[Finding]:
    """PD610: a resized vocabulary whose new rows were not saved loses the new tokens."""
    if not token_info or not vocab_size or token_info[0] <= vocab_size:
        return []
    needed, source = token_info
    for tensor in adapter.tensors:
        module = _strip(tensor.name).rsplit(".", 1)[0]
        if any(_has_module({module}, n) or _has_module({module}, n + ".base_layer") for n in EMBEDDING_NAMES):
            if tensor.shape and tensor.shape[0] > vocab_size:
                return []  # rows for new tokens were saved; PD620 checks whether they are enough
    indices = adapter.config.get("trainable_token_indices")
    if isinstance(indices, dict):
        indices = [i for values in indices.values() if isinstance(values, list) for i in values]
    if isinstance(indices, list) and set(range(vocab_size, needed)) <= set(indices):
        return []
    return [finding(
        "PD610", f"{Path(source).name} has {needed} tokens but the base vocabulary has {vocab_size}, and the "
        f"adapter saves no embedding rows for the {needed - vocab_size} new ones", str(adapter.folder),
        hint="Save the resized embeddings: save_pretrained(..., save_embedding_layers=True), or "
             "modules_to_save=['embed_tokens', 'lm_head'] / trainable_token_indices.")]


KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_transformer_")
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.", "transformer.", "prior.")


def key_scheme(name: str) -> str:
    """'kohya', 'diffusers' or '' for one tensor name."""
    if name.startswith(KOHYA_PREFIXES) or ".lora_down." in name or ".lora_up." in name or (
            name.endswith(".alpha") and name.startswith("lora_")):
        return "kohya"
    if name.startswith(DIFFUSERS_PREFIXES) and "lora" in name:
        return "diffusers"
    return ""


SCHEMES = {
    "kohya": "kohya / sd-scripts (lora_unet_* / lora_te_*, .lora_down / .lora_up, .alpha)",
    "diffusers": "diffusers (unet.* / text_encoder.* / transformer.* prefixes)",
}


def check_foreign_keys(adapter: Adapter) -> list[Finding]:
    """PD615: a file in another tool's LoRA key scheme: PeftModel.from_pretrained loads none of it."""
    if adapter.peft_type not in ("LORA", "ADALORA") or not adapter.tensors:
        return []
    if any(t.name.startswith(PREFIX) for t in adapter.tensors):
        return []
    schemes = Counter(key_scheme(t.name) for t in adapter.tensors)
    foreign = {k: v for k, v in schemes.items() if k}
    if not foreign or sum(foreign.values()) * 2 < len(adapter.tensors):
        return []
    scheme, count = max(foreign.items(), key=lambda item: item[1])
    example = next(t.name for t in adapter.tensors if key_scheme(t.name) == scheme)
    return [finding(
        "PD615", f"{count} of {len(adapter.tensors)} weight names follow the {SCHEMES[scheme]} key scheme, "
        f"e.g. '{example}'; peft expects 'base_model.model.<module>.lora_A.weight' / 'lora_B.weight': "
        "PeftModel.from_pretrained will load 0 of the keys", str(adapter.weights),
        hint="Load it with the tool that wrote it (diffusers: pipe.load_lora_weights), or convert the keys to "
             "peft's scheme before using it as a peft adapter.", scheme=scheme)]
