"""PeftDoctorCallback (real Trainer) and peftdoctor.watch() (hand loops) on tiny CPU models."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from learning_helpers import Images, llama_peft, moved, reentrant, saved_adapter, snapshot, trainer, vit_lora
from tiny import tiny_llama
from truth_helpers import lora, token_batch

import peftdoctor
from peftdoctor import NotLearning, PeftDoctorCallback

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def pd709(findings):
    return next(f for f in findings if f.code == "PD709")


@pytest.mark.parametrize("extra", [{}, {"gradient_accumulation_steps": 2, "bf16": True, "max_grad_norm": 1.0}],
                         ids=["plain", "accumulation-bf16-clipping"])
def test_vit_reentrant_checkpointing_raises_at_step_one_naming_tensors(tmp_path, extra):
    model = vit_lora()
    run = trainer(model, tmp_path, [PeftDoctorCallback()], data=Images(), steps=4, **reentrant(**extra))
    with pytest.raises(NotLearning) as caught:
        run.train()
    assert run.state.global_step == 0  # raised inside the first optimizer step, before it was counted
    found = pd709(caught.value.findings)
    assert found.extra["steps"] == 1
    assert set(found.extra["tensors"].values()) == {"no gradient"}
    assert len(found.extra["tensors"]) == 8 and all("lora_" in n for n in found.extra["tensors"])
    assert "PD707" in codes(caught.value.findings)
    text = str(caught.value)
    assert "base_model.model.vit.layers.0.attention.q_proj: lora_A.default.weight, lora_B.default.weight" in text
    assert "reentrant gradient checkpointing" in text


def test_frozen_resume_with_checkpointing_is_caught(tmp_path):
    frozen = peft.PeftModel.from_pretrained(tiny_llama(), saved_adapter(tmp_path / "previous"))
    run = trainer(frozen, tmp_path / "out", [PeftDoctorCallback()], **reentrant())
    with pytest.raises(NotLearning, match="no trainable parameters") as caught:
        run.train()
    assert codes(caught.value.findings) == {"PD704"}


def test_second_adapter_resume_is_caught(tmp_path):
    model = llama_peft()
    model.load_adapter(saved_adapter(tmp_path / "previous"), adapter_name="resumed", is_trainable=True)
    with pytest.raises(NotLearning) as caught:
        trainer(model, tmp_path / "out", [PeftDoctorCallback()]).train()
    found = pd709(caught.value.findings)
    assert sorted(found.extra["tensors"]) == sorted(n for n, p in model.named_parameters()
                                                    if ".resumed." in n)
    assert "PD708" in codes(caught.value.findings) and "['resumed']" in str(caught.value)


HEALTHY = {
    "lora": lambda: lora(),
    "dora": lambda: lora(use_dora=True),
    "ia3": lambda: peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                  task_type="CAUSAL_LM"),
    "prompt-tuning": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
}


@pytest.mark.parametrize("kind", sorted(HEALTHY))
def test_healthy_runs_pass_with_no_finding(tmp_path, kind):
    callback = PeftDoctorCallback(check_steps=2)
    model = llama_peft(HEALTHY[kind]())
    run = trainer(model, tmp_path, [callback], steps=3)
    run.train()
    assert callback.findings == [] and callback.probe is None  # checked, copies dropped
    assert run.state.global_step == 3


def test_healthy_run_with_accumulation_bf16_and_clipping_passes(tmp_path):
    callback = PeftDoctorCallback()
    model = llama_peft()
    before = snapshot(model)
    trainer(model, tmp_path, [callback], gradient_accumulation_steps=2, bf16=True, max_grad_norm=0.5).train()
    assert callback.findings == [] and moved(model, before) == 4


def test_stop_ends_training_after_the_check_step_and_logs(tmp_path, caplog):
    callback = PeftDoctorCallback(on_failure="stop")
    run = trainer(vit_lora(), tmp_path, [callback], data=Images(), steps=4, **reentrant())
    with caplog.at_level(logging.ERROR, logger="peftdoctor"):
        run.train()
    assert run.state.global_step == 1
    assert "PD709" in codes(callback.findings) and "training stopped" in caplog.text


def test_warn_lets_training_run(tmp_path):
    callback = PeftDoctorCallback(on_failure="warn")
    run = trainer(vit_lora(), tmp_path, [callback], data=Images(), steps=3, **reentrant())
    with pytest.warns(UserWarning, match="did not learn"):
        run.train()
    assert run.state.global_step == 3 and "PD709" in codes(callback.findings)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="on_failure"):
        PeftDoctorCallback(on_failure="explode")
    with pytest.raises(ValueError, match="check_steps"):
        PeftDoctorCallback(check_steps=0)


# hand loops -------------------------------------------------------------------------------------------

def _hand_loop(model, optimizer, steps: int, *, autocast=None) -> None:
    for step in range(steps):
        batch = token_batch(seed=step)
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_watch_healthy_hand_loop_with_bf16_autocast_and_removes_hooks():
    model = llama_peft()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with peftdoctor.watch(model, optimizer) as doctor:
        _hand_loop(model, optimizer, 2, autocast=torch.bfloat16)
    assert doctor.findings == [] and doctor.probe.done
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_watch_names_tensors_the_optimizer_does_not_hold():
    model = llama_peft()
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if "lora_A" in n], lr=1e-2)
    with peftdoctor.watch(model, optimizer, check_steps=2, on_failure="warn") as doctor, \
            pytest.warns(UserWarning, match="optimizer does not hold"):
        _hand_loop(model, optimizer, 2)
    tensors = pd709(doctor.findings).extra["tensors"]
    assert sorted(tensors) == sorted(n for n, _ in model.named_parameters() if "lora_B" in n)
    assert set(tensors.values()) == {"unchanged"}


def test_watch_catches_reentrant_checkpointing_in_a_hand_loop():
    model = vit_lora()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.base_model.model.disable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = Images()
    batch = {k: torch.stack([images[i][k] for i in range(2)]) for k in ("pixel_values", "labels")}
    peftdoctor.watch(model, optimizer)
    model.train()
    model(**batch).loss.backward()
    with pytest.raises(NotLearning, match="no gradient"):
        optimizer.step()


def test_steps_skipped_by_loss_scaling_do_not_count():
    """fp16 loss scaling skips a step whose gradients overflow; that step proves nothing either way."""
    from peftdoctor.runtime.learning import LearningProbe

    model = llama_peft()
    probe = LearningProbe(model)
    probe.snapshot()
    for param in probe.tensors.values():
        param.grad = torch.full_like(param, float("inf"))
    probe.read_grads()
    assert probe.after_step() is False and probe.skipped == 1 and probe.steps == 0


@pytest.mark.parametrize("held", ["lora_", "lora_A"])
def test_fingerprints_above_the_copy_budget_see_the_same(held):
    from peftdoctor.runtime.learning import LearningProbe

    model = llama_peft()
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if held in n], lr=1e-2)
    probe = LearningProbe(model, budget=0)
    assert not probe.full_copy
    probe.snapshot()
    batch = token_batch()
    model(input_ids=batch, labels=batch).loss.backward()
    probe.read_grads()
    optimizer.step()
    assert probe.after_step()
    failed = set(pd709(probe.findings()).extra["tensors"]) if probe.findings() else set()
    assert failed == ({n for n in probe.tensors if "lora_B" in n} if held == "lora_A" else set())


def test_a_tensor_the_probe_cannot_read_gives_a_warning_not_a_crash():
    from peftdoctor.runtime.learning import LearningProbe

    model = llama_peft()
    with torch.device("meta"):
        model.base_model.model.lm_head.weight = torch.nn.Parameter(torch.empty(128, 16))  # never materialised
    probe = LearningProbe(model)
    probe.snapshot()
    assert probe.after_step() is True
    [found] = probe.findings()
    assert found.severity.value == "warning" and "was not verified" in found.message


def test_a_shard_this_rank_does_not_hold_is_unverified_not_failed():
    model = llama_peft()
    model.register_parameter("lora_shard", torch.nn.Parameter(torch.empty(0)))  # as FSDP leaves another rank's shard
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with peftdoctor.watch(model, optimizer, on_failure="warn") as doctor, \
            pytest.warns(UserWarning, match="1 sharded trainable tensor"):
        _hand_loop(model, optimizer, 1)
    assert [(f.code, f.severity.value) for f in doctor.findings] == [("PD709", "warning")]


def test_callback_import_stays_lazy():
    code = ("import sys, peftdoctor; heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy; from peftdoctor import PeftDoctorCallback; "
            "from transformers import TrainerCallback; assert issubclass(PeftDoctorCallback, TrainerCallback)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trl_sft_trainer_with_peft_config(tmp_path):
    """TRL's trainers subclass Trainer: the callback checks the PeftModel the SFTTrainer builds."""
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from trl import SFTConfig, SFTTrainer
    from truth_helpers import tiny_tokenizer

    data = datasets.Dataset.from_dict({"text": ["w5 w6 w7 w8", "w9 w10 w11"] * 2})
    args = SFTConfig(str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                     save_strategy="no", max_length=16, disable_tqdm=True, learning_rate=1e-2)
    callback = PeftDoctorCallback()
    trainer = SFTTrainer(model=tiny_llama(), args=args, train_dataset=data, processing_class=tiny_tokenizer(),
                         peft_config=lora(), callbacks=[callback])
    trainer.train()
    assert callback.findings == [] and callback.probe is None and trainer.state.global_step == 2
