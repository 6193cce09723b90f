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
from tiny import VOCAB, tiny_llama, tiny_llama_classifier  # noqa: E402
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments  # noqa: E402
from truth_helpers import LMDataset, lora, make_nontrivial, token_batch, tiny_tokenizer  # noqa: E402

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


def _dropout_adapter():
    """get_peft_model on a base put in eval mode, lora_dropout=0.5, lora_B made non-zero (as after training)."""
    model = get_peft_model(tiny_llama().eval(), lora(lora_dropout=0.5))
    make_nontrivial(model)
    return model


def _greedy_twice(model) -> tuple:
    ids = token_batch(length=6)[:1]
    torch.manual_seed(0)
    return tuple(model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0) for _ in range(2))


def test_pd405_get_peft_model_returns_train_mode_and_generate_is_random():
    model = _dropout_adapter()
    assert model.training  # the base was eval(); peft puts the wrapped model in train mode
    first, second = _greedy_twice(model)
    assert not torch.equal(first, second)  # greedy decoding, same input: different tokens


def test_pd405_control_eval_makes_generate_deterministic():
    model = _dropout_adapter().eval()
    first, second = _greedy_twice(model)
    assert torch.equal(first, second)


def test_pd405_trainer_train_leaves_train_mode_evaluate_leaves_eval(tmp_path):
    model = _dropout_adapter()
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset(), eval_dataset=LMDataset())
    model.eval()
    trainer.train()
    assert model.training
    trainer.evaluate()
    assert not model.training


@pytest.mark.parametrize("strategy", [{"eval_strategy": "epoch"}, {"eval_strategy": "steps", "eval_steps": 3}])
def test_pd405_trainer_that_evaluates_ends_train_in_eval_mode(tmp_path, strategy):
    """Why the rule stays silent for a trainer with an eval_strategy: its train() ends with an evaluation."""
    model = _dropout_adapter()
    args = TrainingArguments(str(tmp_path), num_train_epochs=1, per_device_train_batch_size=1, report_to=[],
                             use_cpu=True, save_strategy="no", **strategy)
    Trainer(model=model, args=args, train_dataset=LMDataset(), eval_dataset=LMDataset()).train()
    assert not model.training


def test_pd407_seq_cls_on_causal_lm_has_no_head_and_fails_on_class_labels():
    model = get_peft_model(tiny_llama(), lora(task_type="SEQ_CLS"))
    ids = token_batch(length=6)
    assert [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n] == []
    assert tuple(model(input_ids=ids).logits.shape) == (2, 6, VOCAB)  # vocabulary scores, not 3 classes
    with pytest.raises(ValueError, match="Expected input batch_size"):
        model(input_ids=ids, labels=torch.tensor([0, 2]))


def test_pd407_control_seq_cls_on_classifier_trains_its_head():
    model = get_peft_model(tiny_llama_classifier(num_labels=3), lora(task_type="SEQ_CLS"))
    out = model(input_ids=token_batch(length=6), labels=torch.tensor([0, 2]))
    assert tuple(out.logits.shape) == (2, 3) and out.loss is not None
    assert any("score" in n for n, p in model.named_parameters() if p.requires_grad)


PROMPTS = ["w5 w9 w17 w33 w40 w41", "w7 w8"]  # a long and a short prompt in one batch


def _greedy_batch(side: str):
    """Greedy continuations of PROMPTS generated as one padded batch, and of each prompt alone."""
    tokenizer = tiny_tokenizer()
    model = get_peft_model(tiny_llama(), lora())
    make_nontrivial(model)
    model.eval()
    tokenizer.padding_side = side
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    together = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    alone = [model.generate(**tokenizer([p], return_tensors="pt"), max_new_tokens=6, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)[0, -6:].tolist() for p in PROMPTS]
    return together[:, -6:].tolist(), alone


def test_pd406_right_padding_changes_the_short_prompts_output():
    together, alone = _greedy_batch("right")
    assert together[0] == alone[0]  # the longest prompt has no padding
    assert together[1] != alone[1]  # the short one continues after its pad tokens


def test_pd406_control_left_padding_matches_unbatched():
    together, alone = _greedy_batch("left")
    assert together == alone
