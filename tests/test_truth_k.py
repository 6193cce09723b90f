"""What PD301 says happens does happen, with the installed torch / transformers / peft on tiny models on CPU.

For each kind of task_type PD301 flags on a model with a fresh head, the real get_peft_model: a generation task
type raises AttributeError; no task type, FEATURE_EXTRACTION or another head's task type leave the head frozen,
unsaved and lost on reload. The controls: the matching task type trains, saves and reloads the head, and so does
the other of SEQ_CLS / TOKEN_CLS, which PD301 therefore leaves alone.
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
from tiny import llama_config  # noqa: E402
from transformers import (  # noqa: E402
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    LlamaModel,
    LlamaPreTrainedModel,
)
from truth_helpers import lora, token_batch, trainable_names  # noqa: E402

from peftdoctor.config import Config  # noqa: E402
from peftdoctor.engine import check_source  # noqa: E402


class ValueHeadModel(LlamaPreTrainedModel):
    """A project's own reward model: a Llama body and a fresh `score` head, built on LlamaPreTrainedModel."""

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = torch.nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()


HEADS = {LlamaForSequenceClassification: "score", LlamaForTokenClassification: "score",
         LlamaForQuestionAnswering: "qa_outputs", ValueHeadModel: "score"}


def task_model(cls, head_seed: int):
    """The same body every time (as from_pretrained loads it), with a head drawn from `head_seed` (as
    transformers initialises the head the checkpoint lacks)."""
    torch.manual_seed(0)
    model = cls(llama_config(num_labels=3, pad_token_id=0))
    torch.manual_seed(head_seed)
    torch.nn.init.normal_(getattr(model, HEADS[cls]).weight)
    return model


@torch.no_grad()
def head_output(model, input_ids):
    """The head's output: a classifier's logits, a question-answering model's start logits."""
    model.eval()
    out = model(input_ids=input_ids)
    return out.start_logits if hasattr(out, "start_logits") else out.logits


def head_saved_trained_reloaded(cls, task, folder) -> tuple[bool, bool, bool]:
    """(head trainable, head weights in the saved file, reloaded onto a fresh head gives the same logits)."""
    model = get_peft_model(task_model(cls, 1), lora(task_type=task) if task else lora())
    head = HEADS[cls]
    trained = any(f".{head}." in name for name in trainable_names(model))
    with torch.no_grad():  # what training does: every trainable weight moves
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.5)
    model.save_pretrained(folder)
    saved = any(f".{head}." in key for key in load_file(os.path.join(folder, "adapter_model.safetensors")))
    reloaded = PeftModel.from_pretrained(task_model(cls, 2), str(folder))
    ids = token_batch()
    return trained, saved, torch.allclose(head_output(model, ids), head_output(reloaded, ids), atol=1e-5)


def pd301_messages(model_class: str, task: str | None, transformers: str | None = None) -> list[str]:
    """PD301's messages on the snippet that wraps `model_class` with that task_type (on that transformers)."""
    keyword = f", task_type={task!r}" if task else ""
    source = ("from peft import LoraConfig, get_peft_model\n"
              f"from transformers import {model_class}\n"
              f"model = {model_class}.from_pretrained('base', num_labels=3)\n"
              f"model = get_peft_model(model, LoraConfig(r=4, target_modules=['q_proj', 'v_proj']{keyword}))\n")
    config = Config(versions={"transformers": transformers} if transformers else {})
    return [f.message for f in check_source(source, "train.py", config).findings if f.code == "PD301"]


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_2_SEQ_LM"])
@pytest.mark.parametrize("cls, matching", [(LlamaForSequenceClassification, "SEQ_CLS"),
                                           (LlamaForTokenClassification, "TOKEN_CLS"),
                                           (LlamaForQuestionAnswering, "QUESTION_ANS"),
                                           (ValueHeadModel, "SEQ_CLS")])
def test_pd301_generation_task_type_raises_at_get_peft_model(cls, matching, task):
    with pytest.raises(AttributeError, match=f"'{cls.__name__}' object has no attribute "
                                             "'prepare_inputs_for_generation'"):
        get_peft_model(task_model(cls, 1), lora(task_type=task))
    # control: the head's own task type wraps the same model and trains the head
    model = get_peft_model(task_model(cls, 1), lora(task_type=matching))
    assert any(f".{HEADS[cls]}.modules_to_save." in name for name in trainable_names(model))


def test_pd301_says_attribute_error_for_a_generation_task_type():
    (message,) = pd301_messages("AutoModelForSequenceClassification", "CAUSAL_LM")
    assert "raise AttributeError" in message and "prepare_inputs_for_generation" in message
    # before transformers 4.52 every PreTrainedModel had generate(): peft wraps it and the head stays frozen
    (older,) = pd301_messages("AutoModelForSequenceClassification", "CAUSAL_LM", transformers="4.51.3")
    assert "AttributeError" not in older and "stays frozen at its random init and is not saved" in older


@pytest.mark.parametrize("cls, task", [(LlamaForSequenceClassification, None),
                                       (LlamaForSequenceClassification, "FEATURE_EXTRACTION"),
                                       (LlamaForSequenceClassification, "QUESTION_ANS"),
                                       (LlamaForTokenClassification, "QUESTION_ANS"),
                                       (LlamaForQuestionAnswering, "SEQ_CLS")])
def test_pd301_another_task_type_leaves_the_head_frozen_unsaved_and_lost(cls, task, tmp_path):
    assert head_saved_trained_reloaded(cls, task, tmp_path / "adapter") == (False, False, False)
    auto = cls.__name__.replace("Llama", "Auto")
    (message,) = pd301_messages(auto, task)
    assert "stays frozen at its random init and is not saved" in message


@pytest.mark.parametrize("cls, task", [(LlamaForSequenceClassification, "SEQ_CLS"),
                                       (LlamaForSequenceClassification, "TOKEN_CLS"),
                                       (LlamaForTokenClassification, "SEQ_CLS"),
                                       (LlamaForQuestionAnswering, "QUESTION_ANS")])
def test_pd301_silent_task_types_train_save_and_reload_the_head(cls, task, tmp_path):
    """The matching task type, and SEQ_CLS / TOKEN_CLS for one another (both add `classifier` and `score`)."""
    assert head_saved_trained_reloaded(cls, task, tmp_path / "adapter") == (True, True, True)
    assert pd301_messages(cls.__name__.replace("Llama", "Auto"), task) == []
