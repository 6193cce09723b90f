"""Small helpers for tests/test_rule_truth.py: a word-level tokenizer, tiny
datasets, and one fp16-AMP optimizer step, all built locally (never the hub).

These exist so the truth tests can run the real failure each static rule
prevents with the installed torch / transformers / peft / trl, on CPU.
"""

from __future__ import annotations

import torch
from peft import LoraConfig
from tiny import VOCAB

LLAMA_TARGETS = ["q_proj", "v_proj"]


def lora(**overrides) -> LoraConfig:
    """A LoRA config for the tiny llama models (q_proj / v_proj)."""
    values = dict(r=4, lora_alpha=8, target_modules=list(LLAMA_TARGETS))
    values.update(overrides)
    return LoraConfig(**values)


def tiny_tokenizer(vocab_size: int = VOCAB):
    """A whitespace word-level fast tokenizer: `<pad>`=0, `<eos>`=1, `<unk>`=2, `w3`..`w{n-1}`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def make_nontrivial(model, seed: int = 1) -> None:
    """Give every lora_B a random value, as training would: a fresh LoRA adapter
    (lora_B = 0) changes nothing, so "the adapter does nothing" could not be seen."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def token_batch(seed: int = 0, batch: int = 2, length: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=gen)


@torch.no_grad()
def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = model(input_ids=input_ids).logits.float()
    model.train(was_training)
    return out


def trainable_names(model) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


def trainable_dtypes(model) -> dict[str, torch.dtype]:
    return {name: param.dtype for name, param in model.named_parameters() if param.requires_grad}


class LMDataset(torch.utils.data.Dataset):
    """A few causal-LM rows (labels = input_ids) for transformers.Trainer."""

    def __init__(self, rows: int = 4, length: int = 8):
        self.rows, self.length = rows, length

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> dict:
        ids = token_batch(seed=index, batch=1, length=self.length)[0]
        return {"input_ids": ids, "labels": ids.clone()}


def fp16_amp_step(model, **batch) -> None:
    """One optimizer step the way fp16 AMP does it (autocast + GradScaler).

    accelerate / Trainer(fp16=True) run the same GradScaler.unscale_ on GPU
    (before clipping and inside scaler.step); on CPU accelerate makes no
    scaler, so the tests use torch.amp.GradScaler("cpu") directly.
    """
    scaler = torch.amp.GradScaler("cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(**batch).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    scaler.step(optimizer)
    scaler.update()
