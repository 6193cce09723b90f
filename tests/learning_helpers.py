"""Tiny training setups for the PeftDoctorCallback / watch() tests: real Trainer, real peft, CPU only."""

from __future__ import annotations

import peft
import torch
from tiny import tiny_llama
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification
from truth_helpers import LMDataset, lora


class Images(torch.utils.data.Dataset):
    """Seeded 8x8 images with labels for the tiny ViT classifier."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, 8, 8, generator=gen), "labels": torch.tensor(index % 3)}


def vit_lora():
    """A tiny ViT classifier with LoRA on q/v and the head in modules_to_save (the head trains)."""
    torch.manual_seed(0)
    base = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=32, image_size=8, patch_size=4, num_labels=3))
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    return peft.get_peft_model(base, config)


def llama_peft(config=None):
    return peft.get_peft_model(tiny_llama(), config or lora())


def saved_adapter(folder) -> str:
    """A LoRA adapter saved from a tiny llama (as a previous run's checkpoint would be)."""
    llama_peft().save_pretrained(folder)
    return str(folder)


def reentrant(**extra) -> dict:
    return dict(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}, **extra)


def trainer(model, out_dir, callbacks=(), *, data=None, steps: int = 2, **args) -> Trainer:
    args = dict(save_strategy="no", logging_strategy="no") | args
    arguments = TrainingArguments(str(out_dir), per_device_train_batch_size=2, max_steps=steps,
                                  learning_rate=1e-2, report_to=[], use_cpu=True, disable_tqdm=True, **args)
    return Trainer(model=model, args=arguments, train_dataset=data if data is not None else LMDataset(),
                   callbacks=list(callbacks))


def snapshot(model, part: str = "lora_B") -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if part in n}


def moved(model, before: dict) -> int:
    """How many of the snapshotted tensors changed."""
    return sum(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
