"""Registry entries of the PD6xx checkpoint checks."""

from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register

E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO
# Default severity of each code, for the findings the checks build.
SEVERITY: dict[str, Severity] = {}

for _code, _name, _severity, _summary in (
    ("PD600", "adapter-config-unreadable", E,
     "Adapter folder unreadable, adapter_config.json missing, not JSON, or lacking required fields."),
    ("PD601", "adapter-config-invalid", E,
     "adapter_config.json has an unknown peft_type, unknown fields, a newer peft_version, r <= 0 or no targets."),
    ("PD602", "adapter-weights-damaged", E,
     "Adapter weights missing, truncated, or with a header that is absurd, overlapping or of unknown dtype."),
    ("PD603", "adapter-keys-nested", E,
     "Weight names are double-wrapped (base_model.model.base_model.model) or carry the adapter name."),
    ("PD604", "adapter-shape-mismatch", E,
     "LoRA shapes disagree with r / rank_pattern or with each other (lora_A rows, lora_B columns)."),
    ("PD605", "adapter-untrained", E,
     "Every lora_B is all zero, as peft initialises it: the adapter changes nothing."),
    ("PD606", "adapter-non-finite", E, "A saved tensor contains NaN or Inf."),
    ("PD607", "adapter-placeholder-tensors", E,
     "Empty or 1-D placeholder tensors where matrices belong (a ZeRO-3 save without gathering)."),
    ("PD608", "adapter-dtype", W,
     "Trainable weights stored in fp16/bf16 (info), or mixed dtypes across tensors (warning)."),
    ("PD609", "adapter-head-missing", E,
     "A classification/QA task or modules_to_save is declared but the head's weights are not saved."),
    ("PD610", "adapter-new-tokens-lost", E,
     "The saved tokenizer has more tokens than the base vocabulary but the adapter has no rows for them."),
    ("PD611", "adapter-pickle-unsafe", E,
     "adapter_model.bin would import globals beyond torch tensor rebuilding when unpickled."),
    ("PD612", "adapter-base-not-local", I,
     "The base model named in adapter_config.json is not available locally; deep checks need --base."),
    ("PD613", "adapter-targets-unmatched", W,
     "target_modules / modules_to_save / exclude_modules entries or layers_to_transform indices match no module "
     "of the local base (from its safetensors header)."),
    ("PD614", "adapter-head-untrained", E,
     "task_type is null on a *ForSequenceClassification / TokenClassification / QuestionAnswering base: "
     "the head was never trained nor saved."),
    ("PD615", "adapter-foreign-key-scheme", E,
     "The weights use kohya or diffusers LoRA key names where peft's base_model.model.*.lora_A/B are expected."),
    ("PD616", "adapter-base-shape-mismatch", E,
     "LoRA A/B shapes do not fit the local base's weights (read from its safetensors headers)."),
    ("PD617", "adapter-tied-embeddings", W,
     "LoRA on lm_head or the input embedding of a base that ties them (tie_word_embeddings): merging changes "
     "both layers."),
    ("PD618", "adapter-init-not-converted", W,
     "A PiSSA / OLoRA / CorDA / LoRA-GA adapter saved without path_initial_model_for_weight_conversion: wrong as a "
     "plain LoRA on the original base (serving engines, merge tools)."),
    ("PD619", "adapter-scale-not-portable", I,
     "use_rslora / rank_pattern / alpha_pattern: the scales peft applies per module, which a loader reading only "
     "r and lora_alpha (vLLM ignores the patterns) does not."),
    ("PD620", "adapter-embedding-rows", E,
     "Embedding rows saved in the adapter are fewer than the ids of the tokenizer beside it (error), or differ "
     "from the base vocabulary by a count the tokenizer does not give (warning)."),
    ("PD621", "model-folder-peft-layers", E,
     "A model folder (config.json + weights, no adapter_config.json) holds lora_A / lora_B / base_layer tensors: "
     "saved without merging, transformers drops them."),
    ("PD622", "merged-model-not-servable", W,
     "A model folder stores weights wider than its base's dtype, has no tokenizer, or no chat template where the "
     "base has one."),
    ("PD623", "lora-file-peft-key-scheme", E,
     "A diffusers / kohya-style LoRA file (pytorch_lora_weights.safetensors, a lone .safetensors) holds peft's "
     "base_model.model.* or adapter-named keys: diffusers' loaders load none of it."),
):
    register(Rule(code=_code, name=_name, summary=_summary, severity=_severity, kind="inspect"))
    SEVERITY[_code] = _severity
