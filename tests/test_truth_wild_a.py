"""Truth tests for what the wild sweep A changed: a second wrap over an unused fresh wrapper, or over a base that
a prompt-learning wrap left plain, is harmless (PD104 stays silent), with the real torch / transformers / peft on a
tiny model on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peft import get_peft_model
from tiny import tiny_llama
from truth_helpers import logits, lora, token_batch, trainable_names


def test_pd104_second_wrap_over_an_unused_fresh_wrapper_trains_like_a_first_wrap():
    once = get_peft_model(tiny_llama(), lora())
    base = tiny_llama()
    preview = get_peft_model(base, lora())
    preview.print_trainable_parameters()
    model = get_peft_model(base, lora())  # what SFTTrainer(model=base, peft_config=...) does
    assert model.base_model.model is base
    assert trainable_names(model) == trainable_names(once)  # no nesting, no extra adapter
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    batch = token_batch()
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p, before[n])]
    assert len(moved) == len(before) == 4  # every adapter weight of the second wrapper learns


def test_pd104_prompt_tuning_leaves_the_base_plain_and_wrappers_apart():
    """A prompt-learning wrap adds a prompt encoder beside the base and injects nothing into it: the base
    keeps its own outputs, and a second wrap of it leaves the first wrapper as it was."""
    from peft import PromptTuningConfig

    batch = token_batch()
    plain = logits(tiny_llama(), batch)
    base = tiny_llama()
    first = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        for param in first.prompt_encoder.parameters():
            param.normal_()
    before = logits(first, batch)
    second = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert torch.equal(logits(base, batch), plain)  # the base runs as the plain model
    assert torch.equal(logits(first, batch), before)  # the second wrap changed nothing in the first
    assert not torch.equal(logits(second, batch)[:, 4:], before[:, 4:])  # each wrapper has its own prompt
