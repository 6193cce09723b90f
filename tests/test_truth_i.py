"""Truth test for PD709 (adapter-not-learning): with the real Trainer, torch, transformers and peft on tiny
CPU models, these runs log a loss, raise nothing and leave the adapter where it started; the fixed forms move
every lora_B. This is what PeftDoctorCallback / watch() catch at the first step (tests/test_learning.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from learning_helpers import Images, llama_peft, moved, reentrant, saved_adapter, snapshot, trainer, vit_lora
from tiny import tiny_llama

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.mark.parametrize("use_reentrant, expected", [(True, 0), (False, 4)], ids=["reentrant", "fixed"])
def test_vit_reentrant_checkpointing_moves_no_lora_b(tmp_path, use_reentrant, expected):
    model = vit_lora()
    before = snapshot(model)
    run = trainer(model, tmp_path, data=Images(), steps=4, gradient_checkpointing=True,
                  gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    run.train()
    assert run.state.global_step == 4 and run.state.log_history[-1]["train_loss"] > 0
    assert len(before) == 4 and moved(model, before) == expected
    assert moved(model, snapshot(vit_lora(), "classifier")) > 0  # the head trains either way: the loss moves


@pytest.mark.parametrize("is_trainable, expected", [(False, 0), (True, 4)], ids=["frozen", "fixed"])
def test_resume_without_is_trainable_moves_nothing(tmp_path, is_trainable, expected):
    model = peft.PeftModel.from_pretrained(tiny_llama(), saved_adapter(tmp_path / "previous"),
                                           is_trainable=is_trainable)
    before = snapshot(model)
    run = trainer(model, tmp_path / "out", steps=4, **reentrant())
    run.train()
    assert run.state.global_step == 4 and len(before) == 4 and moved(model, before) == expected


@pytest.mark.parametrize("activate, expected", [(False, 0), (True, 4)], ids=["inactive", "fixed"])
def test_second_adapter_resume_trains_an_inactive_copy(tmp_path, activate, expected):
    model = llama_peft()
    model.load_adapter(saved_adapter(tmp_path / "previous"), adapter_name="resumed", is_trainable=True)
    if activate:
        model.set_adapter("resumed")
    resumed = {n: p for n, p in snapshot(model).items() if ".resumed." in n}
    trainer(model, tmp_path / "out", steps=2).train()
    assert len(resumed) == 4 and moved(model, resumed) == expected
