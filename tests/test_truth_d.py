"""The failures PD401, PD403 and PD202 warn about really happen.

Each test runs the mistake a rule flags with the installed torch, transformers and peft on tiny
config-built models on CPU and measures the symptom (adapter tensors that never move, a NaN loss);
a control next to it shows the fixed form trains, so the symptom comes from the mistake.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(__file__))

from peft import LoraConfig, get_peft_model
from tiny import tiny_llama
from transformers import Trainer, TrainingArguments
from truth_helpers import LMDataset, lora, token_batch


def trainer_args(folder, **overrides) -> TrainingArguments:
    values = {"output_dir": str(folder), "max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 1e-2,
              "report_to": [], "use_cpu": True, "save_strategy": "no", "disable_tqdm": True}
    values.update(overrides)
    return TrainingArguments(**values)


def lora_b(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if "lora_B" in name}


def moved(before: dict[str, torch.Tensor], model) -> int:
    """How many of the lora_B tensors in `before` changed."""
    after = dict(model.named_parameters())
    return sum(not torch.equal(before[name], after[name]) for name in before)


def hand_loop(model, optimizer, steps=4) -> list[float]:
    losses = []
    model.train()
    for step in range(steps):
        ids = token_batch(seed=step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


# ------------------------------------------------------------------ PD403
def test_pd403_optimizer_built_before_get_peft_model_trains_nothing():
    model = tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model = get_peft_model(model, lora())
    before = lora_b(model)
    every = {name: param.detach().clone() for name, param in model.named_parameters()}
    hand_loop(model, optimizer)
    assert len(before) == 4 and moved(before, model) == 0
    assert all(p.grad is None for group in optimizer.param_groups for p in group["params"])  # all frozen
    assert moved(every, model) == 0  # not one weight of the model changed


def test_pd403_optimizer_before_wrap_given_to_trainer_trains_nothing(tmp_path):
    base = tiny_llama()
    optimizer = torch.optim.AdamW([p for p in base.parameters() if p.requires_grad], lr=1e-2)
    model = get_peft_model(base, lora())
    before = lora_b(model)
    trainer = Trainer(model=model, args=trainer_args(tmp_path), train_dataset=LMDataset(),
                      optimizers=(optimizer, None))
    result = trainer.train()
    assert result.global_step == 4 and result.training_loss > 0  # the run looks normal
    assert moved(before, model) == 0


def test_pd403_use_instead_optimizer_after_wrap_trains_the_adapter():
    base = tiny_llama()
    model = get_peft_model(base, lora())
    optimizer = torch.optim.AdamW(base.parameters(), lr=1e-2)  # read after the wrap: LoRA included
    before = lora_b(model)
    losses = hand_loop(model, optimizer)
    assert moved(before, model) == 4
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------ PD401
class ImageRows(torch.utils.data.Dataset):
    """A few random 16x16 images with labels, for a ViT classifier."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, 16, 16, generator=gen), "labels": torch.tensor(index % 2)}


def vit_with_lora():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, num_labels=2)
    model = ViTForImageClassification(config)
    assert model.main_input_name == "pixel_values"
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))


def vit_lora_b_moved(tmp_path, enable_input_grads=False, **args) -> tuple[int, float]:
    model = vit_with_lora()
    if enable_input_grads:
        model.enable_input_require_grads()
    before = lora_b(model)
    result = Trainer(model=model, args=trainer_args(tmp_path, **args), train_dataset=ImageRows()).train()
    assert len(before) == 4
    return moved(before, model), result.training_loss


REENTRANT = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}}


def test_pd401_vit_reentrant_checkpointing_after_wrap_trains_no_lora(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "None of the inputs have requires_grad=True"
        count, loss = vit_lora_b_moved(tmp_path, **REENTRANT)
    assert count == 0 and loss > 0  # the classifier trains, a loss is logged, the adapter never moves


def test_pd401_use_instead_vit_input_grads_or_non_reentrant_train_the_adapter(tmp_path):
    assert vit_lora_b_moved(tmp_path, enable_input_grads=True, **REENTRANT)[0] == 4
    assert vit_lora_b_moved(tmp_path, gradient_checkpointing=True)[0] == 4  # default: non-reentrant on 5.x
    assert vit_lora_b_moved(tmp_path, gradient_checkpointing=True,
                            gradient_checkpointing_kwargs={"use_reentrant": False})[0] == 4


def test_pd401_text_model_gets_input_grads_from_transformers_5(tmp_path):
    """Why the rule is silent for input_ids models on transformers >= 5.0: it enables input grads itself."""
    import transformers

    assert int(transformers.__version__.split(".")[0]) >= 5
    model = get_peft_model(tiny_llama(), lora())
    before = lora_b(model)
    Trainer(model=model, args=trainer_args(tmp_path, **REENTRANT), train_dataset=LMDataset()).train()
    assert moved(before, model) == 4


def test_pd401_checkpointing_as_transformers_4_enables_it_leaves_a_peft_model_without_gradient():
    """transformers 4.35-4.57 `gradient_checkpointing_enable()` with no kwargs: checkpoint(use_reentrant=True)
    on every layer and, for a PeftModel (no `_hf_peft_config_loaded`), no enable_input_require_grads()."""
    import functools

    from torch.utils.checkpoint import checkpoint

    def as_in_transformers_4(model):
        model.get_base_model()._set_gradient_checkpointing(
            enable=True, gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=True))

    model = get_peft_model(tiny_llama(), lora())
    as_in_transformers_4(model)
    model.train()
    ids = token_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = model(input_ids=ids, labels=ids).loss
    with pytest.raises(RuntimeError, match="does not require grad"):
        loss.backward()

    fixed = get_peft_model(tiny_llama(), lora())
    as_in_transformers_4(fixed)
    fixed.enable_input_require_grads()
    fixed.train()
    fixed(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in fixed.named_parameters() if "lora_B" in n)


def whisper_lora_b_grads(hook_on_encoder_input: bool) -> list:
    """A tiny Whisper wrapped with LoRA, then checkpointed with use_reentrant=True (after the wrap, so peft
    enables nothing): the gradient sum of every lora_B after one backward, or the RuntimeError's text."""
    import functools

    from torch.utils.checkpoint import checkpoint
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=16, max_target_positions=16,
                           decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    base = WhisperForConditionalGeneration(config)
    if hook_on_encoder_input:
        def output_needs_grad(module, inputs, output):
            output.requires_grad_(True)

        base.model.encoder.conv1.register_forward_hook(output_needs_grad)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    base._set_gradient_checkpointing(enable=True,
                                     gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=True))
    model.train()
    labels = torch.randint(2, 64, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model(input_features=torch.randn(2, 8, 32), labels=labels).loss.backward()
        except RuntimeError as error:
            return [str(error)]
    return [float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for name, p in model.named_parameters() if "lora_B" in name]


def test_pd401_a_hook_on_the_whisper_encoder_input_gives_the_adapter_gradients():
    """Why the rule is silent for a forward hook that calls `output.requires_grad_(True)` on a module of
    the model (here Whisper's first encoder convolution, its input having no embedding layer)."""
    (message,) = whisper_lora_b_grads(hook_on_encoder_input=False)
    assert "does not require grad" in message
    grads = whisper_lora_b_grads(hook_on_encoder_input=True)
    assert len(grads) == 12 and all(g > 0 for g in grads)


# ------------------------------------------------------------------ PD202
def pure_fp16_steps(model, steps=2, **optimizer_kwargs) -> tuple[list[float], int]:
    """A hand loop with no AMP: (the losses, how many trainable tensors are non-finite at the end)."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses = hand_loop(model, torch.optim.AdamW(params, lr=1e-4, **optimizer_kwargs), steps)
    return losses, sum(not torch.isfinite(p).all() for p in params)


def halved_lora():
    model = get_peft_model(tiny_llama(), lora()).half()
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float16}
    return model


@pytest.mark.parametrize("implementation", [{}, {"foreach": True}], ids=["single_tensor", "foreach"])
def test_pd202_adamw_default_eps_on_fp16_weights_turns_every_lora_tensor_nan(implementation):
    assert torch.tensor(1e-8, dtype=torch.float16).item() == 0.0  # the default eps vanishes in float16
    losses, non_finite = pure_fp16_steps(halved_lora(), **implementation)
    assert non_finite == 8  # every lora_A and lora_B, after the first step
    assert math.isfinite(losses[0]) and math.isnan(losses[1])  # finite, then nan


@pytest.mark.parametrize("fix", [{"eps": 1e-4}, {"fused": True}], ids=["eps_1e-4", "fused"])
def test_pd202_use_instead_raised_eps_or_fused_kernel_stays_finite(fix):
    losses, non_finite = pure_fp16_steps(halved_lora(), steps=3, **fix)
    assert non_finite == 0 and all(math.isfinite(loss) for loss in losses)


def test_pd202_fp16_base_with_upcast_lora_is_fine_with_default_eps():
    """peft >= 0.12 keeps the adapter in float32 on a float16 base: the rule is silent there."""
    model = get_peft_model(tiny_llama(dtype=torch.float16), lora())
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    losses, non_finite = pure_fp16_steps(model, steps=3)
    assert non_finite == 0 and all(math.isfinite(loss) for loss in losses)


# ------------------------------------------------------------------ PD402
def checkpoint_as_transformers_4(model) -> None:
    """What transformers 4.35-4.57 `gradient_checkpointing_enable()` does with no kwargs (read in the 4.57.6
    source): torch checkpoint with use_reentrant=True on every layer, input grads only for `add_adapter`."""
    import functools

    from torch.utils.checkpoint import checkpoint

    model._set_gradient_checkpointing(enable=True,
                                      gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=True))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kbit_base")
    tiny_llama(hidden_size=64, intermediate_size=128).save_pretrained(folder)
    return folder


def load_4bit(folder):
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = LlamaForCausalLM.from_pretrained(folder, quantization_config=quantization)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    return model


def lora_b_grads(model) -> list:
    """The gradient sum of every lora_B after one forward/backward, or the RuntimeError's text."""
    ids = token_batch()
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model(input_ids=ids, labels=ids).loss.backward()
        except RuntimeError as error:
            return [str(error)]
    return [float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for name, p in model.named_parameters() if "lora_B" in name]


def test_pd402_checkpointed_4bit_base_without_prepare_gets_no_gradient_on_transformers_4(llama_dir):
    base = load_4bit(llama_dir)
    checkpoint_as_transformers_4(base)
    model = get_peft_model(base, lora())
    assert not getattr(base, "_require_grads_hooks", None)  # peft skips input grads for a quantized base
    (message,) = lora_b_grads(model)
    assert "does not require grad" in message


def test_pd402_use_instead_prepare_or_a_plain_base_gets_gradients(llama_dir):
    from peft import prepare_model_for_kbit_training
    from transformers import LlamaForCausalLM

    prepared = prepare_model_for_kbit_training(load_4bit(llama_dir),
                                               gradient_checkpointing_kwargs={"use_reentrant": True})
    grads = lora_b_grads(get_peft_model(prepared, lora()))
    assert len(grads) == 4 and all(g > 0 for g in grads)

    plain = LlamaForCausalLM.from_pretrained(llama_dir)  # not quantized: peft enables input grads itself
    checkpoint_as_transformers_4(plain)
    grads = lora_b_grads(get_peft_model(plain, lora()))
    assert len(grads) == 4 and all(g > 0 for g in grads)


def test_pd402_transformers_5_checkpointing_enables_input_grads_for_a_4bit_text_model(llama_dir):
    """Why the rule is silent on transformers >= 5.0 for an input_ids model: it enables input grads itself."""
    base = load_4bit(llama_dir)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    grads = lora_b_grads(get_peft_model(base, lora()))
    assert len(grads) == 4 and all(g > 0 for g in grads)


def test_pd402_a_forward_hook_on_the_input_embeddings_gives_gradients(llama_dir):
    """Why the rule is silent for `get_input_embeddings().register_forward_hook(f)` with `f` calling
    `output.requires_grad_(True)`: the manual form of enable_input_require_grads() works for a k-bit base."""
    def embeddings_need_grad(module, inputs, output):
        output.requires_grad_(True)

    base = load_4bit(llama_dir)
    base.get_input_embeddings().register_forward_hook(embeddings_need_grad)
    checkpoint_as_transformers_4(base)
    grads = lora_b_grads(get_peft_model(base, lora()))
    assert len(grads) == 4 and all(g > 0 for g in grads)
