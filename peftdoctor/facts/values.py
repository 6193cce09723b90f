"""Abstract values: what a name may hold at one point of a script.

A name holds a *set* of values (a tuple), one per path that reaches the point.
Rules ask "on every path" (`all_of`) or "on some path" (`any_of`).
"""

from __future__ import annotations

from typing import Iterable

import libcst as cst

# Kinds a value can have.
UNKNOWN = "unknown"
CONST = "const"  # a Python literal: attrs["value"]
REF = "ref"  # an imported name: attrs["qualname"]
TUPLE = "tuple"  # attrs["items"]: list of value sets
BASE_MODEL = "base_model"  # a transformers model (not wrapped by peft)
PEFT_MODEL = "peft_model"  # a PeftModel
PEFT_CONFIG = "peft_config"
TOKENIZER = "tokenizer"
TRAINING_ARGS = "training_args"
TRAINER = "trainer"
OPTIMIZER = "optimizer"
ACCELERATOR = "accelerator"
GRAD_SCALER = "grad_scaler"
PARAMS = "params"  # model.parameters() / named_parameters(): attrs["model"]
FUNCTION = "function"  # a function defined in the file: attrs["node"]
CLASS = "class"
SELF = "self"  # the first parameter of a method: attrs["cls"]
PARAM = "param"  # a function's parameter, unknown inside it: attrs["index"] (self not counted), attrs["name"]
LOCAL = "local"  # a module of the checked project (name None) or a name in it: attrs["module"], attrs["name"]
ARG_PARSER = "arg_parser"  # transformers.HfArgumentParser: attrs["items"], the dataclass types; argparse's
# ArgumentParser: attrs["options"], option name -> its default's values (see facts/command_line.py)
NAMESPACE = "namespace"  # what argparse's parse_args() returns: attrs["options"], as its parser's
HF_PIPELINE = "hf_pipeline"  # transformers.pipeline(task, model=m): attrs["models"], m's values; ["task"]
VOCAB = "vocab"  # len(tokenizer): attrs["tokenizer"], so a resize to it knows whether tokens were added
TUNER = "tuner"  # PeftModel.base_model: the LoraModel tuner, the injected base inside: attrs["peft"]
ENCODING = "encoding"  # what tokenizer(...) returns: attrs["tokenizer"], ["padded"], ["padding_side"]
SPECIAL_TOKEN = "special_token"  # tokenizer.eos_token / eos_token_id: attrs["name"] ("eos", "unk", ...)
QUANT_CONFIG = "quant_config"  # BitsAndBytesConfig / GPTQConfig / AwqConfig: attrs["quantization"]
# a diffusers model (UNet, transformer): attrs["adapters"], the adapter names add_adapter gave it, ["adapter_at"];
# or a pipeline: attrs["models"], the models passed to it (unet=, transformer=)
DIFFUSERS_MODEL = "diffusers_model"
STATE_DICT = "state_dict"  # a PeftModel's whole model.state_dict() (base weights, adapter-named keys): attrs["model"]

# Kinds whose values remember the branch that made them (see conditions.py).
GUARDED_KINDS = frozenset({BASE_MODEL, PEFT_MODEL, PEFT_CONFIG, TOKENIZER, TRAINER, TRAINING_ARGS, TUNER})

# Every attribute a value may carry. Rules read them with `value.get(name)`; a name not
# declared here is a typo and raises instead of silently reading None.
FIELDS = frozenset({
    "value", "complete", "qualname", "builtin", "items", "node", "cls", "name", "methods", "index", "module",
    "model", "modules", "peft", "guard", "bases", "library_base", "fields", "interp", "collected", "assigners", "maybe", "state", "class_attrs", "tokenizer", "default",
    # models
    "class_name", "dtype", "quantized", "head", "head_task", "resized", "new_tokens", "resized_at",
    "plain_again", "kbit_prepared", "casted", "halved_at", "via", "base", "config", "trainable", "frozen_by",
    "frozen_how", "autocast", "unfrozen", "inner_peft", "unloaded_at", "inactive_load", "tied",
    # "4-bit bitsandbytes" when some path certainly quantizes the weights ("" when the config quantizes nothing)
    "quantization", "quantization_optional",  # the latter: some path loads the model unquantized
    # a BitsAndBytesConfig with no load_in_* flag (on a config: "flagless"; on the model it loaded:
    # "quantization_flagless"): 4-bit only from transformers 4.38 on (library.FLAGLESS_BNB_CONFIG_IS_4BIT_FROM)
    "flagless", "quantization_flagless",
    # the wrap call (get_peft_model, PeftModel.from_pretrained, a trainer's peft_config) that injected
    # an adapter into this base model object in place
    "wrapped_by",
    # a dict literal: key -> the values it holds (attrs["value"] keeps only the literal ones)
    "entries",
    # configs, tokenizers, training
    "known", "peft_class", "alternatives", "added", "added_at", "source", "fp16", "bf16", "args", "trained",
    "peft_config", "mixed_precision", "models",
    # optimizers
    "wrapped_after",
    # gradient checkpointing
    "checkpointing", "input_grads", "reentrant", "library",
    # tokenizers: the pad token is the eos token (True/False/None = unknown), where that was set
    "pad_is_eos", "pad_set_at",
    # models: in train mode (True/False/None = unknown), and the call that put it there
    "training", "mode_at",
    # tokenizers and their encodings: the side they pad on ("left"/"right"/None), and whether they pad
    "padding_side", "padded",
    # diffusers models: the adapter names add_adapter gave them, and the add_adapter call that gave the first
    "adapters", "adapter_at",
    # argparse parsers and the namespaces they parse: option name -> the values of its default
    "options",
    # transformers pipelines: the task they were built for (None when not literal)
    "task",
    # diffusers models: the cast or load that may make them float16 (None: not float16 on any path)
    "fp16_at",
})


class Value:
    """One abstract value. Identity matters: mutations replace a value by a derived one."""

    __slots__ = ("kind", "node", "attrs")

    def __init__(self, kind: str, node: cst.CSTNode | None = None, **attrs):
        unknown_fields = attrs.keys() - FIELDS
        if unknown_fields:
            raise KeyError(f"undeclared value field(s): {sorted(unknown_fields)}")
        self.kind = kind
        self.node = node
        self.attrs = attrs

    def get(self, key: str, default=None):
        if key not in FIELDS:
            raise KeyError(f"undeclared value field: {key}")
        return self.attrs.get(key, default)

    def derive(self, **changes) -> "Value":
        """A copy with some attributes changed (same kind and origin node)."""
        if changes.keys() - FIELDS:
            raise KeyError(f"undeclared value field(s): {sorted(changes.keys() - FIELDS)}")
        attrs = dict(self.attrs)
        attrs.update(changes)
        return Value(self.kind, self.node, **attrs)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        shown = {k: v for k, v in self.attrs.items() if k not in ("base", "config", "items")}
        return f"Value({self.kind}, {shown})"


UNKNOWN_VALUE = Value(UNKNOWN)
Values = tuple  # a tuple[Value, ...]


def unknown() -> Values:
    return (UNKNOWN_VALUE,)


def const(value) -> Values:
    return (Value(CONST, value=value),)


def union(*sets: Iterable[Value]) -> Values:
    out: list[Value] = []
    seen: set[int] = set()
    for values in sets:
        for value in values:
            if id(value) not in seen:
                seen.add(id(value))
                out.append(value)
    return tuple(out)


def all_of(values: Values, kind: str) -> bool:
    return bool(values) and all(v.kind == kind for v in values)


MISSING = object()


def const_value(values: Values | None, default=MISSING):
    """The literal a value set holds on every path, or `default` if it varies or is unknown."""
    if not values:
        return default
    seen = MISSING
    for value in values:
        if value.kind != CONST:
            return default
        if seen is not MISSING and value.get("value") != seen:
            return default
        seen = value.get("value")
    return seen
