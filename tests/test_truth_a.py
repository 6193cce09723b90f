"""Truth tests for PD501, PD104, PD304 and PD503: the failure each rule prevents happens with the real
torch / transformers / peft (and bitsandbytes) on tiny models on CPU, and the fixed form works."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from peft import PeftModel, get_peft_model
from tiny import tiny_llama
from transformers import LlamaForCausalLM
from truth_helpers import logits, lora, make_nontrivial, token_batch

# bitsandbytes 0.50.2 runs its 4-bit and 8-bit layers on CPU (measured here; the dev extra installs it).
BNB_REASON = "bitsandbytes is not installed (pip install bitsandbytes: its 4-bit/8-bit layers run on CPU)"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama base (hidden size 64: a whole bitsandbytes block per row) and a trained-looking
    LoRA adapter for it, both saved to disk."""
    folder = tmp_path_factory.mktemp("pd501")
    base_dir, adapter_dir = folder / "base", folder / "adapter"
    tiny_llama(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4) \
        .save_pretrained(base_dir)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora())
    make_nontrivial(model)
    model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def _merge_shift(base, adapter_dir):
    """How far merging moves the logits of the adapter model, the merged q_proj layer, and peft's warnings."""
    model = PeftModel.from_pretrained(base, adapter_dir)
    batch = token_batch()
    before = logits(model, batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = model.merge_and_unload()
    after = logits(merged, batch)
    layer = type(merged.model.layers[0].self_attn.q_proj).__name__
    return (after - before).abs().max().item(), layer, {str(w.message) for w in caught}


@pytest.mark.parametrize("bits,layer,least", [(4, "Linear4bit", 0.05), (8, "Linear8bitLt", 1e-3)])
def test_pd501_merge_into_a_bitsandbytes_base_rounds_the_adapter_away(saved, bits, layer, least):
    pytest.importorskip("bitsandbytes", reason=BNB_REASON)
    from transformers import BitsAndBytesConfig

    base_dir, adapter_dir = saved
    flags = {"load_in_4bit": True, "bnb_4bit_compute_dtype": torch.float32} if bits == 4 else {"load_in_8bit": True}
    base = LlamaForCausalLM.from_pretrained(base_dir, quantization_config=BitsAndBytesConfig(**flags))
    shift, merged_layer, messages = _merge_shift(base, adapter_dir)
    assert merged_layer == layer  # the merged weight is quantized again
    assert f"Merge lora module to {bits}-bit linear may get different generations due to rounding errors." in messages
    assert shift > least  # measured: 0.30 (4-bit), 0.013 (8-bit)


def test_pd501_use_instead_merge_into_a_float_base_keeps_the_outputs(saved):
    base_dir, adapter_dir = saved
    shift, merged_layer, _ = _merge_shift(LlamaForCausalLM.from_pretrained(base_dir), adapter_dir)
    assert merged_layer == "Linear"
    assert shift < 1e-4  # measured: 4e-7


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory):
    """A tiny Llama base and two different trained-looking adapters A and B for it."""
    folder = tmp_path_factory.mktemp("pd104")
    base_dir = folder / "base"
    tiny_llama().save_pretrained(base_dir)
    paths = []
    for seed, name in ((1, "a"), (2, "b")):
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora())
        make_nontrivial(model, seed=seed)
        model.save_pretrained(folder / name)
        paths.append(folder / name)
    return base_dir, *paths


def test_pd104_the_base_runs_the_adapter_after_from_pretrained(two_adapters):
    base_dir, adapter_a, _ = two_adapters
    batch = token_batch()
    plain = logits(LlamaForCausalLM.from_pretrained(base_dir), batch)
    base = LlamaForCausalLM.from_pretrained(base_dir)
    tuned = PeftModel.from_pretrained(base, adapter_a)
    assert torch.equal(logits(base, batch), logits(tuned, batch))  # "the base" is the fine-tuned model
    assert (logits(tuned, batch) - plain).abs().max().item() > 0.1  # a real base differs (measured: 0.40)


def test_pd104_a_second_from_pretrained_takes_over_the_first_wrapper(two_adapters):
    base_dir, adapter_a, adapter_b = two_adapters
    batch = token_batch()
    expected_a = logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), adapter_a), batch)
    base = LlamaForCausalLM.from_pretrained(base_dir)
    model_a = PeftModel.from_pretrained(base, adapter_a)
    model_b = PeftModel.from_pretrained(base, adapter_b)
    assert torch.equal(logits(model_a, batch), logits(model_b, batch))  # model_a now gives B's outputs
    assert (logits(model_a, batch) - expected_a).abs().max().item() > 0.1  # not A any more (measured: 0.34)


def test_pd104_get_peft_model_on_a_wrapped_base_resets_the_trained_adapter(two_adapters):
    base_dir, _, _ = two_adapters
    base = LlamaForCausalLM.from_pretrained(base_dir)
    trained = get_peft_model(base, lora())  # what a TRL trainer given peft_config= does to `base`
    make_nontrivial(trained)
    get_peft_model(base, lora())
    assert all(p.abs().sum().item() == 0 for n, p in trained.named_parameters() if "lora_B" in n)


def test_pd104_use_instead_disable_adapter_and_load_adapter_keep_models_apart(two_adapters):
    base_dir, adapter_a, adapter_b = two_adapters
    batch = token_batch()
    plain = logits(LlamaForCausalLM.from_pretrained(base_dir), batch)
    alone_a = logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), adapter_a), batch)
    alone_b = logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), adapter_b), batch)
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), adapter_a, adapter_name="a")
    with model.disable_adapter():
        assert torch.allclose(logits(model, batch), plain, atol=1e-5)
    model.load_adapter(adapter_b, adapter_name="b")
    assert torch.allclose(logits(model, batch), alone_a, atol=1e-5)
    model.set_adapter("b")
    assert torch.allclose(logits(model, batch), alone_b, atol=1e-5)


def test_pd304_a_pickled_peft_model_does_not_load_back(tmp_path):
    model = get_peft_model(tiny_llama(), lora())
    torch.save(model, tmp_path / "model.pt")
    model.save_pretrained(tmp_path / "adapter")
    pickled = (tmp_path / "model.pt").stat().st_size
    adapter = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert pickled > 10 * adapter  # the whole base goes in (measured: 73 kB against 3 kB)
    with pytest.raises(Exception, match="Weights only load failed"):  # torch >= 2.6: weights_only=True
        torch.load(tmp_path / "model.pt")
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
        model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=False))


def test_pd304_use_instead_save_pretrained_round_trips(tmp_path):
    model = get_peft_model(tiny_llama(), lora())
    make_nontrivial(model)
    model.save_pretrained(tmp_path / "adapter")
    batch = token_batch()
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter")
    assert torch.allclose(logits(reloaded, batch), logits(model, batch), atol=1e-6)


def test_pd503_without_quantization_config_the_model_loads_in_full_precision(saved):
    pytest.importorskip("bitsandbytes", reason=BNB_REASON)
    from transformers import BitsAndBytesConfig

    base_dir, _ = saved
    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)  # built, not passed
    unquantized = LlamaForCausalLM.from_pretrained(base_dir)
    quantized = LlamaForCausalLM.from_pretrained(base_dir, quantization_config=bnb_config)  # the fixed form
    assert type(unquantized.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert type(quantized.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    ratio = unquantized.get_memory_footprint() / quantized.get_memory_footprint()
    assert ratio > 3  # measured: 4.8 (8x for the Linear weights alone)
