"""Truth tests for PD501 (quantization flags from typed settings' defaults), PD304 (a PeftModel's whole
state_dict saved where from_pretrained reads an adapter) and PD406 (fp16 training with left padding): what
each rule claims, measured with the real torch / transformers / peft (bitsandbytes, pydantic) on tiny
models on CPU."""

from __future__ import annotations

import warnings
from typing import Optional

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from peft import AutoPeftModelForCausalLM, get_peft_model
from tiny import tiny_llama
from transformers import LlamaForCausalLM
from truth_helpers import logits, lora, make_nontrivial, token_batch

BNB_REASON = "bitsandbytes is not installed (pip install bitsandbytes: its 4-bit/8-bit layers run on CPU)"


# ------------------------------------------------------------------ PD501
def _settings_classes():
    """Typed settings as a project declares them: the quantization section defaults to 4-bit."""
    pydantic = pytest.importorskip("pydantic", reason="pydantic is not installed (the dev extra installs it)")
    BaseModel, Field = pydantic.BaseModel, pydantic.Field

    class QuantSettings(BaseModel):
        load_in_8bit: Optional[bool] = Field(False, description="8-bit")
        load_in_4bit: Optional[bool] = Field(True, description="4-bit")
        bnb_4bit_compute_dtype: Optional[str] = Field("float32")

    class ModelSettings(BaseModel):
        bitsandbytes: QuantSettings = Field(None)

    class Settings(BaseModel):
        model: ModelSettings

    return Settings


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A trained-looking LoRA adapter whose config names its local tiny base (hidden size 64, so a
    bitsandbytes block spans a row)."""
    folder = tmp_path_factory.mktemp("pd501o")
    tiny_llama(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4) \
        .save_pretrained(folder / "base")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(folder / "base"), lora())
    make_nontrivial(model)
    model.save_pretrained(folder / "adapter")
    return folder / "adapter"


def _merge(adapter_dir, quantization_config):
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, quantization_config=quantization_config)
    batch = token_batch()
    before = logits(model, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = model.merge_and_unload()
    return type(merged.model.layers[0].self_attn.q_proj).__name__, (logits(merged, batch) - before).abs().max().item()


def test_pd501_a_settings_file_that_omits_the_flag_merges_into_4bit(adapter):
    pytest.importorskip("bitsandbytes", reason=BNB_REASON)
    yaml = pytest.importorskip("yaml")
    from transformers import BitsAndBytesConfig

    settings = _settings_classes()(**yaml.safe_load("model:\n  bitsandbytes:\n    bnb_4bit_compute_dtype: float32\n"))
    config = BitsAndBytesConfig(**settings.model.bitsandbytes.model_dump())
    assert config.load_in_4bit is True  # the declared default, since the file does not set it
    layer, shift = _merge(adapter, config)
    assert layer == "Linear4bit"
    assert shift > 0.05  # measured: 0.30


def test_pd501_any_bitsandbytes_config_quantizes_even_with_no_flag_set(adapter):
    """transformers 5.24 picks its 4-bit quantizer for a BitsAndBytesConfig whose load_in_8bit is not True:
    setting both flags to False in the settings file does not turn quantization off."""
    pytest.importorskip("bitsandbytes", reason=BNB_REASON)
    from transformers import BitsAndBytesConfig

    settings = _settings_classes()(model={"bitsandbytes": {"load_in_4bit": False}})
    layer, shift = _merge(adapter, BitsAndBytesConfig(**settings.model.bitsandbytes.model_dump()))
    assert layer == "Linear4bit"
    assert shift > 0.05  # measured: 0.30, the same as load_in_4bit=True


def test_pd501_use_instead_no_quantization_config_merges_exactly(adapter):
    layer, shift = _merge(adapter, None)
    assert layer == "Linear"
    assert shift < 1e-4  # measured: 4e-7


# ------------------------------------------------------------------ PD304
@pytest.fixture(scope="module")
def trained_peft(tmp_path_factory):
    """A tiny Llama base, another base of the same shape, and a trained-looking PeftModel on the first."""
    folder = tmp_path_factory.mktemp("pd304o")
    tiny_llama(seed=0).save_pretrained(folder / "base")
    tiny_llama(seed=5).save_pretrained(folder / "other_base")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(folder / "base"), lora())
    make_nontrivial(model)
    return folder, model


def test_pd304_a_whole_state_dict_as_adapter_model_bin_overwrites_the_base_it_is_loaded_on(trained_peft):
    from peft import PeftModel

    folder, model = trained_peft
    by_hand, proper = folder / "by_hand", folder / "proper"
    model.peft_config["default"].save_pretrained(by_hand)
    torch.save(model.state_dict(), by_hand / "adapter_model.bin")
    model.save_pretrained(proper)
    batch = token_batch()
    trained = logits(model, batch)
    assert torch.equal(logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder / "base"), by_hand),
                              batch), trained)  # peft 0.21 loads the adapter from the adapter-named keys
    other_base = LlamaForCausalLM.from_pretrained(folder / "other_base")
    on_other = logits(PeftModel.from_pretrained(other_base, by_hand), batch)
    meant = logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder / "other_base"), proper), batch)
    assert torch.equal(on_other, trained)  # the saved base weights replaced the base it was given
    assert (on_other - meant).abs().max().item() > 0.1  # measured: 0.34
    size = (by_hand / "adapter_model.bin").stat().st_size / (proper / "adapter_model.safetensors").stat().st_size
    assert size > 10  # measured: 18x


def test_pd304_a_state_dict_file_or_folder_without_adapter_config_does_not_load(trained_peft):
    from peft import PeftModel

    folder, model = trained_peft
    (folder / "bare").mkdir()
    torch.save(model.state_dict(), folder / "bare" / "adapter_model.bin")
    torch.save(model.state_dict(), folder / "lora_state.pt")
    for given in (folder / "bare", folder / "lora_state.pt"):
        with pytest.raises(ValueError, match="Can't find 'adapter_config.json'"):
            PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder / "base"), str(given))


def test_pd304_use_instead_save_pretrained_keeps_the_given_base(trained_peft):
    from peft import PeftModel

    folder, model = trained_peft
    model.save_pretrained(folder / "adapter")
    batch = token_batch()
    assert torch.equal(logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder / "base"),
                                                        folder / "adapter"), batch), logits(model, batch))
    plain_other = logits(LlamaForCausalLM.from_pretrained(folder / "other_base"), batch)
    on_other = logits(PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder / "other_base"),
                                                folder / "adapter"), batch)
    assert (on_other - logits(model, batch)).abs().max().item() > 0.1  # the other base's own weights run
    assert (on_other - plain_other).abs().max().item() > 0.01  # with the adapter on top


# ------------------------------------------------------------------ PD406 (fp16 training, left padding)
ROWS = ["w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 <eos>", "w20 w21 w22 <eos>", "w30 w31 w32 w33 w34 w35 <eos>",
        "w40 <eos>"]


def _lm_batch(side: str, mask_first_token: bool = False) -> dict:
    """Rows padded on `side`, labels = input_ids with every pad position at -100 (what
    DataCollatorForLanguageModeling does); optionally the first real token of each row masked too."""
    from truth_helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = side
    encoded = tokenizer(ROWS, return_tensors="pt", padding=True)
    labels = encoded["input_ids"].clone()
    labels[encoded["attention_mask"] == 0] = -100
    if mask_first_token:
        labels[torch.arange(len(ROWS)), encoded["attention_mask"].argmax(dim=1)] = -100
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_pd406_fp16_amp_training_with_left_padding_stays_finite(attention):
    """The write-up's "fix weird overflow issue with fp16 training" (padding_side='right'): on CPU, fp16 AMP
    steps on left-padded rows, whose pad positions attend to nothing, give finite losses and weights."""
    model = get_peft_model(tiny_llama(attn_implementation=attention, dtype=torch.float16), lora())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    batch = _lm_batch("left")
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))  # measured: 0 NaN in 20 steps, eager and sdpa, AMP and pure fp16
    assert all(torch.isfinite(p).all() for p in params)
    assert losses[-1] < losses[0]  # it learns


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pd406_left_padding_changes_the_loss_by_one_target_per_row_not_by_fp16(attention, dtype):
    """Left and right padding give the same loss once the first real token of each row is not a target; the
    difference (6.5e-3 eager, 8e-3 sdpa, the same in float32) is that target, predicted from a pad position."""
    model = get_peft_model(tiny_llama(attn_implementation=attention, dtype=getattr(torch, dtype)), lora()).eval()
    with torch.no_grad():
        right = model(**_lm_batch("right")).loss.item()
        left = model(**_lm_batch("left")).loss.item()
        left_without_first = model(**_lm_batch("left", mask_first_token=True)).loss.item()
    assert abs(left_without_first - right) < 1e-5  # measured: 0 (float32), 1e-6 (float16)
    assert abs(left - right) > 1e-3  # measured: 6.5e-3 (eager), 8.1e-3 (sdpa)
