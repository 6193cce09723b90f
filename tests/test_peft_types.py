"""Adapters of every common peft type, made by real peft: inspect and deep inspect raise no false alarm.

Found this way: OFT's r=0 (with oft_block_size) was reported as an invalid rank, and prompt-tuning adapters
were reported with an ignored `prompt_embeddings` key and a failed forward comparison.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import tiny_llama  # noqa: E402

from peftdoctor.config import Config  # noqa: E402
from peftdoctor.finding import Severity  # noqa: E402
from peftdoctor.inspect.run import inspect_paths  # noqa: E402

CONFIGS = {
    "dora": lambda: peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True),
    "rank-pattern": lambda: peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 8},
                                            alpha_pattern={"v_proj": 32}),
    "trainable-tokens": lambda: peft.LoraConfig(r=4, target_modules=["q_proj"], trainable_token_indices=[3, 5]),
    "loha": lambda: peft.LoHaConfig(r=4, target_modules=["q_proj", "v_proj"]),
    "lokr": lambda: peft.LoKrConfig(r=4, target_modules=["q_proj", "v_proj"]),
    "ia3": lambda: peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    "vera": lambda: peft.VeraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    "oft-block-size": lambda: peft.OFTConfig(r=0, oft_block_size=4, target_modules=["q_proj", "v_proj"]),
    "boft": lambda: peft.BOFTConfig(boft_block_size=4, target_modules=["q_proj", "v_proj"]),
    "adalora": lambda: peft.AdaLoraConfig(init_r=6, target_r=4, target_modules=["q_proj", "v_proj"], total_step=10),
    "prompt-tuning": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "prefix-tuning": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "ln-tuning": lambda: peft.LNTuningConfig(target_modules=["input_layernorm"]),
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("peft-types")
    base = root / "base"
    tiny_llama().save_pretrained(base)
    made = {}
    warnings.simplefilter("ignore")
    for name, make in CONFIGS.items():
        model = peft.get_peft_model(tiny_llama(), make())
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # "trained": every trainable tensor moved away from its init
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        folder = root / name
        model.save_pretrained(folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base)
        (folder / "adapter_config.json").write_text(json.dumps(config))
        made[name] = folder
    return made


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_header_inspect_is_clean(adapters, name):
    findings = inspect_paths([adapters[name]], config=Config(), show_summary=False).findings
    # rank/alpha patterns are reported as information: their per-module scales (PD619)
    expected = ["PD619"] if name == "rank-pattern" else []
    assert [f.code for f in findings] == expected, [f"{f.code} {f.message}" for f in findings]
    assert all(f.severity == Severity.INFO for f in findings)


@pytest.mark.parametrize("name", ["dora", "ia3", "loha", "oft-block-size", "prompt-tuning", "prefix-tuning"])
def test_deep_inspect_has_no_warning_or_error(adapters, name):
    findings = inspect_paths([adapters[name]], config=Config(), deep=True, device="cpu",
                             show_summary=False).findings
    serious = [f for f in findings if f.severity != Severity.INFO]
    assert serious == [], [f"{f.code} {f.message}" for f in serious]


def _trained(model, config):
    wrapped = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in wrapped.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return wrapped


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=128, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                               num_heads=2, decoder_start_token_id=0))


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=32, image_size=8, patch_size=4, num_labels=3))


ARCHITECTURES = {
    # transformers >= 5.23 names ViT's attention projections q_proj / v_proj (formerly query / value)
    "vit-classifier": (_vit, lambda: peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                     modules_to_save=["classifier"])),
    "t5-seq2seq": (_t5, lambda: peft.LoraConfig(r=4, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_other_architectures_deep_inspect_cleanly(tmp_path, name):
    """A vision model has no token embedding and takes pixel_values: no crash, no false alarm."""
    make_model, make_config = ARCHITECTURES[name]
    make_model().save_pretrained(tmp_path / "base")
    _trained(make_model(), make_config()).save_pretrained(tmp_path / "adapter")
    findings = inspect_paths([tmp_path / "adapter"], config=Config(), base=str(tmp_path / "base"), deep=True,
                             device="cpu", show_summary=False).findings
    assert {f.code for f in findings} == {"PD702", "PD704"}, [f"{f.code} {f.message}" for f in findings]
    assert all(f.severity == Severity.INFO for f in findings)
