"""The failures PD305, PD105, PD502 and PD306 warn about really happen.

Real torch, transformers and peft on tiny config-built models on CPU, never the hub. Each
buggy form is run and its concrete symptom asserted; a control shows the fixed form works.
"""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(__file__))

from peft import PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tiny import tiny_llama  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402
from truth_helpers import logits, lora, make_nontrivial, token_batch  # noqa: E402


def trained_adapter():
    """A PeftModel on tiny_llama(seed=0) whose adapter changes the outputs, as a trained one does."""
    model = get_peft_model(tiny_llama(), lora())
    make_nontrivial(model)
    return model


# --------------------------------------------------------------------- PD305


def test_pd305_wrapper_saved_after_merge_and_unload_is_an_empty_adapter(tmp_path):
    model = trained_adapter()
    batch = token_batch()
    merged_logits = logits(model, batch)
    assert (merged_logits - logits(tiny_llama(), batch)).abs().max() > 0.1  # the adapter matters

    model.merge_and_unload()  # result discarded
    assert (logits(model, batch) - merged_logits).abs().max() < 1e-5  # the wrapper still serves the merge
    model.save_pretrained(tmp_path / "out")

    saved = sorted(os.listdir(tmp_path / "out"))
    assert "config.json" not in saved and "model.safetensors" not in saved  # no merged model
    assert load_file(tmp_path / "out" / "adapter_model.safetensors") == {}  # an adapter with no tensors
    with pytest.warns(UserWarning, match="missing adapter keys"):
        reloaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "out"))
    assert (logits(reloaded, batch) - logits(tiny_llama(), batch)).abs().max() == 0  # just the base
    assert (logits(reloaded, batch) - merged_logits).abs().max() > 0.1


def test_pd305_wrapper_saved_after_unload_is_an_empty_adapter_too(tmp_path):
    model = trained_adapter()
    model.unload()
    model.save_pretrained(tmp_path / "out")
    assert load_file(tmp_path / "out" / "adapter_model.safetensors") == {}


def test_pd305_trainer_save_model_after_a_discarded_merge_saves_the_empty_wrapper(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = trained_adapter()
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "run"), report_to=[], use_cpu=True))
    merged = model.merge_and_unload()  # the trainer still holds the wrapper
    trainer.save_model(str(tmp_path / "out"))
    saved = sorted(os.listdir(tmp_path / "out"))
    assert "model.safetensors" not in saved
    assert load_file(tmp_path / "out" / "adapter_model.safetensors") == {}

    trainer.model = merged  # the fixed form: the trainer saves the merged model
    trainer.save_model(str(tmp_path / "fixed"))
    assert "model.safetensors" in os.listdir(tmp_path / "fixed")


def test_pd305_an_adapter_added_after_unload_is_saved_with_its_weights(tmp_path):
    model = trained_adapter()
    model.merge_and_unload()
    model.add_adapter("second", lora())
    model.set_adapter("second")
    model.save_pretrained(tmp_path / "out")
    assert len(load_file(tmp_path / "out" / "second" / "adapter_model.safetensors")) > 0


def test_pd305_use_instead_the_returned_model_saves_the_merge(tmp_path):
    model = trained_adapter()
    batch = token_batch()
    expected = logits(model, batch)
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")

    assert "model.safetensors" in os.listdir(tmp_path / "merged")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "merged")
    assert (logits(reloaded, batch) - expected).abs().max() < 1e-5


# --------------------------------------------------------------------- PD105


@pytest.fixture(scope="module")
def saved_adapters(tmp_path_factory):
    """Two different non-trivial LoRA adapters for tiny_llama(seed=0), saved."""
    folder = tmp_path_factory.mktemp("adapters")
    for name, seed in (("a", 1), ("b", 2)):
        model = get_peft_model(tiny_llama(), lora())
        make_nontrivial(model, seed=seed)
        model.save_pretrained(folder / name)
    return {name: str(folder / name) for name in ("a", "b")}


def test_pd105_load_adapter_leaves_the_first_adapter_active(saved_adapters):
    batch = token_batch()
    only_a = logits(PeftModel.from_pretrained(tiny_llama(), saved_adapters["a"]), batch)
    only_b = logits(PeftModel.from_pretrained(tiny_llama(), saved_adapters["b"]), batch)
    model = PeftModel.from_pretrained(tiny_llama(), saved_adapters["a"])
    model.load_adapter(saved_adapters["b"], adapter_name="b", is_trainable=True)

    assert model.active_adapter == "default"
    assert (logits(model, batch) - only_a).abs().max() == 0  # the forward pass is adapter a's
    assert (logits(model, batch) - only_b).abs().max() > 0.1
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(".b." in name for name in trainable)  # b is trainable, and unused
    loss = model(input_ids=batch, labels=batch).loss
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        loss.backward()


def test_pd105_with_a_trainable_first_adapter_the_loaded_one_is_never_trained(saved_adapters):
    batch = token_batch()
    model = get_peft_model(tiny_llama(), lora())
    model.load_adapter(saved_adapters["b"], adapter_name="b", is_trainable=True)
    loaded = {name: param.detach().clone() for name, param in model.named_parameters() if ".b." in name}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()

    assert model.active_adapter == "default"
    after = dict(model.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in loaded.items())  # b did not move
    assert any(after[name].grad is not None for name in after if ".default." in name)  # default learned


def test_pd105_use_instead_set_adapter_trains_the_loaded_adapter(saved_adapters):
    batch = token_batch()
    only_b = logits(PeftModel.from_pretrained(tiny_llama(), saved_adapters["b"]), batch)
    model = PeftModel.from_pretrained(tiny_llama(), saved_adapters["a"])
    model.load_adapter(saved_adapters["b"], adapter_name="b", is_trainable=True)
    model.set_adapter("b")

    assert (logits(model, batch) - only_b).abs().max() == 0
    before = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    moved = [name for name, param in model.named_parameters() if name in before
             and not torch.equal(param, before[name])]
    assert moved and all(".b." in name for name in moved)


# --------------------------------------------------------------------- PD502


def randomize_adapter(model, seed: int = 1, scale: float = 0.1) -> None:
    """Random values in every LoRA factor (an embedding's lora_embedding_A starts at zero), as training
    would leave them, so the adapter on the embedding changes the outputs too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def merged_minus_adapter(tmp_path, tied: bool, merge: str = "merge_and_unload", **config):
    """Max abs difference between the adapter's logits and the merged model's, in memory and reloaded
    (None for merge_adapter)."""
    batch = token_batch()
    base = tiny_llama(tie_word_embeddings=tied)
    assert (base.lm_head.weight is base.model.embed_tokens.weight) is tied
    model = get_peft_model(base, lora(**config))
    randomize_adapter(model)
    with torch.no_grad():  # a trained copy of a modules_to_save layer differs from the original
        for name, param in model.named_parameters():
            if "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(2)) * 0.1)
    expected = logits(model, batch)
    assert (expected - logits(tiny_llama(tie_word_embeddings=tied), batch)).abs().max() > 0.1
    if merge == "merge_adapter":  # merged in place, LoRA layers kept: nothing to reload as a plain model
        model.merge_adapter()
        return (logits(model, batch) - expected).abs().max().item(), None
    merged = model.merge_and_unload()
    in_memory = (logits(merged, batch) - expected).abs().max().item()
    merged.save_pretrained(tmp_path / "merged")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "merged")
    return in_memory, (logits(reloaded, batch) - expected).abs().max().item()


@pytest.mark.parametrize("targets, merge", [
    (["q_proj", "v_proj", "lm_head"], "merge_and_unload"),
    (["q_proj", "v_proj", "embed_tokens"], "merge_and_unload"),
    (["q_proj", "v_proj", "embed_tokens"], "merge_adapter"),
], ids=["lm_head", "embed_tokens", "embed_tokens-merge_adapter"])
def test_pd502_merging_an_adapter_on_a_tied_layer_changes_the_other(tmp_path, targets, merge):
    in_memory, reloaded = merged_minus_adapter(tmp_path, tied=True, merge=merge, target_modules=targets)
    assert in_memory > 0.5  # float32 merges of an untied base agree within 1e-4 (below)
    assert reloaded is None or reloaded > 0.5


def test_pd502_the_same_adapter_on_an_untied_base_merges_exactly(tmp_path):
    in_memory, reloaded = merged_minus_adapter(tmp_path, tied=False, target_modules=["q_proj", "v_proj", "lm_head"])
    assert in_memory < 1e-4 and reloaded < 1e-4


def test_pd502_use_instead_modules_to_save_head_merges_exactly_on_a_tied_base(tmp_path):
    in_memory, reloaded = merged_minus_adapter(tmp_path, tied=True, target_modules=["q_proj", "v_proj"],
                                               modules_to_save=["lm_head"])
    assert in_memory < 1e-4 and reloaded < 1e-4


# --------------------------------------------------------------------- PD306

CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def merged_folder(tmp_path):
    model = trained_adapter()
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    return tmp_path / "merged"


def test_pd306_merged_folder_without_tokenizer_cannot_be_used_on_its_own(tmp_path):
    from transformers import AutoTokenizer, pipeline

    folder = merged_folder(tmp_path)
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors"]
    with pytest.raises((OSError, ValueError)):
        AutoTokenizer.from_pretrained(folder)
    with pytest.raises((OSError, ValueError)):
        pipeline("text-generation", model=str(folder))


def test_pd306_use_instead_tokenizer_saved_next_to_the_merged_model(tmp_path):
    from transformers import AutoTokenizer, pipeline
    from truth_helpers import tiny_tokenizer

    folder = merged_folder(tmp_path)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    loaded = AutoTokenizer.from_pretrained(folder)
    assert loaded.chat_template == CHAT_TEMPLATE and len(loaded) == len(tokenizer)
    generated = pipeline("text-generation", model=str(folder))("w3 w4", max_new_tokens=2)[0]["generated_text"]
    assert generated.startswith("w3 w4") and len(generated) > len("w3 w4")  # two new tokens decoded
