"""Tiny models built from configs (never the hub), shared by the runtime tests.

Import this only from tests that need torch; it imports transformers.
"""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

VOCAB = 128


def llama_config(**overrides) -> LlamaConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(**overrides)).to(dtype)


def tiny_llama_classifier(seed: int = 0, num_labels: int = 3, **overrides) -> LlamaForSequenceClassification:
    torch.manual_seed(seed)
    config = llama_config(num_labels=num_labels, pad_token_id=0, **overrides)
    return LlamaForSequenceClassification(config)


def tiny_bert_classifier(seed: int = 0, num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=64)
    return GPT2LMHeadModel(config)


def save_base(model, folder) -> str:
    """Save a base model to `folder` (safetensors) and return the path as a string."""
    model.save_pretrained(folder)
    return str(folder)
