"""The failures PD617-PD622 report really happen, with real torch / transformers / peft on CPU.

PD617: LoRA on lm_head of a base that ties it to the input embedding; merging moves both layers.
PD619: peft scales rsLoRA / rank_pattern / alpha_pattern modules by their own alpha_m / sqrt(r_m); one scale for
every module (what vLLM's PEFTHelper computes from r, lora_alpha, use_rslora) gives other logits.
PD618: a PiSSA / OLoRA adapter saved without conversion is wrong on the original base as a plain LoRA
(what a serving engine applies), and a randomized PiSSA is wrong even through peft's own loader.
PD620: embedding rows saved with the adapter: a base resized to len(tokenizer) does not load rows padded to a
multiple, and token ids past the saved rows raise IndexError.
PD621: a model saved with its LoRA layers still injected loads with the adapted weights missing (random).
PD622: a bf16 base merged in float32 saves twice the bytes; a folder without tokenizer files cannot give one.
Each has a control: the fixed form gives the same outputs.
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

from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from tiny import VOCAB, tiny_llama  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

warnings.filterwarnings("ignore")


def train(model, steps: int = 3) -> None:
    """Real AdamW steps on random tokens, so the adapter moves off its initialisation."""
    torch.manual_seed(2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, VOCAB, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@torch.no_grad()
def logits(model, ids):
    return model(input_ids=ids).logits


IDS = torch.arange(3, 19).reshape(2, 8)


@pytest.fixture(scope="module")
def tied_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tied") / "base"
    tiny_llama(tie_word_embeddings=True).save_pretrained(folder)
    return folder


def merge_gap(base_folder, config) -> float:
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder), config)
    train(model)
    unmerged = logits(model, IDS)
    merged = model.merge_and_unload()
    return (logits(merged, IDS) - unmerged).abs().max().item()


def test_pd617_merging_lora_on_a_tied_lm_head_changes_the_embeddings_too(tied_base):
    base = AutoModelForCausalLM.from_pretrained(tied_base)
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    gap = merge_gap(tied_base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"]))
    assert gap > 0.05, gap


def test_pd617_control_modules_to_save_and_untied_base_merge_exactly(tied_base, tmp_path):
    kept_out = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"])
    assert merge_gap(tied_base, kept_out) < 1e-4
    untied = tmp_path / "untied"
    tiny_llama(tie_word_embeddings=False).save_pretrained(untied)
    assert merge_gap(untied, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])) < 1e-4


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "base"
    tiny_llama().save_pretrained(folder)
    return folder


def trained_adapter(base_folder, folder, method: str):
    """Train a tiny adapter with `method` and save it as is; the trained model's logits."""
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=method))
    train(model)
    model.save_pretrained(folder)
    return logits(model, IDS)


def as_plain_lora(base_folder, folder):
    """What a loader that ignores init_lora_weights computes (a serving engine): W x + scale * B A x on the
    original weights."""
    config = PeftConfig.from_pretrained(folder)
    config.init_lora_weights = True
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), folder, config=config)


@pytest.mark.parametrize("method, least", [("pissa", 0.05), ("olora", 0.1)])
def test_pd618_unconverted_adapter_is_wrong_as_a_plain_lora_on_the_original_base(llama_base, tmp_path, method, least):
    trained = trained_adapter(llama_base, tmp_path / "adapter", method)
    gap = (logits(as_plain_lora(llama_base, tmp_path / "adapter"), IDS) - trained).abs().max().item()
    assert gap > least, gap
    # peft's own loader runs the init again on the original base, which rebuilds the residual exactly here
    redone = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_base), tmp_path / "adapter")
    assert (logits(redone, IDS) - trained).abs().max().item() < 1e-5


def test_pd618_randomized_pissa_is_wrong_even_through_peft(llama_base, tmp_path):
    trained = trained_adapter(llama_base, tmp_path / "adapter", "pissa_niter_2")
    redone = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_base), tmp_path / "adapter")
    gap = (logits(redone, IDS) - trained).abs().max().item()
    assert gap > 0.01, gap


def test_pd618_control_converted_adapter_fits_the_original_base(llama_base, tmp_path):
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama_base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights="pissa"))
    model.peft_config["default"].init_lora_weights = True
    model.save_pretrained(tmp_path / "initial")
    model.peft_config["default"].init_lora_weights = "pissa"
    train(model)
    trained = logits(model, IDS)
    model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=str(tmp_path / "initial"))
    for on_original in (as_plain_lora(llama_base, tmp_path / "converted"),
                        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_base),
                                                  tmp_path / "converted")):
        assert (logits(on_original, IDS) - trained).abs().max().item() < 1e-4


def test_pd619_pattern_scales_are_what_peft_applies_and_one_uniform_scale_differs(llama_base):
    import math

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True,
                        rank_pattern={"q_proj": 8}, alpha_pattern={"v_proj": 32})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama_base), config)
    train(model)
    lora_layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    scales = {name.rsplit(".", 1)[-1]: module.scaling["default"] for name, module in lora_layers}
    assert math.isclose(scales["q_proj"], 8 / math.sqrt(8)) and math.isclose(scales["v_proj"], 32 / math.sqrt(4))
    trained = logits(model, IDS)
    for _, module in lora_layers:
        module.scaling["default"] = 8 / math.sqrt(4)  # lora_alpha / sqrt(r) for every module
    gap = (logits(model, IDS) - trained).abs().max().item()
    assert gap > 0.01, gap


def saved_with_embeddings(llama_base, folder, pad_to_multiple_of=None):
    from truth_helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens(["<new0>", "<new1>"])  # 130 ids
    base = AutoModelForCausalLM.from_pretrained(llama_base)
    base.resize_token_embeddings(len(tok), pad_to_multiple_of=pad_to_multiple_of)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    model.save_pretrained(folder, save_embedding_layers=True)
    tok.save_pretrained(folder)
    return tok


def test_pd620_padded_rows_do_not_load_on_a_base_resized_to_len_tokenizer(llama_base, tmp_path):
    tok = saved_with_embeddings(llama_base, tmp_path / "adapter", pad_to_multiple_of=8)
    base = AutoModelForCausalLM.from_pretrained(llama_base)
    base.resize_token_embeddings(len(tok))  # 130 rows; the adapter saved 136
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(base, tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(llama_base)
    base.resize_token_embeddings(136)  # control: the row count in the adapter's header
    PeftModel.from_pretrained(base, tmp_path / "adapter")


def test_pd620_token_ids_past_the_saved_rows_raise(llama_base, tmp_path):
    tok = saved_with_embeddings(llama_base, tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(llama_base)
    base.resize_token_embeddings(len(tok))
    model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    logits(model, tok("w3 <new1>", return_tensors="pt").input_ids)  # control: every id has a row
    tok.add_tokens(["<later>"])  # a tokenizer that grew after training
    with pytest.raises(IndexError, match="index out of range"):
        logits(model, tok("w3 <later>", return_tensors="pt").input_ids)


@pytest.fixture(scope="module")
def bf16_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16") / "base"
    tiny_llama(dtype=torch.bfloat16).save_pretrained(folder)
    return folder


def lora_on(base_folder, **load):
    torch.manual_seed(1)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(base_folder, **load),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def test_pd621_unmerged_save_loads_with_the_adapted_weights_random(bf16_base, tmp_path):
    model = lora_on(bf16_base)
    model.get_base_model().save_pretrained(tmp_path / "unmerged")  # the LoRA layers are still injected
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "unmerged", output_loading_info=True)
    assert "model.layers.0.self_attn.q_proj.weight" in info["missing_keys"]
    assert any(".lora_A." in key for key in info["unexpected_keys"])
    base = AutoModelForCausalLM.from_pretrained(bf16_base)
    assert not torch.equal(loaded.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    # control: merged first, the folder loads completely and gives the adapter's logits
    expected = logits(model, IDS)
    model.merge_and_unload().save_pretrained(tmp_path / "merged")
    merged, info = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (logits(merged, IDS).float() - expected.float()).abs().max().item() < 0.02  # bf16 rounding of the merge


def test_pd622_bf16_base_merged_in_float32_is_twice_the_size(bf16_base, tmp_path):
    lora_on(bf16_base, dtype=torch.float32).merge_and_unload().save_pretrained(tmp_path / "float32")
    lora_on(bf16_base).merge_and_unload().save_pretrained(tmp_path / "auto")  # control: the base's own dtype
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("float32", "auto")}
    base_size = (bf16_base / "model.safetensors").stat().st_size
    assert size["float32"] > 1.8 * base_size and size["auto"] < 1.1 * base_size, (size, base_size)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "float32").dtype == torch.float32


def test_pd622_a_folder_without_tokenizer_files_gives_no_tokenizer(bf16_base, tmp_path):
    from transformers import AutoTokenizer

    lora_on(bf16_base).merge_and_unload().save_pretrained(tmp_path / "merged")
    with pytest.raises((OSError, ValueError)):
        AutoTokenizer.from_pretrained(tmp_path / "merged")
