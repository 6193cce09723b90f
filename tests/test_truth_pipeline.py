"""A transformers pipeline runs the model it is given as it is: it never calls .eval(). So PD405's failure
(LoRA dropout left on, outputs random between calls) happens through `pipeline("text-generation", ...)` too,
with the installed transformers and peft on a tiny config-built Llama; the control calls .eval() first."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
sys.path.insert(0, os.path.dirname(__file__))

from peft import get_peft_model  # noqa: E402
from tiny import tiny_llama  # noqa: E402
from transformers import pipeline  # noqa: E402
from transformers.utils import logging  # noqa: E402
from truth_helpers import lora, make_nontrivial, tiny_tokenizer  # noqa: E402

warnings.filterwarnings("ignore")
logging.set_verbosity_error()  # the pipeline names PeftModel as an unlisted class; it runs it all the same


def greedy_outputs(model, runs: int = 4) -> set[str]:
    generate = pipeline("text-generation", model=model, tokenizer=tiny_tokenizer())
    return {generate("w3 w4 w5 w6", max_new_tokens=12, do_sample=False)[0]["generated_text"] for _ in range(runs)}


def dropout_adapter():
    model = get_peft_model(tiny_llama().eval(), lora(lora_dropout=0.5))
    make_nontrivial(model)
    return model


def test_pd405_a_generation_pipeline_keeps_train_mode_and_its_outputs_vary():
    model = dropout_adapter()
    outputs = greedy_outputs(model)
    assert model.training and len(outputs) > 1  # greedy decoding of one prompt: several different texts


def test_pd405_control_eval_before_the_pipeline_makes_it_deterministic():
    model = dropout_adapter().eval()
    assert len(greedy_outputs(model)) == 1


def test_pd104_a_pipeline_on_the_wrapped_base_runs_the_adapter():
    """get_peft_model injects the adapter into the base object: a pipeline on `base`, built before the wrap
    or after it, gives the fine-tuned text, the same as the wrapper's; a base loaded on its own gives another;
    after unload() the early pipeline gives the base's text again."""
    base = tiny_llama().eval()
    built_before = pipeline("text-generation", model=base, tokenizer=tiny_tokenizer())
    plain = built_before("w3 w4 w5 w6", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    tuned = get_peft_model(base, lora())
    make_nontrivial(tuned)
    tuned.eval()
    on_base, on_tuned = greedy_outputs(base, runs=1), greedy_outputs(tuned, runs=1)
    early = built_before("w3 w4 w5 w6", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert on_base == on_tuned == {early} and early != plain
    tuned.unload()
    assert built_before("w3 w4 w5 w6", max_new_tokens=12, do_sample=False)[0]["generated_text"] == plain


def test_pd405_training_the_wrapper_leaves_the_wrapped_base_in_train_mode(tmp_path):
    """A trainer trains the PeftModel; the base object it was made from holds the same LoRA layers and is in
    train mode after trainer.train() too, so a pipeline built on the base samples with dropout on."""
    from transformers import Trainer, TrainingArguments
    from truth_helpers import LMDataset

    base = tiny_llama().eval()
    tuned = get_peft_model(base, lora(lora_dropout=0.5))
    make_nontrivial(tuned)
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True)
    Trainer(model=tuned, args=args, train_dataset=LMDataset()).train()
    assert base.training and len(greedy_outputs(base)) > 1
    base.eval()
    assert len(greedy_outputs(base)) == 1
