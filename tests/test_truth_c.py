"""The failures PD404-PD407 warn about really happen, with the installed torch, transformers, peft and trl
on tiny config-built models on CPU; a control next to each shows the fixed form works."""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(__file__))

from peft import get_peft_model  # noqa: E402
from tiny import tiny_llama  # noqa: E402
from transformers import DataCollatorForLanguageModeling  # noqa: E402
from truth_helpers import lora, tiny_tokenizer  # noqa: E402

EOS_ROWS = ["w3 w4 w5 w6 <eos>", "w7 w8 <eos>"]  # two examples of different length, each ending in eos


def _eos_labels(collator, tokenizer) -> tuple[int, int]:
    """(eos positions that are a target, eos positions) over the real tokens of one padded batch."""
    batch = collator([tokenizer(text) for text in EOS_ROWS])
    real_eos = (batch["input_ids"] == tokenizer.eos_token_id) & (batch["attention_mask"] == 1)
    return int((batch["labels"][real_eos] != -100).sum()), int(real_eos.sum())


def _pad_is_eos_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def test_pd404_lm_collator_masks_every_eos_when_pad_is_eos():
    tokenizer = _pad_is_eos_tokenizer()
    learned, total = _eos_labels(DataCollatorForLanguageModeling(tokenizer, mlm=False), tokenizer)
    assert (learned, total) == (0, 2)


def test_pd404_control_distinct_pad_keeps_eos_labels():
    tokenizer = tiny_tokenizer()  # <pad>=0, <eos>=1
    learned, total = _eos_labels(DataCollatorForLanguageModeling(tokenizer, mlm=False), tokenizer)
    assert (learned, total) == (2, 2)


def test_pd404_control_trl_collator_masks_padding_by_position():
    """trl >= 0.16.1: SFTTrainer's default collator pads labels with -100, whatever the pad id."""
    trl = pytest.importorskip("trl")
    tokenizer = _pad_is_eos_tokenizer()
    collator = trl.trainer.sft_trainer.DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    learned, total = _eos_labels(collator, tokenizer)
    assert (learned, total) == (2, 2)


def _eos_probability_after_training(tokenizer) -> float:
    """Train a LoRA adapter (q/v and lm_head) on an eos-terminated row padded in a batch with a shorter one,
    with transformers' LM collator; return the probability the model then gives eos after that row's words."""
    model = get_peft_model(tiny_llama(), lora(lora_dropout=0.0, target_modules=["q_proj", "v_proj", "lm_head"]))
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)([tokenizer(text) for text in EOS_ROWS])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is many times faster on a shared CPU
    try:
        for _ in range(40):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            logits = model(**tokenizer("w3 w4 w5 w6", return_tensors="pt")).logits[0, -1]
    finally:
        torch.set_num_threads(threads)
    return float(torch.softmax(logits, -1)[tokenizer.eos_token_id])


def test_pd404_model_never_learns_to_stop():
    assert _eos_probability_after_training(_pad_is_eos_tokenizer()) < 1e-3  # measured: 1.1e-6
    assert _eos_probability_after_training(tiny_tokenizer()) > 0.99  # measured: 0.99996
