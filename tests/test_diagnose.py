"""diagnose() / assert_healthy() on live models built in the test."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from tiny import VOCAB, tiny_bert_classifier, tiny_llama  # noqa: E402

import peftdoctor  # noqa: E402
from peftdoctor.finding import Severity  # noqa: E402
from peftdoctor.runtime.errors import UnhealthyModel  # noqa: E402


def lora(**kw):
    kw.setdefault("r", 4)
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    return LoraConfig(**kw)


def errors(findings):
    return sorted(f.code for f in findings if f.severity == Severity.ERROR)


class Args:
    """Stands for TrainingArguments: diagnose reads only .fp16 and .bf16."""

    def __init__(self, fp16=False, bf16=False):
        self.fp16, self.bf16 = fp16, bf16


def test_healthy_model_has_no_errors():
    model = get_peft_model(tiny_llama(), lora())
    findings = peftdoctor.diagnose(model, training_args=Args(fp16=True))
    assert errors(findings) == []
    info = [f for f in findings if f.code == "PD704"]
    assert info[0].severity == Severity.INFO and "512 float32" in info[0].message
    assert all(f.path == "<model>" and f.line == 0 for f in findings)
    assert peftdoctor.assert_healthy(model) == findings


def test_seed_bug_get_peft_model_then_from_pretrained(tmp_path):
    get_peft_model(tiny_llama(), lora()).save_pretrained(tmp_path / "adapter")
    inner = get_peft_model(tiny_llama(), lora())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(inner, tmp_path / "adapter", is_trainable=True)
    findings = peftdoctor.diagnose(model)
    nested = [f for f in findings if f.code == "PD706"]
    assert nested and nested[0].extra["depth"] == 2 and "base_model.model" in nested[0].message
    with pytest.raises(UnhealthyModel, match="PD706") as raised:
        peftdoctor.assert_healthy(model)
    assert isinstance(raised.value, AssertionError) and raised.value.findings == findings


def test_fp16_trainables_with_fp16_amp_is_an_error():
    model = get_peft_model(tiny_llama(dtype=torch.float16), lora(modules_to_save=["lm_head"]))
    findings = peftdoctor.diagnose(model, training_args=Args(fp16=True))
    pd704 = [f for f in findings if f.code == "PD704" and f.severity == Severity.ERROR]
    assert pd704 and "lm_head" in pd704[0].message and "unscale" in pd704[0].message
    # the same model with bf16 AMP: a warning, not an error
    assert "PD704" not in errors(peftdoctor.diagnose(model, training_args=Args(bf16=True)))


def test_fp16_trainables_really_break_the_grad_scaler():
    """What PD704 predicts: GradScaler refuses fp16 gradients."""
    model = get_peft_model(tiny_llama(dtype=torch.float16), lora(modules_to_save=["lm_head"]))
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler("cpu")
    opt = torch.optim.SGD(params, lr=0.1)
    ids = torch.randint(3, VOCAB, (1, 8))
    scaler.scale(model(input_ids=ids, labels=ids).loss.float()).backward()
    with pytest.raises(ValueError, match="unscale FP16"):
        scaler.unscale_(opt)


def test_no_trainable_parameters(tmp_path):
    get_peft_model(tiny_llama(), lora()).save_pretrained(tmp_path / "a")
    model = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a")  # is_trainable defaults to False
    assert "PD704" in errors(peftdoctor.diagnose(model))


def test_frozen_head_without_task_type():
    model = get_peft_model(tiny_bert_classifier(), lora(target_modules=["query", "value"]))
    heads = [f for f in peftdoctor.diagnose(model) if f.code == "PD701"]
    assert heads and "classifier" in heads[0].message
    fixed = get_peft_model(tiny_bert_classifier(), lora(target_modules=["query", "value"], task_type="SEQ_CLS"))
    assert errors(peftdoctor.diagnose(fixed)) == []


def test_hand_unfrozen_parameters_are_not_saved():
    model = get_peft_model(tiny_llama(), lora())
    model.base_model.model.lm_head.weight.requires_grad_(True)
    warn = [f for f in peftdoctor.diagnose(model) if f.code == "PD701"]
    assert warn and "lm_head.weight" in warn[0].message
    from peft import get_peft_model_state_dict

    assert not any("lm_head" in k for k in get_peft_model_state_dict(model))  # really not saved


def _tokenizer(size):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="t0")
    tok.add_tokens([f"new{i}" for i in range(size - VOCAB)])
    return tok


def test_tokenizer_larger_than_embeddings():
    model = get_peft_model(tiny_llama(), lora())
    findings = peftdoctor.diagnose(model, tokenizer=_tokenizer(VOCAB + 5))
    pd705 = [f for f in findings if f.code == "PD705"]
    assert pd705 and pd705[0].severity == Severity.ERROR and f"{VOCAB}..{VOCAB + 4}" in pd705[0].message


def test_added_tokens_with_frozen_embeddings():
    tok = _tokenizer(VOCAB + 5)
    base = tiny_llama()
    base.resize_token_embeddings(len(tok))
    frozen = get_peft_model(base, lora())
    assert [f.severity for f in peftdoctor.diagnose(frozen, tokenizer=tok) if f.code == "PD705"] == [
        Severity.WARNING]
    base = tiny_llama()
    base.resize_token_embeddings(len(tok))
    saved = get_peft_model(base, lora(modules_to_save=["embed_tokens", "lm_head"]))
    assert [f for f in peftdoctor.diagnose(saved, tokenizer=tok) if f.code == "PD705"] == []


def _lora_grads(model):
    ids = torch.randint(3, VOCAB, (1, 8))
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return [p.grad for n, p in model.named_parameters() if "lora_" in n]


def test_checkpointing_enable_adds_input_grads_in_this_transformers():
    """transformers 5 calls enable_input_require_grads inside gradient_checkpointing_enable."""
    model = get_peft_model(tiny_llama(), lora())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    assert "PD707" not in errors(peftdoctor.diagnose(model))
    assert all(g is not None for g in _lora_grads(model))


def test_reentrant_checkpointing_without_input_grads():
    model = get_peft_model(tiny_llama(), lora())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.disable_input_require_grads()
    assert "PD707" in errors(peftdoctor.diagnose(model))
    ids = torch.randint(3, VOCAB, (1, 8))
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = model(input_ids=ids, labels=ids).loss
    # what PD707 warns about really happens: no path from the loss to any LoRA weight
    assert not loss.requires_grad


def test_non_reentrant_checkpointing_needs_no_input_grads():
    model = get_peft_model(tiny_llama(), lora())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.disable_input_require_grads()
    assert "PD707" not in errors(peftdoctor.diagnose(model))
    assert all(g is not None for g in _lora_grads(model))


def test_disabled_and_merged_adapters():
    model = get_peft_model(tiny_llama(), lora())
    with model.disable_adapter():
        assert "PD708" in errors(peftdoctor.diagnose(model))
    assert "PD708" not in errors(peftdoctor.diagnose(model))
    model.merge_adapter()
    merged = [f for f in peftdoctor.diagnose(model) if f.code == "PD708"]
    assert merged and "merged" in merged[0].message


def test_plain_model_without_adapter():
    findings = peftdoctor.diagnose(tiny_llama())
    assert [f.severity for f in findings if f.code == "PD708"] == [Severity.WARNING]


def test_report_is_readable():
    model = get_peft_model(tiny_llama(), lora())
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(UnhealthyModel) as raised:
        peftdoctor.assert_healthy(model)
    text = str(raised.value)
    assert text.startswith("peftdoctor found 1 error(s) in the model:") and "PD704 [error]" in text
    assert "hint:" in text
