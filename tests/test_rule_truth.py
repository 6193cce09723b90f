"""The failures the static rules PD101-PD302 warn about really happen.

Each test runs the buggy snippet a rule flags with the installed torch,
transformers, peft (and trl) on tiny config-built models on CPU, and asserts
the concrete symptom: nested keys, zero trainable parameters, unchanged rows,
the real exception text. A control next to it shows the fixed form works, so
the symptom is caused by the mistake and not by the tiny setup.
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

from peft import (  # noqa: E402
    PeftModel,
    cast_mixed_precision_params,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from safetensors.torch import load_file  # noqa: E402
from tiny import VOCAB, tiny_llama, tiny_llama_classifier, tiny_bert_classifier  # noqa: E402
from transformers import (  # noqa: E402
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    Trainer,
    TrainingArguments,
)
from truth_helpers import (  # noqa: E402
    LMDataset,
    fp16_amp_step,
    logits,
    lora,
    make_nontrivial,
    tiny_tokenizer,
    token_batch,
    trainable_dtypes,
    trainable_names,
)

NESTED = "base_model.model.base_model.model."
FP16_UNSCALE = "Attempting to unscale FP16 gradients."
NO_GRAD_FN = "element 0 of tensors does not require grad and does not have a grad_fn"


def saved_keys(folder) -> list[str]:
    return list(load_file(os.path.join(folder, "adapter_model.safetensors")))


def trainer_args(folder, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(folder),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("truth")


@pytest.fixture(scope="module")
def adapters(work):
    """Two different non-trivial LoRA adapters for tiny_llama(seed=0), saved."""
    paths = {}
    for name, seed in (("a", 1), ("b", 2)):
        model = get_peft_model(tiny_llama(), lora())
        make_nontrivial(model, seed=seed)
        model.save_pretrained(work / name)
        paths[name] = str(work / name)
    return paths


@pytest.fixture(scope="module")
def base_dir(work):
    """tiny_llama saved like a hub checkpoint: a causal LM with no classifier head."""
    folder = work / "base"
    tiny_llama().save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------- PD101


def test_pd101_from_pretrained_on_a_peft_model_nests_keys_and_loads_nothing(adapters):
    ids = token_batch()
    base_out = logits(tiny_llama(), ids)
    good = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    good_out = logits(good, ids)
    assert not torch.allclose(good_out, base_out, atol=1e-4)  # the adapter matters

    wrapped = get_peft_model(tiny_llama(), lora())  # fresh LoRA: B = 0, a no-op
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        double = PeftModel.from_pretrained(wrapped, adapters["a"])

    lora_names = [n for n, _ in double.named_parameters() if "lora_" in n]
    assert lora_names and all(n.startswith(NESTED) for n in lora_names)
    assert isinstance(double.base_model.model, PeftModel)
    # Not one weight of adapter "a" arrived: the model is still the base model.
    assert torch.allclose(logits(double, ids), base_out, atol=1e-5)


def test_pd101_loading_onto_a_loaded_adapter_loses_both(adapters):
    ids = token_batch()
    base_out = logits(tiny_llama(), ids)
    only_a = logits(PeftModel.from_pretrained(tiny_llama(), adapters["a"]), ids)
    assert not torch.allclose(only_a, base_out, atol=1e-4)

    loaded = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        twice = PeftModel.from_pretrained(loaded, adapters["b"])
    # "b" never arrives (nested keys) and re-injecting "default" into the
    # already-LoRA q_proj/v_proj re-initialises "a" (lora_B = 0): base output.
    inner_b = [p for n, p in twice.named_parameters() if "lora_B" in n]
    assert inner_b and all(float(p.abs().sum()) == 0.0 for p in inner_b)
    assert torch.allclose(logits(twice, ids), base_out, atol=1e-5)


def test_pd101_reloading_onto_the_lora_tuner_base_model_loads_nothing(adapters):
    """`peft_model.base_model` is the LoraModel tuner with its layers injected, not the plain model:
    reloading onto it nests the keys (missing-keys warning) and the output is the base's."""
    ids = token_batch()
    base_out = logits(tiny_llama(), ids)
    wanted = logits(PeftModel.from_pretrained(tiny_llama(), adapters["a"]), ids)
    tuner = PeftModel.from_pretrained(tiny_llama(), adapters["a"]).base_model
    assert type(tuner).__name__ == "LoraModel"
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        again = PeftModel.from_pretrained(tuner, adapters["a"])
    assert torch.allclose(logits(again, ids), base_out, atol=1e-5)
    assert not torch.allclose(logits(again, ids), wanted, atol=1e-4)
    # Use instead: unload() gives the plain model back, and the adapter loads onto it.
    plain = PeftModel.from_pretrained(tiny_llama(), adapters["a"]).unload()
    assert torch.allclose(logits(PeftModel.from_pretrained(plain, adapters["a"]), ids), wanted, atol=1e-5)


def test_pd101_adapter_saved_from_double_wrap_does_not_load(adapters, tmp_path):
    wrapped = get_peft_model(tiny_llama(), lora())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        double = PeftModel.from_pretrained(wrapped, adapters["a"], is_trainable=True)
    make_nontrivial(double, seed=3)  # "train" it
    double.save_pretrained(tmp_path / "saved")

    keys = saved_keys(tmp_path / "saved")
    assert keys and all(k.startswith(NESTED) for k in keys)

    ids = token_batch()
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        reloaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "saved"))
    assert torch.allclose(logits(reloaded, ids), logits(tiny_llama(), ids), atol=1e-5)


def test_pd101_use_instead_load_adapter_on_the_plain_base(adapters):
    ids = token_batch()
    expected = logits(PeftModel.from_pretrained(tiny_llama(), adapters["b"]), ids)
    model = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    model.load_adapter(adapters["b"], adapter_name="b")
    model.set_adapter("b")
    assert not any(n.startswith(NESTED) for n, _ in model.named_parameters())
    assert torch.allclose(logits(model, ids), expected, atol=1e-5)


# --------------------------------------------------------------------- PD102


def test_pd102_get_peft_model_on_a_peft_model_nests_and_saves_unloadable_keys(tmp_path):
    first = get_peft_model(tiny_llama(), lora())
    with pytest.warns(UserWarning, match="modify a model with PEFT for a second time"):
        second = get_peft_model(first, lora())
    assert isinstance(second.base_model.model, PeftModel)
    assert trainable_names(second) and all(n.startswith(NESTED) for n in trainable_names(second))

    make_nontrivial(second, seed=4)
    second.save_pretrained(tmp_path / "saved")
    keys = saved_keys(tmp_path / "saved")
    assert keys and all(k.startswith(NESTED) for k in keys)
    ids = token_batch()
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        reloaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "saved"))
    assert torch.allclose(logits(reloaded, ids), logits(tiny_llama(), ids), atol=1e-5)


def test_pd102_get_peft_model_on_a_loaded_adapter_wipes_it(adapters):
    ids = token_batch()
    loaded = PeftModel.from_pretrained(tiny_llama(), adapters["a"], is_trainable=True)
    assert not torch.allclose(logits(loaded, ids), logits(tiny_llama(), ids), atol=1e-4)
    with pytest.warns(UserWarning, match="second time"):
        rewrapped = get_peft_model(loaded, lora())
    # The new "default" adapter replaced the loaded one (lora_B = 0 again).
    assert torch.allclose(logits(rewrapped, ids), logits(tiny_llama(), ids), atol=1e-5)


def test_pd102_sft_trainer_rejects_a_peft_model_with_peft_config(tmp_path):
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from trl import SFTConfig, SFTTrainer

    data = datasets.Dataset.from_dict({"text": ["w5 w6 w7 w8", "w9 w10 w11"] * 2})
    args = SFTConfig(
        str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
        use_cpu=True, save_strategy="no", max_length=16, disable_tqdm=True,
    )
    model = get_peft_model(tiny_llama(), lora())
    with pytest.raises(ValueError, match="You passed a `PeftModel` instance together with a `peft_config`"):
        SFTTrainer(model=model, args=args, train_dataset=data,
                   processing_class=tiny_tokenizer(), peft_config=lora())


# --------------------------------------------------------------------- PD103


def test_pd103_from_pretrained_without_is_trainable_is_frozen(adapters):
    frozen = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    assert frozen.get_nb_trainable_parameters()[0] == 0
    assert frozen.peft_config["default"].inference_mode is True

    resumable = PeftModel.from_pretrained(tiny_llama(), adapters["a"], is_trainable=True)
    assert resumable.get_nb_trainable_parameters()[0] > 0
    assert all("lora_" in n for n in trainable_names(resumable))


def test_pd103_trainer_on_frozen_adapter_fails_at_first_backward(adapters, tmp_path):
    model = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    trainer = Trainer(model=model, args=trainer_args(tmp_path), train_dataset=LMDataset())
    with pytest.raises(RuntimeError, match=NO_GRAD_FN):
        trainer.train()


def test_pd103_with_gradient_checkpointing_trainer_silently_trains_nothing(adapters, tmp_path):
    model = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    args = trainer_args(tmp_path, gradient_checkpointing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        result = Trainer(model=model, args=args, train_dataset=LMDataset()).train()
    assert result.global_step == 2 and result.training_loss > 0  # looks like training
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing moved


def test_pd103_hand_loop_optimizer_accepts_frozen_params_then_backward_fails(adapters):
    model = PeftModel.from_pretrained(tiny_llama(), adapters["a"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # no complaint here
    model.train()
    ids = token_batch()
    with pytest.raises(RuntimeError, match=NO_GRAD_FN):
        model(input_ids=ids, labels=ids).loss.backward()
    assert optimizer.param_groups[0]["params"]
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def test_pd103_lora_config_inference_mode_true_gives_nothing_to_train():
    model = get_peft_model(tiny_llama(), lora(inference_mode=True))
    assert model.get_nb_trainable_parameters()[0] == 0
    assert get_peft_model(tiny_llama(), lora()).get_nb_trainable_parameters()[0] > 0


# --------------------------------------------------------------------- PD201


def _seq_cls_batch():
    return {"input_ids": token_batch(), "labels": torch.tensor([0, 1])}


def _lm_batch():
    ids = token_batch()
    return {"input_ids": ids, "labels": ids}


def _fp16_classifier():
    return tiny_llama_classifier().to(torch.float16)


def _fp16_llama():
    return tiny_llama(dtype=torch.float16)


def _from_pretrained_seq_cls(tmp_path):
    get_peft_model(tiny_llama_classifier(), lora(task_type="SEQ_CLS")).save_pretrained(tmp_path / "cls")
    return PeftModel.from_pretrained(_fp16_classifier(), str(tmp_path / "cls"), is_trainable=True)


# (case, build, batch, which trainable param names stay fp16)
CRASHING = [
    ("task_type SEQ_CLS: score copy",
     lambda tmp: get_peft_model(_fp16_classifier(), lora(task_type="SEQ_CLS")), _seq_cls_batch, "score"),
    ("modules_to_save=['score']",
     lambda tmp: get_peft_model(_fp16_classifier(), lora(modules_to_save=["score"])), _seq_cls_batch, "score"),
    ("modules_to_save=['lm_head']",
     lambda tmp: get_peft_model(_fp16_llama(), lora(modules_to_save=["lm_head"])), _lm_batch, "lm_head"),
    ("autocast_adapter_dtype=False",
     lambda tmp: get_peft_model(_fp16_llama(), lora(), autocast_adapter_dtype=False), _lm_batch, "lora_"),
    (".half() after get_peft_model",
     lambda tmp: get_peft_model(tiny_llama(), lora()).half(), _lm_batch, "lora_"),
    ("from_pretrained(is_trainable=True) SEQ_CLS adapter",
     _from_pretrained_seq_cls, _seq_cls_batch, "score"),
]


@pytest.mark.parametrize("case,build,batch,fp16_part", CRASHING, ids=[c[0] for c in CRASHING])
def test_pd201_fp16_trainable_params_crash_under_fp16_amp(case, build, batch, fp16_part, tmp_path):
    model = build(tmp_path)
    fp16 = [n for n, d in trainable_dtypes(model).items() if d == torch.float16]
    assert fp16 and all(fp16_part in n for n in fp16)
    with pytest.raises(ValueError, match=FP16_UNSCALE):
        fp16_amp_step(model, **batch())


FINE = [
    ("plain LoRA on fp16 base (peft autocasts adapters to fp32)",
     lambda: get_peft_model(_fp16_llama(), lora()), _lm_batch),
    ("trainable_token_indices on fp16 base",
     lambda: get_peft_model(_fp16_llama(), lora(trainable_token_indices=[3, 4])), _lm_batch),
    ("embed_tokens in target_modules on fp16 base",
     lambda: get_peft_model(_fp16_llama(), lora(target_modules=["q_proj", "embed_tokens"])), _lm_batch),
]


@pytest.mark.parametrize("case,build,batch", FINE, ids=[c[0] for c in FINE])
def test_pd201_adapter_weights_alone_are_upcast_and_train(case, build, batch):
    model = build()
    assert set(trainable_dtypes(model).values()) == {torch.float32}
    fp16_amp_step(model, **batch())


def test_pd201_fixes_float_loop_and_cast_mixed_precision_params():
    looped = get_peft_model(_fp16_classifier(), lora(task_type="SEQ_CLS"))
    for param in looped.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    fp16_amp_step(looped, **_seq_cls_batch())

    helper = get_peft_model(_fp16_classifier(), lora(task_type="SEQ_CLS"))
    cast_mixed_precision_params(helper, dtype=torch.float16)
    assert set(trainable_dtypes(helper).values()) == {torch.float32}
    frozen = {p.dtype for p in helper.parameters() if not p.requires_grad}
    assert frozen == {torch.float16}
    fp16_amp_step(helper, **_seq_cls_batch())


def test_pd201_prepare_model_for_kbit_training_casts_a_non_quantized_model_to_fp32():
    model = prepare_model_for_kbit_training(_fp16_classifier())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in model.parameters())
    peft_model = get_peft_model(model, lora(task_type="SEQ_CLS"))
    assert set(trainable_dtypes(peft_model).values()) == {torch.float32}
    fp16_amp_step(peft_model, **_seq_cls_batch())


def test_pd201_prepare_model_for_kbit_training_after_get_peft_model_freezes_the_adapter():
    # Counts as a cast only before get_peft_model: afterwards it also freezes LoRA.
    model = get_peft_model(_fp16_llama(), lora(modules_to_save=["lm_head"]))
    model = prepare_model_for_kbit_training(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.get_nb_trainable_parameters()[0] == 0


# --------------------------------------------------------------------- PD301


def _classifier_from(base_dir, seed):
    """What AutoModelForSequenceClassification.from_pretrained(<causal LM>) does:
    the body loads, the `score` head is freshly, randomly initialized."""
    torch.manual_seed(seed)
    return LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=3, pad_token_id=0)


def test_pd301_head_is_random_frozen_unsaved_and_lost_on_reload(base_dir, tmp_path):
    first, second = _classifier_from(base_dir, 1), _classifier_from(base_dir, 2)
    assert not torch.equal(first.score.weight, second.score.weight)  # fresh random head

    model = get_peft_model(first, lora())  # no task_type, no modules_to_save
    assert not any("score" in n for n in trainable_names(model))
    assert model.base_model.model.score.weight.requires_grad is False
    model.save_pretrained(tmp_path / "no_task")
    assert not any("score" in k for k in saved_keys(tmp_path / "no_task"))

    ids = token_batch()
    reloaded = PeftModel.from_pretrained(_classifier_from(base_dir, 3), str(tmp_path / "no_task"))
    assert not torch.allclose(logits(model, ids), logits(reloaded, ids), atol=1e-3)


def test_pd301_use_instead_task_type_trains_and_saves_the_head(base_dir, tmp_path):
    model = get_peft_model(_classifier_from(base_dir, 1), lora(task_type="SEQ_CLS"))
    assert "base_model.model.score.modules_to_save.default.weight" in trainable_names(model)
    model.save_pretrained(tmp_path / "seq_cls")
    assert "base_model.model.score.weight" in saved_keys(tmp_path / "seq_cls")

    ids = token_batch()
    reloaded = PeftModel.from_pretrained(_classifier_from(base_dir, 3), str(tmp_path / "seq_cls"))
    assert torch.allclose(logits(model, ids), logits(reloaded, ids), atol=1e-5)


def test_pd301_bert_classifier_head_not_trainable_without_task_type(tmp_path):
    model = get_peft_model(tiny_bert_classifier(), lora(target_modules=["query", "value"]))
    assert not any("classifier" in n for n in trainable_names(model))
    model.save_pretrained(tmp_path / "bert")
    assert not any("classifier" in k for k in saved_keys(tmp_path / "bert"))
    fixed = get_peft_model(tiny_bert_classifier(), lora(target_modules=["query", "value"],
                                                          modules_to_save=["classifier"]))
    assert any("classifier" in n for n in trainable_names(fixed))


# --------------------------------------------------------------------- PD302

NEW_TOKENS = ["<new1>", "<new2>"]


def _resized(base_dir, seed):
    """The usual new-token recipe: add tokens, resize the embeddings."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(NEW_TOKENS)
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def _train_a_few_steps(model, tokenizer, steps=3):
    ids = torch.tensor(tokenizer(["w5 <new1> w6 <new2>", "<new1> <new2> w9 w10"])["input_ids"])
    assert (ids >= VOCAB).any()  # the batch really uses the new tokens
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return ids


def _new_rows(model):
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return (base.get_input_embeddings().weight[VOCAB:].detach().clone(),
            base.get_output_embeddings().weight[VOCAB:].detach().clone())


def _effective_new_rows(model, tokenizer):
    """The input vectors the model actually uses for the new tokens."""
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(NEW_TOKENS)])
    with torch.no_grad():
        return model.get_input_embeddings()(ids)[0].clone()


@pytest.fixture(scope="module")
def trained_without_embeddings(base_dir, work):
    model, tokenizer = _resized(base_dir, seed=1)
    model = get_peft_model(model, lora())
    before = _new_rows(model)
    ids = _train_a_few_steps(model, tokenizer)
    with pytest.warns(UserWarning, match="embedding layer has been resized"):
        model.save_pretrained(work / "auto")
    model.save_pretrained(work / "no_embed", save_embedding_layers=False)
    return dict(model=model, tokenizer=tokenizer, before=before, ids=ids,
                auto=str(work / "auto"), no_embed=str(work / "no_embed"))


def test_pd302_new_rows_stay_at_random_init(trained_without_embeddings):
    t = trained_without_embeddings
    assert all(p.requires_grad is False for p in t["model"].get_input_embeddings().parameters())
    emb, head = _new_rows(t["model"])
    assert torch.equal(emb, t["before"][0]) and torch.equal(head, t["before"][1])
    lora_b = [p for n, p in t["model"].named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # training did happen


def test_pd302_auto_save_keeps_the_random_rows(trained_without_embeddings):
    t = trained_without_embeddings
    keys = load_file(os.path.join(t["auto"], "adapter_model.safetensors"))
    assert "base_model.model.model.embed_tokens.weight" in keys
    assert "base_model.model.lm_head.weight" in keys
    assert torch.equal(keys["base_model.model.model.embed_tokens.weight"][VOCAB:], t["before"][0])


def test_pd302_save_embedding_layers_false_loses_the_rows(trained_without_embeddings, base_dir):
    t = trained_without_embeddings
    assert not any("embed_tokens" in k or "lm_head" in k for k in saved_keys(t["no_embed"]))
    fresh, _ = _resized(base_dir, seed=7)
    reloaded = PeftModel.from_pretrained(fresh, t["no_embed"])
    assert not torch.equal(_new_rows(reloaded)[0], t["before"][0])

    fresh, _ = _resized(base_dir, seed=7)
    kept = PeftModel.from_pretrained(fresh, t["auto"])  # control: auto-saved rows come back
    assert torch.equal(_new_rows(kept)[0], t["before"][0])


def test_pd302_loading_onto_a_base_that_was_not_resized(trained_without_embeddings, base_dir):
    t = trained_without_embeddings
    with pytest.raises(RuntimeError, match=r"size mismatch for base_model\.model\.model\.embed_tokens\.weight"):
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), t["auto"])
    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), t["no_embed"])
    with pytest.raises(IndexError, match="index out of range"):
        loaded(input_ids=t["ids"])


def test_pd302_resize_after_get_peft_model_leaves_the_new_rows_frozen_and_unsaved(base_dir, tmp_path):
    """Tokens added and the embeddings resized after the wrap: the new matrices keep requires_grad=False
    (transformers carries the old flag over), training leaves the new rows as they were, and the
    adapter file holds no embedding."""
    torch.manual_seed(3)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora())
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(NEW_TOKENS)
    model.resize_token_embeddings(len(tokenizer))
    assert model.get_input_embeddings().weight.shape[0] == VOCAB + len(NEW_TOKENS)
    assert model.get_input_embeddings().weight.requires_grad is False
    before = _new_rows(model)
    _train_a_few_steps(model, tokenizer)
    after = _new_rows(model)
    assert all(torch.equal(b, a) for b, a in zip(before, after))
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert saved and not [k for k in saved if "embed" in k or "lm_head" in k]


@pytest.mark.parametrize("config", [
    lora(modules_to_save=["embed_tokens", "lm_head"]),
    lora(trainable_token_indices={"embed_tokens": [VOCAB, VOCAB + 1]}),
    lora(target_modules=["q_proj", "v_proj", "embed_tokens", "lm_head"]),
], ids=["modules_to_save", "trainable_token_indices", "target_modules"])
def test_pd302_use_instead_new_rows_are_learned(config, base_dir):
    model, tokenizer = _resized(base_dir, seed=1)
    model = get_peft_model(model, config)
    before = _effective_new_rows(model, tokenizer)
    _train_a_few_steps(model, tokenizer)
    assert not torch.allclose(_effective_new_rows(model, tokenizer), before)


def _what_trl_does(trainer_class, model, config, **kwargs) -> str:
    """Build a TRL trainer with a PeftModel plus peft_config and say what became of the model."""
    from peftdoctor.rules.pd102_peft_on_peft import IGNORES, MERGES, RAISES, WRAPS

    try:
        trainer = trainer_class(model=model, peft_config=config, **kwargs)
    except ValueError as exc:
        assert "You passed a `PeftModel` instance together with a `peft_config`" in str(exc)
        return RAISES
    built = trainer.model
    if isinstance(built.base_model.model, PeftModel):
        return WRAPS
    if built is model and built.peft_config["default"].r == 4:
        return IGNORES
    assert isinstance(built, PeftModel) and built.peft_config["default"].r == config.r
    return MERGES


def test_pd102_trl_trainers_do_what_the_version_table_says_for_the_installed_trl(tmp_path):
    """The row of PD102's TRL table for the installed release (the current one: 1.16.0) is what TRL does."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from peftdoctor.facts.api_versions import parse_version
    from peftdoctor.rules.pd102_peft_on_peft import RAISES, trl_behaviour
    from peftdoctor.versions import CURRENT_RELEASES

    installed = parse_version(trl.__version__)
    common = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
                  disable_tqdm=True)
    text = datasets.Dataset.from_dict({"text": ["w5 w6 w7 w8", "w9 w10 w11"] * 2})
    pairs = datasets.Dataset.from_dict({"prompt": ["w5 w6", "w7 w8"], "chosen": [" w9", " w10"],
                                        "rejected": [" w11", " w12"]})

    sft = _what_trl_does(SFTTrainer, get_peft_model(tiny_llama(), lora()), lora(r=2),
                         args=SFTConfig(str(tmp_path / "sft"), max_length=16, **common),
                         train_dataset=text, processing_class=tiny_tokenizer())
    dpo = _what_trl_does(DPOTrainer, get_peft_model(tiny_llama(), lora()), lora(r=2),
                         args=DPOConfig(str(tmp_path / "dpo"), max_length=16, **common),
                         train_dataset=pairs, processing_class=tiny_tokenizer())
    assert sft == trl_behaviour("SFTTrainer", installed)
    assert dpo == trl_behaviour("DPOTrainer", installed)
    if trl.__version__ == CURRENT_RELEASES["trl"]:
        assert sft == dpo == RAISES

    # The fix for the trainer form: the PeftModel alone is trained as it is, not wrapped again.
    model = get_peft_model(tiny_llama(), lora())
    trainer = SFTTrainer(model=model, args=SFTConfig(str(tmp_path / "alone"), max_length=16, **common),
                         train_dataset=text, processing_class=tiny_tokenizer())
    assert trainer.model is model and not isinstance(trainer.model.base_model.model, PeftModel)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
