"""Deep checks on real saved adapters built from tiny config-built models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from tiny import VOCAB, tiny_bert_classifier, tiny_gpt2, tiny_llama, tiny_llama_classifier  # noqa: E402

from peftdoctor.finding import Severity  # noqa: E402
from peftdoctor.runtime.deep import BaseNotFound, RuntimeMissing, deep_check  # noqa: E402
from peftdoctor.runtime.device import pick_device, pick_dtype, tolerance_for  # noqa: E402


def train(model, steps: int = 3, labels: bool = False):
    """A few real optimizer steps so the adapter differs from its init."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(3, VOCAB, (2, 12), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        batch["labels"] = torch.tensor([0, 1]) if labels else ids
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


def codes(findings, severity=None):
    return sorted({f.code for f in findings if severity is None or f.severity == severity})


def errors(findings):
    return [f for f in findings if f.severity == Severity.ERROR]


def lora(**kw):
    kw.setdefault("r", 4)
    kw.setdefault("lora_alpha", 8)
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    return LoraConfig(**kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("deep")


@pytest.fixture(scope="module")
def llama_base(work):
    folder = work / "llama-base"
    tiny_llama().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def good_llama(work, llama_base):
    model = train(get_peft_model(tiny_llama(), lora(task_type="CAUSAL_LM")))
    model.save_pretrained(work / "good-llama")
    return work / "good-llama"


def test_good_llama_adapter_passes_with_numbers(good_llama, llama_base):
    findings = deep_check(good_llama, str(llama_base), device="cpu")
    assert errors(findings) == [] and codes(findings, Severity.WARNING) == []
    merge = [f for f in findings if f.code == "PD702"]
    assert len(merge) == 1 and merge[0].severity == Severity.INFO
    assert "max abs diff" in merge[0].message and merge[0].extra["max_rel"] < tolerance_for("float32")
    trainable = [f for f in findings if f.code == "PD704"]
    assert trainable[0].extra["dtypes"] == {"float32": 2 * 2 * (4 * 16 + 16 * 4)}


def test_base_from_adapter_config_when_local(work, llama_base):
    model = train(get_peft_model(tiny_llama(), lora()))
    model.peft_config["default"].base_model_name_or_path = str(llama_base)
    model.save_pretrained(work / "named-base")
    assert errors(deep_check(work / "named-base", None, device="cpu")) == []


def test_base_not_local_is_a_clear_error(good_llama, work):
    with pytest.raises(BaseNotFound, match="not a local folder"):
        deep_check(good_llama, "nobody/no-such-model-xyz", device="cpu")
    with pytest.raises(BaseNotFound, match="no base model"):
        deep_check(good_llama, None, device="cpu")  # the tiny model has no name_or_path


def test_double_wrapped_save(work, llama_base):
    first = get_peft_model(tiny_llama(), lora())
    first.save_pretrained(work / "first")
    wrapped = PeftModel.from_pretrained(get_peft_model(tiny_llama(), lora()), work / "first", is_trainable=True)
    train(wrapped)
    wrapped.save_pretrained(work / "double")
    findings = deep_check(work / "double", str(llama_base), device="cpu")
    assert {"PD701", "PD703", "PD706"} <= set(codes(findings, Severity.ERROR))
    nested = [f for f in findings if f.code == "PD706"][0]
    assert "base_model.model.base_model.model." in nested.message
    assert "did not load" in [f for f in findings if f.code == "PD703"][0].message


def test_untrained_adapter_is_a_no_op(work, llama_base):
    get_peft_model(tiny_llama(), lora()).save_pretrained(work / "untrained")
    findings = deep_check(work / "untrained", str(llama_base), device="cpu")
    assert codes(findings, Severity.ERROR) == ["PD703"]
    assert "never trained" in [f for f in findings if f.code == "PD703"][0].message


def test_gpt2_conv1d_adapter_passes(work):
    tiny_gpt2().save_pretrained(work / "gpt2-base")
    model = train(get_peft_model(tiny_gpt2(), lora(target_modules=["c_attn"], fan_in_fan_out=True)))
    model.save_pretrained(work / "gpt2-adapter")
    findings = deep_check(work / "gpt2-adapter", str(work / "gpt2-base"), device="cpu")
    assert errors(findings) == []
    assert [f.severity for f in findings if f.code == "PD702"] == [Severity.INFO]


def test_bert_classifier_with_head_passes(work):
    tiny_bert_classifier().save_pretrained(work / "bert-base")
    model = train(get_peft_model(tiny_bert_classifier(), lora(task_type="SEQ_CLS",
                                                               target_modules=["query", "value"])), labels=True)
    model.save_pretrained(work / "bert-adapter")
    findings = deep_check(work / "bert-adapter", str(work / "bert-base"), device="cpu")
    assert errors(findings) == []


def test_classifier_without_its_head(work):
    """Trained as a classifier on an encoder-only checkpoint, without task_type: the head is lost."""
    tiny_bert_classifier().bert.save_pretrained(work / "bert-encoder")  # a BertModel: no head saved
    model = train(get_peft_model(tiny_bert_classifier(), lora(target_modules=["query", "value"])), labels=True)
    model.save_pretrained(work / "headless")
    findings = deep_check(work / "headless", str(work / "bert-encoder"), device="cpu")
    # keys start with "bert." (the classifier's layout) and fit nothing in a BertModel: the
    # adapter does not load at all, and the model with it behaves as the base
    assert {"PD701", "PD703"} <= set(codes(findings, Severity.ERROR))


def test_fp16_saved_adapter_on_fp32_base_is_upcast_by_load(work, llama_base):
    """peft copies fp16 saved weights into the fp32 adapter tensors: nothing to report."""
    model = train(get_peft_model(tiny_llama(), lora()))
    model.half().save_pretrained(work / "fp16-saved")
    findings = deep_check(work / "fp16-saved", str(llama_base), device="cpu")
    assert codes(findings, Severity.ERROR) == []
    assert [f.extra["dtypes"] for f in findings if f.code == "PD704"] == [{"float32": 512}]


def test_fp16_base_with_modules_to_save_gives_fp16_trainables(work):
    """autocast_adapter_dtype upcasts LoRA tensors only; the modules_to_save copy stays fp16."""
    tiny_llama(dtype=torch.float16).save_pretrained(work / "llama-fp16")
    model = train(get_peft_model(tiny_llama(), lora(modules_to_save=["lm_head"])))
    model.half().save_pretrained(work / "fp16-mts")
    findings = deep_check(work / "fp16-mts", str(work / "llama-fp16"), device="cpu")
    pd704 = [f for f in findings if f.code == "PD704" and f.severity == Severity.ERROR]
    assert pd704 and "lm_head" in pd704[0].message
    assert pd704[0].extra["dtypes"]["float16"] == VOCAB * 16


def test_resized_tokenizer_without_saved_embeddings(work, llama_base):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB + 12)}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="t0")
    base = tiny_llama()
    base.resize_token_embeddings(len(tok))
    model = train(get_peft_model(base, lora()))
    model.save_pretrained(work / "resized", save_embedding_layers=False)
    tok.save_pretrained(work / "resized")
    findings = deep_check(work / "resized", str(llama_base), device="cpu")
    pd705 = [f for f in findings if f.code == "PD705"]
    assert pd705 and pd705[0].severity == Severity.ERROR
    assert f"{VOCAB}..{VOCAB + 11}" in pd705[0].message


def test_saved_resized_embeddings_are_loaded_after_resize(work, llama_base):
    base = tiny_llama()
    base.resize_token_embeddings(VOCAB + 8)
    model = train(get_peft_model(base, lora(modules_to_save=["embed_tokens", "lm_head"])))
    model.save_pretrained(work / "resized-saved")
    findings = deep_check(work / "resized-saved", str(llama_base), device="cpu")
    assert codes(findings, Severity.ERROR) == []
    assert "PD705" in codes(findings, Severity.WARNING)


def test_unmatched_target_module_is_reported(work, llama_base):
    model = train(get_peft_model(tiny_llama(), lora(target_modules=["q_proj", "query_key_value"])))
    model.save_pretrained(work / "unmatched")
    findings = deep_check(work / "unmatched", str(llama_base), device="cpu")
    assert any(f.code == "PD701" and "query_key_value" in f.message for f in findings)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_bases_merge_within_tolerance(work, dtype):
    name = str(dtype).replace("torch.", "")
    tiny_llama(dtype=dtype).save_pretrained(work / f"base-{name}")
    train(get_peft_model(tiny_llama(), lora(target_modules="all-linear"))).save_pretrained(work / f"adapter-{name}")
    findings = deep_check(work / f"adapter-{name}", str(work / f"base-{name}"), device="cpu")
    merge = [f for f in findings if f.code == "PD702"]
    assert [f.severity for f in merge] == [Severity.INFO]
    assert merge[0].extra["dtype"] == name
    assert 0 < merge[0].extra["max_abs"] and merge[0].extra["max_rel"] <= tolerance_for(name)


def _scaled_adapter(folder, factor: float, targets):
    """A real trained adapter whose weights are `factor` times larger (a far too high learning rate)."""
    model = train(get_peft_model(tiny_llama(), lora(target_modules=targets)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.mul_(factor)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fp16_base(work):
    tiny_llama(dtype=torch.float16).save_pretrained(work / "base-fp16-big")
    return work / "base-fp16-big"


def test_large_adapter_merged_into_fp16_disagrees(work, fp16_base, llama_base):
    """W + BA rounded to fp16 loses W where BA is large: merged outputs differ from unmerged."""
    adapter = _scaled_adapter(work / "big-all-linear", 8.0, "all-linear")
    merge = [f for f in deep_check(adapter, str(fp16_base), device="cpu") if f.code == "PD702"]
    assert merge and merge[0].severity == Severity.ERROR and "disagree beyond tolerance" in merge[0].message
    assert merge[0].extra["max_rel"] > tolerance_for("float16")
    # the same adapter on the float32 base merges cleanly: the loss is the dtype's
    ok = [f for f in deep_check(adapter, str(llama_base), device="cpu") if f.code == "PD702"]
    assert [f.severity for f in ok] == [Severity.INFO]


def test_large_adapter_unmerge_does_not_restore_fp16_base(work, fp16_base):
    adapter = _scaled_adapter(work / "big-qv", 10.0, ["q_proj", "v_proj"])
    merge = [f for f in deep_check(adapter, str(fp16_base), device="cpu") if f.code == "PD702"]
    assert merge and merge[0].severity == Severity.ERROR and "does not restore" in merge[0].message
    assert merge[0].extra["unmerge_rel"] > tolerance_for("float16")


def test_no_merge_check_skips_merge(good_llama, llama_base):
    findings = deep_check(good_llama, str(llama_base), device="cpu", merge_check=False)
    assert "PD702" not in codes(findings)


def test_llama_classifier_score_head(work):
    tiny_llama_classifier().save_pretrained(work / "llama-cls-base")
    model = train(get_peft_model(tiny_llama_classifier(), lora(task_type="SEQ_CLS")), labels=True)
    model.save_pretrained(work / "llama-cls")
    findings = deep_check(work / "llama-cls", str(work / "llama-cls-base"), device="cpu")
    assert errors(findings) == []


def test_pick_device_prefers_cuda_then_mps():
    assert pick_device("auto", cuda_count=2, mps_available=True) == "cuda:0"
    assert pick_device("auto", cuda_count=0, mps_available=True) == "mps"
    assert pick_device("auto", cuda_count=0, mps_available=False) == "cpu"
    assert pick_device("cuda", cuda_count=1, mps_available=False) == "cuda:0"
    assert pick_device("cuda:1", cuda_count=2, mps_available=False) == "cuda:1"
    for bad in ("cuda:3", "tpu", "cuda:x"):
        with pytest.raises(ValueError):
            pick_device(bad, cuda_count=2, mps_available=False)


def test_pick_dtype_reads_the_base_config():
    assert pick_dtype("auto", {"dtype": "bfloat16"}) == "bfloat16"
    assert pick_dtype("auto", {"torch_dtype": "float16"}) == "float16"
    assert pick_dtype("auto", {}) == "float32"
    assert pick_dtype("float16", {"dtype": "bfloat16"}) == "float16"
    with pytest.raises(ValueError):
        pick_dtype("int8", {})


def test_runtime_missing_message():
    assert 'pip install "peftdoctor[runtime]"' in str(RuntimeMissing("torch"))


def test_importing_runtime_modules_stays_light():
    code = ("import sys, peftdoctor.runtime.codes, peftdoctor.runtime.deep, peftdoctor.runtime.diagnose, "
            "peftdoctor.registry as r; r.all_rules(); "
            "bad=[m for m in ('torch','transformers','peft') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_deep_rule_has_a_doc():
    from peftdoctor.registry import doc_path, rules_of_kind

    deep = rules_of_kind("deep")
    assert [r.code for r in deep] == ["PD701", "PD702", "PD703", "PD704", "PD705", "PD706", "PD707", "PD708",
                                          "PD709"]
    for rule in deep:
        text = doc_path(rule.code).read_text()
        assert text.startswith(f"# {rule.code}: {rule.name}\n")
        for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead",
                        "## Versions", "## References"):
            assert section in text
