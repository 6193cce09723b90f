"""What the PEFT / transformers / TRL / accelerate / torch APIs do to values.

The interpreter calls in here for every call it meets; this is the only place
that knows library names, so new APIs are added here and nowhere else.
"""

from __future__ import annotations

import dataclasses

import libcst as cst

from peftdoctor.facts import command_line
from peftdoctor.facts.names import dotted
from peftdoctor.facts.values import (
    ACCELERATOR,
    ARG_PARSER,
    BASE_MODEL,
    CLASS,
    CONST,
    DIFFUSERS_MODEL,
    ENCODING,
    FUNCTION,
    GRAD_SCALER,
    HF_PIPELINE,
    MISSING,
    NAMESPACE,
    OPTIMIZER,
    PARAM,
    PARAMS,
    PEFT_CONFIG,
    PEFT_MODEL,
    QUANT_CONFIG,
    REF,
    SELF,
    SPECIAL_TOKEN,
    STATE_DICT,
    TOKENIZER,
    TRAINER,
    TRAINING_ARGS,
    TUNER,
    TUPLE,
    UNKNOWN_VALUE,
    VOCAB,
    Value,
    Values,
    const_value,
    union,
    unknown,
)

HEAD_TASKS = {
    "ForSequenceClassification": "SEQ_CLS",
    "ForTokenClassification": "TOKEN_CLS",
    "ForQuestionAnswering": "QUESTION_ANS",
    "ForImageClassification": None,
    "ForAudioClassification": None,
    "ForMultipleChoice": None,
}
HEAD_TASK_TYPES = {"SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"}
# The head modules the task_type's PeftModel adds to modules_to_save, so trains and saves (peft_model.py,
# PeftModelForSequenceClassification / ...ForTokenClassification / ...ForQuestionAnswering, peft 0.21.2).
HEAD_MODULES_OF_TASK_TYPE = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"),
                             "QUESTION_ANS": ("qa_outputs",)}
# Task types whose PeftModel reads the model's prepare_inputs_for_generation in __init__ (PeftModelForCausalLM,
# PeftModelForSeq2SeqLM): a model class without generate makes get_peft_model raise AttributeError. Every model
# had it until PreTrainedModel stopped inheriting GenerationMixin in transformers 4.52.
GENERATION_TASK_TYPES = {"CAUSAL_LM", "SEQ_2_SEQ_LM"}
PRETRAINED_MODEL_WITHOUT_GENERATE = (4, 52)
# A model class of the project whose __init__ makes a new nn.Linear named like one of these (or the
# class is) has a fresh task head: a reward model's `score`, a critic's `value_head`, a `classifier`.
HEAD_WORDS = ("score", "classifier", "value_head", "v_head", "reward", "critic", "cls_head")
# Class methods that build a model from weights: called on a class of the project, it is a model class.
MODEL_CONSTRUCTORS = ("from_pretrained", "from_config", "_from_config")
NOT_MODELS = ("Tokenizer", "Processor", "Config", "FeatureExtractor", "Pipeline", "Collator", "Arguments")
DTYPE_NAMES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "auto": "auto",
}
GRAD_SCALERS = {
    "torch.cuda.amp.GradScaler",
    "torch.amp.GradScaler",
    "torch.GradScaler",
    "torch.cuda.amp.grad_scaler.GradScaler",
    "torch.amp.grad_scaler.GradScaler",
}
PASS_THROUGH_BUILTINS = {"list", "tuple", "enumerate", "filter", "sorted", "iter", "set"}
# PeftModel methods that strip the LoRA layers out of the wrapped base in place and return that base:
# the PeftModel wrapper stays, holding no adapter weights any more.
UNLOADING = ("merge_and_unload", "unload")

# What Trainer methods leave the model in: train() ends in train mode, evaluate()/predict() in eval mode.
TRAINER_MODES = {"train": True, "evaluate": False, "predict": False}

# transformers quantization configs: class -> the method it loads weights with (bitsandbytes reads its flags).
QUANTIZATION_CONFIGS = {"BitsAndBytesConfig": "bitsandbytes", "GPTQConfig": "GPTQ", "AwqConfig": "AWQ"}
SELF_RETURNING = {"to", "cuda", "cpu", "eval", "train", "requires_grad_", "to_empty", "tie_weights", "npu", "xpu", "mps"}


# Model classes whose every released checkpoint ties lm_head to the input embedding (config default
# tie_word_embeddings=True): GPT-2 and its variants, the Gemma families.
TIED_EMBEDDING_CLASSES = {
    "GPT2LMHeadModel", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
}
# Names of the two tied layers in transformers' causal LMs (GPT-2 calls its embedding `wte`).
TIED_LAYER_NAMES = ("lm_head", "embed_tokens", "wte")


# A module of the project that mentions none of these cannot change what a rule sees; it is
# read for the names it exports only when it does (or when it is a package __init__, for re-exports).
RELEVANT_WORDS = ("peft", "transformers", "trl", "from_pretrained", "Trainer", "okenizer",
                  "resize_token_embeddings", "bitsandbytes", "unsloth", "diffusers", "accelerate")
# Inside such a module, a function or class is read only when its own text mentions one of these
# (what creates, wraps, trains, saves, merges a model, or adds tokens), or it derives from a library class.
RELEVANT_IN_DEFINITIONS = (
    "from_pretrained", "from_config", "peft", "Peft", "LoraConfig", "lora", "Lora", "add_special_tokens",
    "add_tokens", "resize_token_embeddings", "setup_chat_format", "Trainer", ".train(", "backward",
    "merge_and_unload", "save_pretrained", "prepare_model_for_", ".half(", "float16", "dequantize",
    "HfArgumentParser", "TrainingArguments", "torch.save", "optim.", "Accelerator", "GradScaler",
    "field(", "quantization_config", "load_in_4bit", "load_in_8bit", "load_adapter", "set_adapter", "push_to_hub",
    "checkpointing_enable", "enable_input_require_grads",
    "pad_token", "DataCollator", ".generate(", ".eval()", ".evaluate(",
)


# --------------------------------------------------------------------- helpers
def dtype_of(values: Values | None) -> str | None:
    """'float16' / 'bfloat16' / 'float32' / 'auto' when every path agrees, else None."""
    names = possible_dtypes(values)
    return next(iter(names)) if len(names) == 1 and "unknown" not in names else None


def _flag(event, keyword: str):
    """A keyword argument's literal value; MISSING when absent, None when not literal."""
    if keyword not in event.kwargs:
        return None if event.star_kwargs else MISSING
    return const_value(event.kwargs[keyword], None)


NOT_LITERAL = "<not literal>"


def _kwargs_literal(event) -> dict:
    """Keyword -> literal value; enum members like TaskType.SEQ_CLS become their name."""
    fields = {}
    for key, values in event.kwargs.items():
        literal = const_value(values, MISSING)
        if literal is MISSING:
            refs = {v.get("qualname") for v in values if v.kind == REF}
            if len(refs) == 1 and len(values) == 1 and refs.pop().startswith("peft.TaskType."):
                literal = values[0].get("qualname").rsplit(".", 1)[-1]
            else:
                literal = NOT_LITERAL
        fields[key] = literal
    return fields


def _kwargs_alternatives(event) -> dict:
    """Keyword -> the literals it holds, one per path, where the paths disagree (`None` or a list)."""
    alternatives = {}
    for key, values in event.kwargs.items():
        if len(values) > 1 and all(v.kind == CONST for v in values):
            alternatives[key] = tuple(v.get("value") for v in values)
    return alternatives


def _task_of_class(class_name: str):
    for suffix, task in HEAD_TASKS.items():
        if class_name.endswith(suffix) or suffix in class_name:
            return True, task
    return False, None


def _model_values(values: Values | None) -> list[Value]:
    """Values that may be a model: a parameter too, so a helper that trains its argument is seen."""
    return [v for v in values or () if v.kind in (BASE_MODEL, PEFT_MODEL, DIFFUSERS_MODEL, PARAM)]


# ---------------------------------------------------------------- named calls
def call_named(interp, event, env) -> Values:
    name = event.name
    parts = name.split(".")
    top, last = parts[0], parts[-1]
    if top == "peft":
        return _peft_call(interp, event, env, parts)
    if name in TOKEN_ADDING_HELPERS:
        return _setup_chat_format(interp, event, env)
    if top == "diffusers":
        if last in FP32_TRAINABLE_CASTS:
            dtype = event.arg(1, "dtype")
            if dtype and possible_dtypes(dtype) != {"float32"}:
                return unknown()  # a cast to another dtype, or one not known here
            return _mark_models(interp, env, _models_listed(interp, event, env), kinds=(DIFFUSERS_MODEL,), casted=True)
        return _diffusers_call(event, parts)
    if top in ("transformers", "trl"):
        result = _transformers_call(interp, event, env, parts)
        if result is not None:
            return result
    if name in ARGPARSE_PARSERS:
        return command_line.new_parser(event)
    if name in HF_PIPELINE_FACTORIES:
        task = const_value(event.arg(0, "task"), None)
        models = tuple(v for v in event.arg(1, "model") or () if v.kind in (BASE_MODEL, PEFT_MODEL))
        return (Value(HF_PIPELINE, event.node, models=models, task=task if isinstance(task, str) else None),)
    if top == "accelerate" and last == "Accelerator":
        return (Value(ACCELERATOR, event.node, mixed_precision=_flag(event, "mixed_precision")),)
    if name in GRAD_SCALERS:
        interp.mark_grad_scaler()
        return (Value(GRAD_SCALER, event.node),)
    if _is_optimizer(name):
        return (Value(OPTIMIZER, event.node, models=_models_in_params(interp, event, env)),)
    if name == "getattr" and len(event.args) >= 2:
        return _getattr_of_library(event)
    if name == "len" and event.args:
        tokenizers = [v for v in event.args[0] if v.kind == TOKENIZER]
        if tokenizers:
            return tuple(Value(VOCAB, event.node, tokenizer=t) for t in tokenizers)
    if name in DATACLASS_FIELDS:
        default = event.arg(0, "default")  # pydantic's Field(True, ...) and attr.ib(True) take it first
        if default is not None:
            return default
        made = _lambda_default(interp, event, env)
        if made is not None:
            return made
        factory = event.arg(None, "default_factory")
        return interp.call_local(factory, event, env) if factory else unknown()
    if name in CONFIG_DUMP_FUNCTIONS and event.args:
        return config_dump(interp, event.args[0], event.node.args[0].value, env)
    if len(parts) == 1 and last in PASS_THROUGH_BUILTINS and event.args:
        passed = [v for values in event.args for v in values if v.kind == PARAMS]
        if passed:
            return tuple(passed)
    if last == "backward":
        interp.mark_backward()
    return unknown()


def _lambda_default(interp, event, env) -> Values | None:
    """`field(default_factory=lambda: ["q_proj", "v_proj"])`, the usual way to give a list field a default:
    what the lambda's body gives; None when the factory is not a lambda without parameters."""
    for arg in event.node.args:
        if arg.keyword is not None and arg.keyword.value == "default_factory" and isinstance(arg.value, cst.Lambda):
            params = arg.value.params
            if not (params.params or params.posonly_params or params.kwonly_params or
                    isinstance(params.star_arg, cst.Param) or params.star_kwarg):
                return interp.eval(arg.value.body, env)
    return None


def _is_optimizer(name: str) -> bool:
    parts = name.split(".")
    if name.startswith("torch.optim.") and parts[-1][:1].isupper() and "lr_scheduler" not in name:
        return True
    if parts[0] in ("bitsandbytes", "transformers") and parts[-1] in (
        "AdamW", "Adafactor", "AdamW8bit", "PagedAdamW", "PagedAdamW8bit", "Adam8bit", "PagedAdamW32bit", "Lion8bit"
    ):
        return True
    return False


def _models_in_params(interp, event, env) -> Values:
    """Models whose parameters feed an optimizer: `m.parameters()` anywhere in its arguments."""
    found = []
    for arg in event.node.args:
        for call in method_calls_in(arg.value, ("parameters", "named_parameters")):
            found.extend(_model_values(interp.eval(call.func.value, env)))
    for values in event.args:
        for value in values:
            if value.kind == PARAMS:
                found.extend(value.get("model", ()))
    return union(found)


def _peft_call(interp, event, env, parts) -> Values:
    last = parts[-1]
    if last == "get_peft_model":
        _stale_optimizers(interp, env, event.arg(0, "model"), event.node)
        wrapped = _wrap(event, event.arg(0, "model"), event.arg(1, "peft_config"), "get_peft_model")
        _wrapped_in_place(interp, env, event.arg(0, "model"), event.node, event.arg(1, "peft_config"))
        return (wrapped,)
    if len(parts) >= 3 and last == "from_pretrained":
        cls = parts[-2]
        if cls.startswith("AutoPeftModel"):
            return (Value(PEFT_MODEL, event.node, via="auto", base=(), config=(), quantization=load_quantization(event),
                          quantization_optional=quantization_optional(event),
                          quantization_flagless=flagless_quantization(event),
                          trainable=_trainable(event), dtype=dtype_of(event.arg(None, "torch_dtype") or event.arg(None, "dtype")),
                          autocast=_flag(event, "autocast_adapter_dtype")),)
        if cls.startswith("PeftModel") or cls == "PeftMixedModel":
            base = event.arg(0, "model") or ()
            if _trainable(event) is not False:
                _stale_optimizers(interp, env, base, event.node)
            _wrapped_in_place(interp, env, base, event.node)
            return (Value(PEFT_MODEL, event.node, via="from_pretrained", base=base, config=(),
                          trainable=_trainable(event), dtype=_common(base, "dtype"), casted=_base_casted(base),
                          autocast=_flag(event, "autocast_adapter_dtype"), input_grads=_input_grads_at_wrap(base)),)
        if cls.endswith("Config"):
            return (Value(PEFT_CONFIG, event.node, known=False),)
    if last.endswith("Config") and last[:1].isupper() and len(parts) == 2:
        if event.star_kwargs or event.args:
            return (Value(PEFT_CONFIG, event.node, known=False),)
        return (Value(PEFT_CONFIG, event.node, known=True, peft_class=last, fields=_kwargs_literal(event),
                      alternatives=_kwargs_alternatives(event)),)
    if last in KBIT_PREPARERS:
        return _prepare_for_kbit(interp, env, event)
    if last == "cast_mixed_precision_params":
        return _mark_models(interp, env, event.arg(0, "model"), casted=True)
    return unknown()


# Model methods that turn on gradient checkpointing, with the keyword of their kwargs dict.
CHECKPOINTING_METHODS = {"gradient_checkpointing_enable": "gradient_checkpointing_kwargs",
                         "activation_checkpointing_enable": "activation_checkpointing_kwargs"}
# Calls that make the embedding output require grad, so reentrant checkpointing passes gradients on.
# peft's preparation of a k-bit base for training; prepare_model_for_int8_training is its name before 0.4
# (the same steps for an 8-bit model) and its alias until 0.10 removed it
KBIT_PREPARERS = ("prepare_model_for_kbit_training", "prepare_model_for_int8_training")
INPUT_GRAD_METHODS = ("enable_input_require_grads", "prepare_model_for_gradient_checkpointing")
# Words of model classes whose main input is not `input_ids` (pixel_values, input_features, input_values):
# transformers >= 5.0 enables input grads itself only for `input_ids` models.
NON_TEXT_INPUT_MODELS = (
    "ForImageClassification", "ForAudioClassification", "ForAudioFrameClassification", "ForCTC", "ForXVector",
    "ForSpeechSeq2Seq", "ForObjectDetection", "ForSemanticSegmentation", "ForUniversalSegmentation",
    "ForDepthEstimation", "ForMaskedImageModeling", "ForImageSegmentation", "VisionEncoderDecoder", "ViT",
    "Deit", "DeiT", "Beit", "BEiT", "Swin", "ConvNext", "Dinov2", "ResNet", "Segformer", "Whisper", "Wav2Vec2",
    "Hubert", "WavLM", "CLIPVision", "SiglipVision",
)
REENTRANT_DEFAULT = "default"  # a checkpointing call or argument that leaves use_reentrant to the library


def trl_trainer_leaves_input_grads(class_name: str, trl) -> bool:
    """A TRL trainer given a model that is already a PeftModel, with gradient checkpointing, leaves its input
    grads off (read in the trl sources): SFTTrainer before 0.20 enables them only for a model it wraps itself
    with `peft_config` (0.7.11 to 0.19); from 0.20 on it enables them for a given PeftModel too. The other
    trainers (DPOTrainer, ...) enable them for any model they are given. `trl` is the project's version."""
    return class_name.endswith("SFTTrainer") and trl.below(0, 20)


def _checkpointing_flag(event):
    """TrainingArguments(gradient_checkpointing=...) or its transformers 5 name, activation_checkpointing."""
    for keyword in ("gradient_checkpointing", "activation_checkpointing"):
        if keyword in event.kwargs:
            return const_value(event.kwargs[keyword], None)
    return None if event.star_kwargs else False


def reentrant_of(kwargs: Values | None, star_kwargs: bool):
    """use_reentrant from a checkpointing kwargs dict: True / False, REENTRANT_DEFAULT when left to the library,
    None when not known here."""
    if kwargs is None:
        return None if star_kwargs else REENTRANT_DEFAULT
    literal = const_value(kwargs, MISSING)
    if literal is None:
        return REENTRANT_DEFAULT
    if isinstance(literal, dict):
        flag = literal.get("use_reentrant", REENTRANT_DEFAULT)
        return flag if flag in (True, False, REENTRANT_DEFAULT) else None
    return None


def _input_grads_at_wrap(base: Values) -> bool:
    """peft's PeftModel enables input grads for a base that is already checkpointed, unless it is quantized;
    prepare_model_for_kbit_training does it for a k-bit base."""
    return bool(base) and all(b.get("input_grads") or b.get("kbit_prepared")
                              or (b.get("checkpointing") is not None and not b.get("quantized")) for b in base)


def _enable_input_grads(interp, env, model: Value) -> None:
    """`enable_input_require_grads()` on a model: every PeftModel wrapping it sees it too."""
    interp.mutate(env, model, model.derive(input_grads=True))
    if model.kind == BASE_MODEL:
        for values in list(_all_names(env)):
            for value in values:
                if value.kind == PEFT_MODEL and not value.get("input_grads") and any(
                        b.node is model.node for b in value.get("base") or ()):
                    interp.mutate(env, value, value.derive(input_grads=True))


def _hook_requires_grad(event) -> bool:
    """`register_forward_hook(f)` where `f`, a function of the project or a lambda, calls `requires_grad_`: the
    manual form of `enable_input_require_grads()` (what that method registers itself), so the inputs require
    grad."""
    hooks = [v.node for v in event.arg(0, "hook") or () if v.kind == FUNCTION]
    hooks += [arg.value for arg in event.node.args[:1] if isinstance(arg.value, cst.Lambda)]
    return any(any(method_calls_in(hook, ("requires_grad_",))) for hook in hooks)


def _models_inside(interp, node, env) -> list[Value]:
    """The models a module expression belongs to, read from its longest dotted prefix that holds one:
    `model.get_input_embeddings()` and `model.model.encoder.conv1` belong to `model`."""
    while True:
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            node = node.func.value
        elif isinstance(node, cst.Attribute):
            node = node.value
        else:
            return []
        if dotted(node) is not None:
            models = [v for v in interp.eval(node, env) if v.kind in (BASE_MODEL, PEFT_MODEL)]
            if models:
                return models


def _stale_optimizers(interp, env, base: Values | None, wrap_node) -> None:
    """An optimizer built from the base's parameters before this wrap holds none of the adapter's
    new parameters: on this path it is marked `wrapped_after` the wrap."""
    wrapped = {id(b.node) for b in base or () if b.kind == BASE_MODEL}
    for key, values in list(env.names.items()):  # `self.optimizer` made by an earlier method of this instance
        for value in values:
            if value.kind == SELF and "." not in key:
                for attr, held in (value.get("state") or {}).items():
                    if any(v.kind == OPTIMIZER for v in held):
                        env.names.setdefault(f"{key}.{attr}", held)
    for values in list(_all_names(env)):
        for value in values:
            if value.kind == OPTIMIZER and value.get("wrapped_after") is None and any(
                    model.kind == BASE_MODEL and id(model.node) in wrapped for model in value.get("models") or ()):
                interp.mutate(env, value, value.derive(wrapped_after=wrap_node))


def _prepare_for_kbit(interp, env, event) -> Values:
    """Casts every fp16/bf16 parameter to float32 and sets requires_grad=False on all of them:
    before get_peft_model that is the QLoRA recipe, after it the adapter is frozen."""
    results = []
    for value in event.arg(0, "model") or ():
        if value.kind == BASE_MODEL:
            new = value.derive(kbit_prepared=True)
        elif value.kind == PEFT_MODEL:
            new = value.derive(trainable=False, frozen_by=event.node, frozen_how="kbit", casted=True, unfrozen=False)
        else:
            results.append(value)
            continue
        interp.mutate(env, value, new)
        results.append(new)
    return tuple(results) or unknown()


# peft's prompt-learning configs (PromptLearningConfig subclasses): their PeftModel keeps learned virtual tokens
# in a prompt encoder beside the base model and injects nothing into its layers.
PROMPT_LEARNING_CONFIGS = frozenset({"PromptTuningConfig", "MultitaskPromptTuningConfig", "PrefixTuningConfig",
                                     "PromptEncoderConfig", "CPTConfig", "CartridgeConfig"})


def _wrapped_in_place(interp, env, base: Values | None, wrap_node, config: Values | None = None) -> Values:
    """A wrap injects the LoRA layers into the base model object itself: every name still holding
    that object now holds a model that runs the adapter (the base values as they are now are returned).
    Not a prompt-learning config's wrap, which leaves the base object's layers as they were."""
    if config and all(c.kind == PEFT_CONFIG and c.get("peft_class") in PROMPT_LEARNING_CONFIGS for c in config):
        return tuple(base or ())
    now = []
    for value in base or ():
        if value.kind == BASE_MODEL:
            wrapped = value.derive(wrapped_by=wrap_node)
            interp.mutate(env, value, wrapped)
            _follow_into_pipelines(interp, env, value, wrapped)
            now.append(wrapped)
        else:
            now.append(value)
    return tuple(now)


def _follow_into_pipelines(interp, env, old: Value, new: Value) -> None:
    """A pipeline built on a model runs that model object as it is when called: a wrap (or unload) of the
    object after the pipeline was built changes what the pipeline runs too."""
    for values in list(_all_names(env)):
        for pipe in values:
            if pipe.kind == HF_PIPELINE and any(model is old for model in pipe.get("models")):
                models = tuple(new if model is old else model for model in pipe.get("models"))
                interp.mutate(env, pipe, pipe.derive(models=models))


def _unwrapped_in_place(interp, env, peft: Value) -> None:
    """`unload()` / `merge_and_unload()` take the LoRA layers out of the base object again."""
    for values in list(_all_names(env)):
        for value in values:
            if value.kind == BASE_MODEL and value.get("wrapped_by") is peft.node:
                plain = value.derive(wrapped_by=None)
                interp.mutate(env, value, plain)
                _follow_into_pipelines(interp, env, value, plain)


def _trainable(event):
    """True / False when is_trainable is literal (absent = False), None when it varies."""
    flag = _flag(event, "is_trainable")
    if flag is MISSING:
        return False
    return flag if isinstance(flag, bool) else None


def _common(values: Values | None, key: str):
    found = {v.get(key) for v in values or ()}
    return found.pop() if len(found) == 1 else None


def _wrap(event, base: Values | None, config: Values | None, via: str) -> Value:
    """The PeftModel a wrap call returns; frozen when its config says inference_mode=True."""
    base = base or ()
    config = config or ()
    inference = [c.get("fields", {}).get("inference_mode", MISSING) if c.kind == PEFT_CONFIG and c.get("known") else None
                 for c in config]
    trainable = None
    if inference and all(flag is True for flag in inference):
        trainable = False
    elif inference and all(flag in (False, MISSING) for flag in inference):
        trainable = True
    return Value(PEFT_MODEL, event.node, via=via, base=base, config=config, trainable=trainable,
                 training=True, mode_at=event.node,  # peft leaves the model in train mode, even on an eval() base
                 frozen_by=config[0].node if trainable is False else None, frozen_how="inference_mode",
                 dtype=_common(base, "dtype"), casted=_base_casted(base),
                 autocast=_flag(event, "autocast_adapter_dtype"), input_grads=_input_grads_at_wrap(base))


def _base_casted(base: Values) -> bool:
    """The base went through a float32 cast or prepare_model_for_kbit_training on every path."""
    return bool(base) and all(b.get("casted") or b.get("kbit_prepared") for b in base)


def _mark_models(interp, env, values: Values | None, kinds=(BASE_MODEL, PEFT_MODEL), **changes) -> Values:
    """The values of `kinds` changed in place (every name holding one sees the change); others as they are."""
    results = []
    for value in values or ():
        if value.kind in kinds:
            new = value.derive(**changes)
            interp.mutate(env, value, new)
            results.append(new)
        else:
            results.append(value)
    return tuple(results) or unknown()


def _transformers_call(interp, event, env, parts) -> Values | None:
    last = parts[-1]
    cls = parts[-2] if len(parts) >= 3 and last in ("from_pretrained", "from_config", "_from_config") else last
    if not cls[:1].isupper():
        return None
    if cls.endswith("Trainer") and cls == last:
        trainer = _trainer(interp, event, cls)
        if trainer.get("trained") is not trainer.get("model"):  # peft_config= wraps the base in place
            trainer = trainer.derive(model=_wrapped_in_place(interp, env, trainer.get("model"), event.node,
                                                             trainer.get("peft_config")))
        return (trainer,)
    if cls == "HfArgumentParser" and cls == last:
        return (Value(ARG_PARSER, event.node, items=list(event.arg(0, "dataclass_types") or ())),)
    if cls == last and (cls.endswith("TrainingArguments") or (parts[0] == "trl" and cls.endswith("Config"))):
        return (Value(TRAINING_ARGS, event.node, fp16=_flag(event, "fp16"), bf16=_flag(event, "bf16"),
                      checkpointing=_checkpointing_flag(event),
                      reentrant=reentrant_of(event.kwargs.get("gradient_checkpointing_kwargs")
                                           or event.kwargs.get("activation_checkpointing_kwargs"),
                                           event.star_kwargs)),)
    if "Tokenizer" in cls or "Processor" in cls:
        extra = event.kwargs.get("additional_special_tokens")
        added = extra is not None and const_value(extra, None) not in ([], (), None)
        return (Value(TOKENIZER, event.node, added=added, added_at=event.node if added else None,
                      source=event.arg(0, "pretrained_model_name_or_path"),
                      padding_side=const_value(event.kwargs.get("padding_side"), None)),)
    if cls == last and cls in QUANTIZATION_CONFIGS:
        return (Value(QUANT_CONFIG, event.node, quantization=_config_quantization(event, cls),
                      default=quantized_by_default(event),
                      flagless=QUANTIZATION_CONFIGS[cls] == "bitsandbytes" and flagless_config(event)),)
    if any(word in cls for word in NOT_MODELS) or not ("Model" in cls or "For" in cls):
        return None
    if cls != last and last not in ("from_pretrained", "from_config", "_from_config"):
        return None
    has_head, task = _task_of_class(cls)
    dtype = dtype_of(event.arg(None, "torch_dtype") or event.arg(None, "dtype"))
    quantized = any(
        const_value(event.kwargs[key], True) not in (False, None)
        for key in ("load_in_4bit", "load_in_8bit", "quantization_config")
        if key in event.kwargs
    )
    return (Value(BASE_MODEL, event.node, class_name=cls, dtype=dtype, quantized=quantized, head=has_head,
                  head_task=task, resized=False, new_tokens=False, tied=_tied_embeddings(event, cls),
                  quantization=load_quantization(event), quantization_optional=quantization_optional(event),
                  quantization_flagless=flagless_quantization(event),
                  source=event.arg(0, "pretrained_model_name_or_path")),)


def _tied_embeddings(event, cls: str):
    """True when the input embedding and the output layer share one matrix, False when they do not,
    None when the script does not say (the base's own config.json decides)."""
    flag = _flag(event, "tie_word_embeddings")
    if isinstance(flag, bool):
        return flag
    if flag is MISSING and cls in TIED_EMBEDDING_CLASSES:
        return True
    return None


# transformers picks bitsandbytes' 4-bit quantizer for a BitsAndBytesConfig whose load_in_8bit is not True, even
# with no load_in_* flag set (quantizers/auto.py, from 4.38.0; before, modeling_utils loaded such a config
# unquantized). Measured on 5.24: Linear4bit layers.
FLAGLESS_BNB_CONFIG_IS_4BIT_FROM = (4, 38)

# PeftModel.from_pretrained loads an adapter frozen (is_trainable=False, inference mode) from peft 0.3.0 on; 0.1
# and 0.2 had no is_trainable and left the LoRA weights trainable (peft_model.py and tuners/lora.py of v0.2.0).
FROM_PRETRAINED_FROZEN_FROM = (0, 3)


def _config_quantization(event, cls: str) -> str | None:
    """What a quantization config does to the weights: '4-bit bitsandbytes' when a load_in_* flag is True
    on some path (a config field's default counts), or when no flag is set at all (see
    FLAGLESS_BNB_CONFIG_IS_4BIT_FROM; `flagless_config` tells that case apart), None when that is not literal."""
    method = QUANTIZATION_CONFIGS[cls]
    if method != "bitsandbytes":
        bits = const_value(event.arg(0, "bits"), None)
        return f"{bits}-bit {method}" if isinstance(bits, int) else method
    for bits in (4, 8):
        if _true_flags(event, bits):
            return f"{bits}-bit bitsandbytes"
    return "4-bit bitsandbytes" if flagless_config(event) else None


def _true_flags(event, bits: int) -> list[Value]:
    """The literal True values a call's load_in_<bits>bit keyword holds (one per path)."""
    return [v for v in event.kwargs.get(f"load_in_{bits}bit", ()) if v.kind == CONST and v.get("value") is True]


def _quantizing_configs(event) -> list[Value]:
    """The quantization configs passed as quantization_config that are known to quantize."""
    return [v for v in event.kwargs.get("quantization_config", ()) if v.kind == QUANT_CONFIG and v.get("quantization")]


def flagless_config(event) -> bool:
    """A BitsAndBytesConfig(...) call whose load_in_4bit and load_in_8bit are both False or left out, as
    written (a False that is a settings field's default is not certain, and code that spreads such settings
    usually passes the config only when a flag is on)."""
    return all(_flag(event, f"load_in_{bits}bit") in (False, MISSING)
               and not any(v.get("default") for v in event.kwargs.get(f"load_in_{bits}bit", ())) for bits in (4, 8))


def flagless_quantization(event) -> bool:
    """A from_pretrained call whose only quantization is a flagless BitsAndBytesConfig (4-bit from 4.38 on)."""
    configs = _quantizing_configs(event)
    return bool(configs) and all(v.get("flagless") for v in configs) and not (_true_flags(event, 4)
                                                                             or _true_flags(event, 8))


def quantized_by_default(event) -> bool:
    """The load_in_* flag that quantizes is a config field's declared default (a config file may change it)."""
    true = [*_true_flags(event, 4), *_true_flags(event, 8)]
    configs = _quantizing_configs(event)
    return bool(true or configs) and all(v.get("default") for v in (*true, *configs))


def load_quantization(event) -> str | None:
    """How a from_pretrained call quantizes the weights on some path ('4-bit bitsandbytes'); None
    when no path certainly does (a config that is not known here counts as none)."""
    for bits in (4, 8):
        if _true_flags(event, bits):
            return f"{bits}-bit bitsandbytes"
    configs = _quantizing_configs(event)
    return configs[0].get("quantization") if configs else None


def quantization_optional(event) -> bool:
    """Some path reaches the call without quantizing: no flag or config at all, or a flag or config that is
    None or False on some path."""
    flags = [event.kwargs.get(key) for key in ("load_in_4bit", "load_in_8bit", "quantization_config")]
    if not any(flags):
        return True
    return any(v.kind == CONST and v.get("value") in (None, False) for values in flags if values for v in values)


def _trainer(interp, event, cls: str) -> Value:
    model = event.arg(0, "model") or ()
    args = event.arg(1, "args") or ()
    peft_config = event.kwargs.get("peft_config")
    if peft_config is not None and const_value(peft_config, MISSING) is None:
        peft_config = None
    trained = model
    if peft_config is not None and model and all(v.kind == BASE_MODEL for v in model):
        trained = (_wrap(event, model, peft_config, "trainer"),)
    return Value(TRAINER, event.node, class_name=cls, model=model, trained=trained, args=args,
                 peft_config=peft_config, library=event.name.split(".")[0])


def _getattr_of_library(event) -> Values:
    """`getattr(torch.optim, config.optimizer)`: a class of that library module, named or not."""
    modules = [v for v in event.args[0] if v.kind == REF and not v.get("builtin")]
    if len(modules) != 1:
        return unknown()
    attr = const_value(event.args[1], None)
    qualname = modules[0].get("qualname")
    if isinstance(attr, str):
        return (Value(REF, qualname=f"{qualname}.{attr}"),)
    if qualname == "torch.optim":
        return (Value(REF, qualname="torch.optim.Optimizer"),)  # some optimizer chosen at run time
    return unknown()


def _adds_special_tokens(event) -> bool:
    """`add_special_tokens({...})` with a key other than pad_token (which reuses or adds one row)."""
    tokens = const_value(event.arg(0, "special_tokens_dict"), None)
    if isinstance(tokens, dict):
        return bool(set(tokens) - {"pad_token"})
    return False


# dataclasses / pydantic / attrs field declarations: their default is what an unset field holds.
DATACLASS_FIELDS = {"dataclasses.field", "field", "pydantic.Field", "attrs.field", "attr.ib", "attr.field"}

# What turns a config instance (dataclass, pydantic model) into a dict of its fields, spread with `**`.
CONFIG_DUMP_METHODS = ("model_dump", "dict")
CONFIG_DUMP_FUNCTIONS = {"dataclasses.asdict", "asdict", "vars"}


def config_dump(interp, values: Values, node, env) -> Values:
    """`cfg.model_dump()` / `asdict(cfg)` of config instances: one dict per instance, each field holding
    what the instance was given or set (`cfg.x = ...`), else its declared default; unknown for the rest."""
    from peftdoctor.facts.calls import config_fields, is_config_class

    instances = [v for v in values if v.kind == SELF and v.get("cls") is not None and is_config_class(v.get("cls"))]
    if not instances:
        return unknown()
    key = dotted(node)
    dicts = []
    for instance in instances:
        entries = {}
        for name in config_fields(instance.get("cls")):
            entries[name] = (env.lookup(f"{key}.{name}") if key is not None else None) \
                or interp.read_field(instance, name) or unknown()
        dicts.append(Value(CONST, node, value={k: const_value(v) for k, v in entries.items()}, entries=entries))
    return union(dicts, unknown() if len(instances) != len(values) else ())


# Library helpers that add tokens to the tokenizer and resize the model's embeddings.
TOKEN_ADDING_HELPERS = {"trl.setup_chat_format", "trl.models.setup_chat_format"}


def _setup_chat_format(interp, event, env) -> Values:
    """trl.setup_chat_format adds <|im_start|>/<|im_end|> and resizes the embeddings."""
    models = _mark_models(interp, env, event.arg(0, "model"), resized=True, new_tokens=True,
                          resized_at=event.node)
    tokenizers = _mark_models(interp, env, event.arg(1, "tokenizer"), kinds=(TOKENIZER,), added=True,
                              added_at=event.node)
    return (Value(TUPLE, event.node, items=[models, tokenizers]),)


# ------------------------------------------------------------------- diffusers
# Pipeline arguments that hand it a model a LoRA loads into.
DIFFUSERS_COMPONENTS = ("unet", "transformer")
# diffusers' LoRA loaders -> (where they load: None for the receiver, a model or a pipeline's components, else
# the classmethod's keyword argument, third positionally; the position of adapter_name, None: keyword only).
# Each adds a new adapter, named `default_N` unless adapter_name= says otherwise, and makes it the only active one.
DIFFUSERS_LORA_LOADERS = {"load_lora_weights": (None, 1), "load_lora_adapter": (None, None),
                          "load_attn_procs": (None, None), "load_lora_into_unet": ("unet", 3),
                          "load_lora_into_transformer": ("transformer", 3)}
# The accelerate hook that runs inside accelerator.load_state(): a resume.
LOAD_STATE_HOOKS = ("register_load_state_pre_hook",)


# transformers.pipeline(task, model=...): calling the pipeline runs the model it was given, as it is (a pipeline
# never calls .eval()); for these tasks the call is a generate()
HF_PIPELINE_FACTORIES = ("transformers.pipeline", "transformers.pipelines.pipeline")
GENERATION_TASKS = ("text-generation", "text2text-generation", "summarization", "translation",
                    "image-text-to-text", "image-to-text", "conversational")


def pipeline_run(pipelines: Values) -> tuple[Values, str]:
    """What calling these pipelines runs: the models they hold, and as which method ("generate" for a
    generation task, else a forward pass, "__call__")."""
    models = union(*(p.get("models") or () for p in pipelines))
    tasks = {p.get("task") for p in pipelines}
    generates = bool(tasks) and all(t is not None and t.startswith(GENERATION_TASKS) for t in tasks)
    return models, "generate" if generates else "__call__"


# The standard library's command-line parser: its options' defaults are what a run without flags uses.
ARGPARSE_PARSERS = ("argparse.ArgumentParser",)


# diffusers' cast of the trainable parameters of a model (or a list of models) to float32 (diffusers >= 0.26)
FP32_TRAINABLE_CASTS = ("cast_training_params",)


def _models_listed(interp, event, env) -> Values:
    """The first argument's models: `f(unet)` or `f([unet, text_encoder])`."""
    first = event.node.args[0].value if event.node.args and event.node.args[0].keyword is None else None
    if isinstance(first, (cst.List, cst.Tuple)):  # names only: evaluating a call again would run it twice
        return union(*(interp.eval(element.value, env) for element in first.elements
                       if isinstance(element.value, (cst.Name, cst.Attribute))))
    return event.arg(0, "model") or ()


def _diffusers_call(event, parts) -> Values:
    """`UNet2DConditionModel.from_pretrained(...)` / `(...)`: a diffusers model with no adapter yet;
    `StableDiffusionPipeline.from_pretrained(..., unet=unet)`: a pipeline holding the models passed in."""
    last = parts[-1]
    cls = parts[-2] if len(parts) >= 3 and last in MODEL_CONSTRUCTORS else last
    if not cls[:1].isupper() or (cls != last and last not in MODEL_CONSTRUCTORS):
        return unknown()
    if cls.endswith("Pipeline"):
        passed = union(*(event.kwargs.get(key, ()) for key in DIFFUSERS_COMPONENTS))
        return (Value(DIFFUSERS_MODEL, event.node, class_name=cls, adapters=(), models=passed),)
    if "Model" in cls or "Transformer" in cls or "UNet" in cls:
        loaded_as = possible_dtypes(event.arg(None, "torch_dtype") or event.arg(None, "dtype"))
        return (Value(DIFFUSERS_MODEL, event.node, class_name=cls, adapters=(), models=(),
                      fp16_at=event.node if "float16" in loaded_as else None),)
    return unknown()


def _add_diffusers_adapter(interp, event, env, model: Value) -> Values:
    """`unet.add_adapter(LoraConfig(...))`: the model gains adapter "default" (or adapter_name=), in place."""
    name = const_value(event.arg(1, "adapter_name"), None) if event.arg(1, "adapter_name") else "default"
    if not isinstance(name, str):
        return unknown()
    fresh_adapter_in_fp16 = {"casted": False} if model.get("fp16_at") is not None else {}  # made in the base dtype
    interp.mutate(env, model, model.derive(adapters=(*model.get("adapters"), name),
                                           adapter_at=model.get("adapter_at") or event.node, **fresh_adapter_in_fp16))
    return unknown()


def _diffusers_method(interp, event, env, model: Value, method: str) -> Values:
    """A diffusers model's own methods: add_adapter, its parameters, and casts (in place, as nn.Module's are)."""
    if method == "add_adapter":
        return _add_diffusers_adapter(interp, event, env, model)
    if method in ("parameters", "named_parameters"):
        return (Value(PARAMS, event.node, model=(model,), modules=False),)
    dtypes = _cast_dtypes(event, method)
    if dtypes:
        may_be_fp16 = "float16" in dtypes
        all_float32 = dtypes == {"float32"}  # the adapter's weights too: trainables are float32 again
        new = model.derive(fp16_at=event.node if may_be_fp16 else None,
                           casted=all_float32 or (not may_be_fp16 and model.get("casted")))
        _change_held(interp, env, model, new, event.node.func.value)
        return (new,)
    return (model,) if method in SELF_RETURNING else unknown()


def _cast_dtypes(event, method: str) -> set[str]:
    """The dtypes `.half()` / `.float()` / `.to(..., dtype=...)` may cast to (empty: not a cast)."""
    if method in ("half", "float", "bfloat16"):
        return {{"half": "float16", "float": "float32", "bfloat16": "bfloat16"}[method]}
    if method != "to":
        return set()
    found = set()
    for values in (event.kwargs.get("dtype"), *event.args):
        found |= possible_dtypes(values)
    return found - {"unknown"}


def possible_dtypes(values: Values | None) -> set[str]:
    """Every dtype some path may give ('unknown' for a path not known here): `weight_dtype` set to
    torch.float16 under `if accelerator.mixed_precision == "fp16":` may be float16."""
    found = set()
    for value in values or ():
        name = None
        if value.kind == REF and value.get("qualname", "").startswith("torch."):
            name = DTYPE_NAMES.get(value.get("qualname").split(".")[-1])
        elif value.kind == CONST and isinstance(value.get("value"), str):
            name = DTYPE_NAMES.get(value.get("value").lower().replace("torch.", ""))
        found.add(name or "unknown")
    return found


# --------------------------------------------------------------- method calls
def call_method(interp, event, env) -> Values:
    method = event.method
    if method == "backward":
        interp.mark_backward()
    if method == "register_forward_hook" and _hook_requires_grad(event):
        for model in _models_inside(interp, event.node.func.value, env):
            _enable_input_grads(interp, env, model)
    results = []
    for value in _not_none(event.receiver):
        results.append(_method_of(interp, event, env, value, method))
    return union(*results) if results else unknown()


# Methods that change a list, set or dict in place: a literal built empty and filled by `append` in a loop
# is no longer the literal it was (an `all_data = []` whose `if not all_data: return` would end every path).
CONTAINER_MUTATORS = {"append", "extend", "insert", "remove", "pop", "clear", "add", "discard", "update",
                      "setdefault", "popitem"}


def _container_changed(interp, event, env, value: Value) -> None:
    """A literal list or set changed in place: the new literal when the change is literal too
    (`targets.remove("embed_tokens")`), else no longer known; a dict keeps its known entries but is no
    longer complete."""
    literal = value.get("value")
    if isinstance(literal, dict):
        interp.mutate(env, value, value.derive(complete=False))
    elif isinstance(literal, (list, set)):
        changed = _changed_literal(literal, event)
        interp.mutate(env, value, UNKNOWN_VALUE if changed is MISSING else value.derive(value=changed))


def _changed_literal(literal, event):
    """The list or set after a literal append/extend/insert/remove/add/discard/clear, else MISSING."""
    args = [const_value(values) for values in event.args]
    if event.kwargs or MISSING in args:
        return MISSING
    changed = type(literal)(literal)
    method = event.method
    if method == "clear" and not args:
        changed.clear()
    elif isinstance(changed, list) and method == "append" and len(args) == 1:
        changed.append(args[0])
    elif isinstance(changed, list) and method == "extend" and len(args) == 1 and isinstance(args[0], (list, tuple)):
        changed.extend(args[0])
    elif isinstance(changed, list) and method == "insert" and len(args) == 2 and isinstance(args[0], int):
        changed.insert(args[0], args[1])
    elif method in ("remove", "discard") and len(args) == 1:
        if args[0] in changed:  # an absent one: discard keeps the set; remove raises, so no path goes on with it
            changed.remove(args[0])
    elif isinstance(changed, set) and method == "add" and len(args) == 1:
        changed.add(args[0])
    else:
        return MISSING
    return changed


def _not_none(receivers: Values) -> Values:
    """A method called on None raises: a path where the receiver is None goes no further (when others exist)."""
    kept = tuple(v for v in receivers if not (v.kind == CONST and v.get("value") is None))
    return kept or receivers


def _method_of(interp, event, env, value: Value, method: str) -> Values:
    kind = value.kind
    if kind in (BASE_MODEL, PEFT_MODEL):
        return _model_method(interp, event, env, value, method)
    if kind == TUNER and method in UNLOADING:  # `model.base_model.merge_and_unload()`: same as on the wrapper
        _unload_in_place(interp, event, env, value.get("peft"), event.node.func.value.value)
        return unknown()
    if kind == TUNER and method == "set_adapter":  # `model.base_model.set_adapter(name)`
        peft = value.get("peft")
        _change_held(interp, env, peft, peft.derive(unfrozen=True, inactive_load=None), event.node.func.value.value)
        return unknown()
    if kind == ARG_PARSER and value.get("options") is not None:
        return command_line.parser_method(event, value, method)
    if kind == ARG_PARSER and method.startswith("parse_") and method != "parse_known_args":
        return (Value(TUPLE, event.node, items=[_parsed_arguments(interp, event, env, v)
                                                for v in _dataclass_types(value)]),)
    if kind == TOKENIZER:
        if method == "add_tokens" or (method == "add_special_tokens" and _adds_special_tokens(event)):
            value = _replace(interp, env, value, value.derive(added=True, added_at=event.node))
        if method == "add_special_tokens":
            _set_pad_token(interp, env, value, _special_token_given(event, "pad_token"), event.node)
        return unknown()
    if kind == ENCODING and method == "to":
        return (value,)
    if kind == CONST and method in CONTAINER_MUTATORS:
        _container_changed(interp, event, env, value)
        return unknown()
    if kind == SELF and method in CONFIG_DUMP_METHODS and not event.args:
        dumped = config_dump(interp, (value,), event.node.func.value, env)
        if dumped[0].kind == CONST:
            return dumped
    if kind == SELF and method in CAST_METHODS and value.get("cls") is not None:
        return _cast_held_models(interp, event, env, value, method)
    if kind == SELF and value.get("cls") is not None:  # `self.tokenizer(...)`: a call of what the field holds
        held = interp.read_field(value, method) or ()
        return union(*(call_value(interp, v, event) for v in held)) if held else unknown()
    if kind == TRAINER and method in TRAINER_MODES:
        # the base a trainer's peft_config= wrapped in place is the wrapper's modules: it changes mode with them
        models = _mark_models(interp, env, value.get("model"), kinds=(PEFT_MODEL, BASE_MODEL),
                              training=TRAINER_MODES[method], mode_at=event.node)
        trained = models if value.get("trained") is value.get("model") else _mark_models(
            interp, env, value.get("trained"), kinds=(PEFT_MODEL,), training=TRAINER_MODES[method], mode_at=event.node)
        interp.mutate(env, value, value.derive(model=models, trained=trained))  # the trainer holds them as changed
        return unknown()
    if kind == DIFFUSERS_MODEL:
        return _diffusers_method(interp, event, env, value, method)
    if kind == ACCELERATOR:
        if method == "unwrap_model":  # the model itself; only diffusers models are followed through it
            return tuple(v for v in event.arg(0, "model") or () if v.kind == DIFFUSERS_MODEL) or unknown()
        if method == "prepare":
            if len(event.args) == 1:
                return event.args[0]
            return (Value(TUPLE, event.node, items=list(event.args)),)
        return unknown()  # accelerator.backward() is marked in call_method
    if kind == OPTIMIZER and method == "add_param_group" and value.get("wrapped_after") is not None:
        interp.mutate(env, value, value.derive(wrapped_after=None))  # the adapter's parameters may be added
    return unknown()


CAST_METHODS = ("to", "half", "float", "bfloat16")


def _cast_held_models(interp, event, env, instance: Value, method: str) -> Values:
    """`wrapper.to(dtype=...)` on a module of the project: nn.Module casts every submodule, so the models its
    fields hold are cast with it (the instance, now holding the cast models, is what the call returns)."""
    state = instance.get("state") or {}
    changed = {}
    for field, values in state.items():
        if any(v.kind in MODEL_VALUE_KINDS for v in values):
            changed[field] = tuple(_cast_one(interp, event, env, value, method) for value in values)
    if not changed:
        return (instance,)
    new = instance.derive(state={**state, **changed})
    interp.mutate(env, instance, new)
    return (new,)


MODEL_VALUE_KINDS = (BASE_MODEL, PEFT_MODEL, DIFFUSERS_MODEL)


def _cast_one(interp, event, env, value: Value, method: str) -> Value:
    """One held value after the cast: a model as its own `.to()`/`.half()` leaves it, anything else as is."""
    if value.kind not in MODEL_VALUE_KINDS:
        return value
    cast = [result for result in _method_of(interp, event, env, value, method) if result.kind == value.kind]
    return cast[0] if cast else value


def held_models(values: Values) -> Values:
    """The models that instances of the project's classes hold in their fields (`self.unet = unet`)."""
    return union(*(tuple(v for held in (value.get("state") or {}).values() for v in held
                         if v.kind in MODEL_VALUE_KINDS)
                   for value in values if value.kind == SELF))


def _dataclass_types(parser: Value) -> list[Value]:
    """The classes given to HfArgumentParser: one, or a tuple of them."""
    found = []
    for value in parser.get("items") or ():
        if value.kind == TUPLE:
            found.extend(v for values in value.get("items") for v in values)
        else:
            found.append(value)
    return found


def _parsed_arguments(interp, event, env, cls: Value) -> Values:
    """What HfArgumentParser gives for one class: TrainingArguments as such, a local dataclass as an
    instance whose fields hold their defaults (the script's documented command line may set them)."""
    if cls.kind == CLASS:
        return (Value(SELF, event.node, cls=cls, state={}),)
    if cls.kind == REF and cls.get("qualname", "").endswith("Arguments"):
        return (Value(TRAINING_ARGS, event.node, fp16=None, bf16=None),)
    return unknown()


def _model_method(interp, event, env, value: Value, method: str) -> Values:
    if method in ("parameters", "named_parameters", "modules", "named_modules"):
        return (Value(PARAMS, event.node, model=(value,), modules=method.endswith("modules")),)
    if method == "state_dict" and value.kind == PEFT_MODEL and not event.args and not event.kwargs:
        return (Value(STATE_DICT, event.node, model=(value,)),)
    new = None
    if method == "half":
        new = value.derive(dtype="float16", halved_at=event.node if value.kind == PEFT_MODEL else None)
    elif method == "bfloat16":
        new = value.derive(dtype="bfloat16")
    elif method == "float":
        new = value.derive(dtype="float32", casted=True)
    elif method == "to":
        dtype = dtype_of(event.arg(None, "dtype"))
        for values in event.args:
            dtype = dtype or dtype_of(values)
        if dtype == "float16":
            new = value.derive(dtype="float16", halved_at=event.node if value.kind == PEFT_MODEL else None)
        elif dtype in ("bfloat16", "float32"):
            new = value.derive(dtype=dtype, casted=dtype == "float32")
    elif method == "requires_grad_" and value.kind == PEFT_MODEL:
        flag = const_value(event.arg(0, "requires_grad"), True) if event.args or event.kwargs else True
        if flag is not False:
            new = value.derive(unfrozen=True)
    elif method == "resize_token_embeddings":
        added = _tokens_added(interp, event, env)
        resized = value.derive(resized=True, new_tokens=added, resized_at=event.node)
        interp.mutate(env, value, resized)
        return (resized,)  # the event's result: the model as resized on this path
    elif method in ("merge_and_unload", "unload", "get_base_model") and value.kind == PEFT_MODEL:
        if method in UNLOADING:
            _unwrapped_in_place(interp, env, value)
            _unload_in_place(interp, event, env, value, event.node.func.value)
        base = value.get("base") or ()
        template = base[0] if len(base) == 1 and base[0].kind == BASE_MODEL else None
        attrs = dict(template.attrs) if template is not None else {"dtype": value.get("dtype")}
        return (Value(BASE_MODEL, event.node, **{**attrs, "plain_again": True, "wrapped_by": None}),)
    elif method == "dequantize" and value.kind == BASE_MODEL:
        new = value.derive(quantization=None)
    elif method == "set_adapter" and value.kind == PEFT_MODEL:
        new = value.derive(unfrozen=True, inactive_load=None)
    elif method == "load_adapter" and value.kind == PEFT_MODEL and _flag(event, "is_trainable") is True:
        new = value.derive(unfrozen=True, inactive_load=_second_adapter(event, value) or value.get("inactive_load"))
    elif method in CHECKPOINTING_METHODS:
        new = value.derive(checkpointing=reentrant_of(event.arg(0, CHECKPOINTING_METHODS[method]), event.star_kwargs))
    elif method in INPUT_GRAD_METHODS:
        _enable_input_grads(interp, env, value)
        return (value,)
    elif method in ("eval", "train"):
        mode = method == "train" and (const_value(event.arg(0, "mode"), None) if event.args or event.kwargs else True)
        if value.get("training") != mode:
            new = value.derive(training=mode, mode_at=event.node)
    if method in ("add_adapter", "load_adapter") and value.kind == PEFT_MODEL and value.get("unloaded_at") is not None:
        new = (new or value).derive(unloaded_at=None)  # a new adapter injected into the unloaded base: saved whole
    if new is not None:
        _change_held(interp, env, value, new, event.node.func.value)
        return (new,)
    if method in SELF_RETURNING:
        return (value,)
    return unknown()


def _second_adapter(event, peft: Value):
    """The `load_adapter` call when it loads a literal adapter name other than the one the PeftModel was
    made with (peft's `"default"` unless `adapter_name=` says otherwise): peft leaves that one active."""
    loaded = const_value(event.arg(1, "adapter_name"), None)
    made_with = "default"
    if isinstance(peft.node, cst.Call):
        for arg in peft.node.args:
            if arg.keyword is not None and arg.keyword.value == "adapter_name":
                made_with = arg.value.evaluated_value if isinstance(arg.value, cst.SimpleString) else None
    if not isinstance(loaded, str) or made_with is None or loaded == made_with:
        return None
    return event.node


def _unload_in_place(interp, event, env, peft: Value, holder) -> None:
    """The wrapper, its LoRA layers gone, in every name that holds it, and in every trainer that trains it
    (`trainer.save_model()` saves that wrapper)."""
    unloaded = peft.derive(unloaded_at=event.node)
    _change_held(interp, env, peft, unloaded, holder)
    for values in list(_all_names(env)):
        for value in values:
            if value.kind == TRAINER and any(v is peft for v in value.get("trained") or ()):
                trained = tuple(unloaded if v is peft else v for v in value.get("trained"))
                interp.mutate(env, value, value.derive(trained=trained))


def _change_held(interp, env, old: Value, new: Value, holder) -> None:
    """An in-place change of the model `holder` evaluates to; `self.model.merge_and_unload()` rebinds
    `self.model` too, so the instance carries the change to its other methods."""
    interp.mutate(env, old, new)
    if isinstance(holder, cst.Attribute) and env.lookup(dotted(holder) or "") is None:
        interp.assign(holder, (new,), env)


def _tokens_added(interp, event, env) -> bool:
    """The resize's argument is `len(tokenizer)` of a tokenizer that gained tokens, or one in scope did."""
    for value in event.arg(0, "new_num_tokens") or ():
        if value.kind == VOCAB and value.get("tokenizer").get("added"):
            return True
    return any(v.kind == TOKENIZER and v.get("added") for values in _all_names(env) for v in values)


def set_attribute(interp, env, owner: Value, attr: str, values: Values) -> None:
    """`model.model = get_peft_model(model.model, cfg)`: the outer model now carries that adapter.
    `tokenizer.pad_token = tokenizer.eos_token`: the tokenizer pads with its eos token."""
    if owner.kind == BASE_MODEL and values and any(v.kind == PEFT_MODEL for v in values):
        interp.mutate(env, owner, owner.derive(inner_peft=tuple(v for v in values if v.kind == PEFT_MODEL)))
    if owner.kind == TRAINER and attr == "model":  # `trainer.model = merged`: what save_model() saves now
        interp.mutate(env, owner, owner.derive(model=values, trained=values))
    if owner.kind == TRAINING_ARGS and "checkpointing" in attr:  # set after construction: read as unknown
        interp.mutate(env, owner, owner.derive(checkpointing=None, reentrant=None))
    if owner.kind == TOKENIZER and attr in ("pad_token", "pad_token_id"):
        _set_pad_token(interp, env, owner, values, None)
    if owner.kind == TOKENIZER and attr == "padding_side":
        interp.mutate(env, owner, owner.derive(padding_side=const_value(values, None)))


def _replace(interp, env, old: Value, new: Value) -> Value:
    interp.mutate(env, old, new)
    return new


def _special_token_given(event, key: str) -> Values:
    """The value given for `key` in `add_special_tokens({...})`: a literal, or what the dict's entry holds."""
    tokens = const_value(event.arg(0, "special_tokens_dict"), None)
    if not isinstance(tokens, dict) or key not in tokens:
        return ()
    if tokens[key] is not MISSING:
        return (Value(CONST, value=tokens[key]),)
    for element in getattr(event.node.args[0].value, "elements", ()) if event.node.args else ():
        if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString) and \
                element.key.evaluated_value == key and isinstance(element.value, cst.Attribute):
            return (Value(SPECIAL_TOKEN, element.value, name=_special_name(element.value.attr.value)),)
    return unknown()


def _set_pad_token(interp, env, tokenizer: Value, values: Values, node) -> None:
    """The pad token is now the eos token (True), another token (False), or not known here (None)."""
    if not values:
        return
    if all(v.kind == SPECIAL_TOKEN and v.get("name") == "eos" for v in values):
        pad_is_eos = True
    elif all(v.kind == CONST or (v.kind == SPECIAL_TOKEN and v.get("name") != "eos") for v in values):
        pad_is_eos = False
    else:
        pad_is_eos = None
    where = values[0].node if pad_is_eos else None
    interp.mutate(env, tokenizer, tokenizer.derive(pad_is_eos=pad_is_eos, pad_set_at=where or node))


SPECIAL_TOKEN_ATTRIBUTES = ("eos_token", "eos_token_id", "unk_token", "unk_token_id", "bos_token", "bos_token_id")


def _special_name(attr: str) -> str:
    """'eos_token_id' -> 'eos'."""
    return attr.split("_")[0]


def _all_names(env):
    while env is not None:
        yield from env.names.values()
        env = env.parent


def attribute_of(value: Value, attr: str, node: cst.CSTNode | None = None) -> Value | None:
    if value.kind == NAMESPACE:
        return command_line.option_value(value, attr)
    if value.kind == ENCODING and attr in ENCODING_FIELDS:
        return value
    if value.kind == TOKENIZER and attr in SPECIAL_TOKEN_ATTRIBUTES:
        return Value(SPECIAL_TOKEN, node, name=_special_name(attr), tokenizer=value)
    if value.kind == TRAINER and attr == "model":  # what the trainer trains: a peft_config= wrap included
        trained = value.get("trained") or ()
        return trained[0] if len(trained) == 1 else None
    if value.kind == PEFT_MODEL and attr == "base_model":
        return Value(TUNER, value.node, peft=value, maybe=value.get("maybe"))
    if value.kind == TUNER and attr == "model":
        base = value.get("peft").get("base") or ()
        return base[0] if len(base) == 1 else None
    return None


# ------------------------------------------------------------ parameter loops
def descendants(node: cst.CSTNode):
    """Every node below `node` but whitespace and punctuation, depth first. Reads the node fields
    directly: libcst's `.children` runs a visitor per node (7% of a whole-corpus check when used
    here), and libcst.matchers costs 0.3 s to import."""
    stack = [node]
    while stack:
        current = stack.pop()
        for name in _child_fields(type(current)):
            value = getattr(current, name)
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if _is_code(type(item)):
                    yield item
                    stack.append(item)


# Nodes that only lay out the code: nothing a rule looks for is below them.
_LAYOUT = (cst.BaseParenthesizableWhitespace, cst.EmptyLine, cst.TrailingWhitespace, cst.Newline, cst.Comment,
           cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket, cst.LeftCurlyBrace,
           cst.RightCurlyBrace, cst.Comma, cst.Dot, cst.Semicolon, cst.Colon, cst.AssignEqual)
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_CODE_TYPES: dict[type, bool] = {}


def _child_fields(cls: type) -> tuple[str, ...]:
    found = _CHILD_FIELDS.get(cls)
    if found is None:
        found = _CHILD_FIELDS[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return found


def _is_code(cls: type) -> bool:
    """A node type that is code (not layout); asked once per type, since isinstance on libcst's
    abstract classes is slow."""
    found = _CODE_TYPES.get(cls)
    if found is None:
        found = _CODE_TYPES[cls] = issubclass(cls, cst.CSTNode) and not issubclass(cls, _LAYOUT)
    return found


def method_calls_in(node: cst.CSTNode, methods: tuple[str, ...]):
    """Calls `<x>.<method>(...)` below `node` for one of `methods`."""
    for child in descendants(node):
        if isinstance(child, cst.Call) and isinstance(child.func, cst.Attribute) and child.func.attr.value in methods:
            yield child


def _casts_to_float32(body) -> bool:
    for call in method_calls_in(body, ("float", "to", "type")):
        if call.func.attr.value == "float":
            if not call.args:
                return True
            continue
        for arg in call.args:
            if dotted(arg.value) in ("torch.float32", "torch.float"):
                return True
            if isinstance(arg.value, cst.SimpleString) and arg.value.evaluated_value == "float32":
                return True
    return False


def _unfreezes(body) -> bool:
    for child in descendants(body):
        if isinstance(child, cst.Assign) and isinstance(child.value, cst.Name) and child.value.value == "True":
            if any(isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad"
                   for t in child.targets):
                return True
    for call in method_calls_in(body, ("requires_grad_",)):
        if not call.args or (isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == "True"):
            return True
    return False


# Functions that turn one quantized layer's weight back into float weights (bitsandbytes.functional, peft's
# integrations): a loop over a model's modules that calls one swaps its quantized layers for float ones.
DEQUANTIZING_FUNCTIONS = ("dequantize_4bit", "dequantize_nf4", "dequantize_fp4", "dequantize_bnb_weight",
                          "dequantize_module_weight")


def _dequantizes(body) -> bool:
    for child in descendants(body):
        if isinstance(child, cst.Call) and (dotted(child.func) or "").split(".")[-1] in DEQUANTIZING_FUNCTIONS:
            return True
    return False


def apply_parameter_loop(interp, node: cst.For, iterated: Values, env, body_env) -> None:
    """`for p in model.parameters(): p.data = p.data.float()` / `p.requires_grad = True`; a loop over
    `model.named_modules()` that dequantizes each quantized layer by hand."""
    models = [model for value in iterated if value.kind == PARAMS for model in value.get("model", ())]
    if not models:
        return
    changes = {}
    if _casts_to_float32(node.body):
        changes["casted"] = True
    if _unfreezes(node.body):
        changes["unfrozen"] = True
    if _dequantizes(node.body):
        changes["quantization"] = None
    if not changes:
        return
    for model in models:
        new = model.derive(**changes)
        interp.mutate(env, model, new)
        body_env.replace(model, new)


# ------------------------------------------------------------ label masking
# Collators that set the label to -100 wherever input_ids == tokenizer.pad_token_id (so an eos used as pad
# is never a target), with their `mlm` default: transformers' LM collator masks tokens for MLM unless mlm=False.
PAD_MASKING_COLLATORS = {
    "transformers.DataCollatorForLanguageModeling": True,
    "transformers.data.DataCollatorForLanguageModeling": True,
    "transformers.data.data_collator.DataCollatorForLanguageModeling": True,
    # trl < 0.20: a subclass of the above whose torch_call starts from super().torch_call()
    "trl.DataCollatorForCompletionOnlyLM": False,
    "trl.trainer.DataCollatorForCompletionOnlyLM": False,
    "trl.trainer.utils.DataCollatorForCompletionOnlyLM": False,
}
# Contexts (and decorators) under which a function runs its model without gradients: an evaluation.
NO_GRAD_CONTEXTS = ("torch.no_grad", "torch.inference_mode")
# Checkpoint families whose tokenizer has no pad token: an `if tokenizer.pad_token is None:` fallback to
# eos runs for them.
NO_PAD_TOKEN_CHECKPOINTS = ("gpt2", "gpt-neo", "gpt-j", "llama", "mistral", "mixtral", "falcon", "pythia")


def sft_default_collator_masks_pad(trl, packing) -> bool | None:
    """Whether SFTTrainer without data_collator masks every pad-id label (trl's sources): trl < 0.15 uses
    transformers' DataCollatorForLanguageModeling(mlm=False) when packing is off (packed examples keep
    their labels), 0.15.0-0.16.0 always, and >= 0.16.1 its own collator, which masks padding by position.
    `trl` is the project's ProjectVersion; None when `packing` is not literal and decides it."""
    if trl.at_least(0, 16, 1):
        return False
    if trl.at_least(0, 15):
        return True
    if packing is MISSING or packing is False:
        return True
    return False if packing is True else None


# Model classes with a language-modelling head over the vocabulary (decoder-only): a SEQ_CLS/TOKEN_CLS/
# QUESTION_ANS peft task on them finds no classification head to train.
CAUSAL_LM_CLASS_ENDINGS = ("ForCausalLM", "LMHeadModel")


def is_causal_lm_class(class_name: str | None) -> bool:
    return bool(class_name) and class_name.endswith(CAUSAL_LM_CLASS_ENDINGS)


# ------------------------------------------------------------------ encodings
ENCODING_FIELDS = ("input_ids", "attention_mask")
PADDING_ON = (True, "longest", "max_length")  # tokenizer(..., padding=...) values that pad


def call_value(interp, value: Value, event) -> Values:
    """A call of a library object: `tokenizer(prompts, padding=True)` is an encoding that remembers how it
    was padded (a `padding_side=` of the call wins over the tokenizer's)."""
    if value.kind != TOKENIZER:
        return unknown()
    padding = const_value(event.kwargs.get("padding"), MISSING) if "padding" in event.kwargs else False
    side = const_value(event.kwargs["padding_side"], None) if "padding_side" in event.kwargs \
        else value.get("padding_side")
    return (Value(ENCODING, event.node, tokenizer=value, padded=None if padding is MISSING else padding in PADDING_ON,
                  padding_side=side, maybe=value.get("maybe")),)


def item_of(values: Values) -> Values:
    """`encoding["input_ids"]` is the encoding (its padding is what matters); anything else is not known."""
    encodings = tuple(v for v in values if v.kind == ENCODING)
    return encodings if encodings and len(encodings) == len(values) else unknown()
