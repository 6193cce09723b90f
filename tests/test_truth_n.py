"""The diffusers resume PD105 warns about really trains nothing, with real torch / diffusers / peft / accelerate on CPU.

A diffusers LoRA script adds its adapter with `unet.add_adapter(LoraConfig(...))` ("default") and builds the
optimizer from the parameters that require grad. Resuming with one of diffusers' LoRA loaders
(`pipeline.load_lora_weights`, `load_lora_into_unet` in a load-state hook, `unet.load_lora_adapter`) loads the
checkpoint as a second adapter "default_1" and makes it the only active one: the optimizer's parameters no
longer reach the output, and an optimizer step changes nothing. The control loads the checkpoint into
"default" with `set_peft_model_state_dict`, as diffusers' own scripts do, and the step moves the output.
PD201 for diffusers models (at the end): a UNet that is float16 when its LoRA adapter is added, or cast to
float16 after, has float16 LoRA weights (add_adapter makes them in the base weights' dtype and, unlike
get_peft_model, never upcasts them), and an fp16 mixed-precision step fails in the GradScaler; diffusers'
cast_training_params fixes it. The scaler is torch's on CPU, the one accelerate uses for fp16 on a GPU.
The models are tiny and built from configs (tests/tiny_diffusers.py), never from the hub.
"""

from __future__ import annotations

import os
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
try:
    import diffusers
except ImportError as exc:  # diffusers is in the dev extra; without it there is nothing to measure
    pytest.skip(f"diffusers cannot be imported: {exc}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))

from diffusers import StableDiffusionPipeline  # noqa: E402
from diffusers.training_utils import cast_training_params  # noqa: E402
from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft  # noqa: E402
from packaging.version import Version  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402
from tiny_diffusers import UNET_TARGETS, tiny_pipeline, tiny_unet, unet_inputs, unet_output  # noqa: E402

warnings.filterwarnings("ignore")


def lora_unet():
    """What the training scripts make: a UNet, frozen, with a LoRA adapter added in place ("default")."""
    unet = tiny_unet()
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
    return unet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A trained LoRA saved as the scripts' save hook does, and the outputs it gives."""
    unet = lora_unet()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    folder = tmp_path_factory.mktemp("checkpoint")
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))
    return str(folder), unet_output(unet)


def one_step(unet, optimizer) -> float:
    """One optimizer step on a denoising-style loss; how far the output moved."""
    before = unet_output(unet)
    unet.train()
    sample, timestep, text = unet_inputs(seed=3)
    unet(sample, timestep, encoder_hidden_states=text).sample.pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return (unet_output(unet) - before).abs().max().item()


def load_with_pipeline(unet, folder):
    tiny_pipeline(unet).load_lora_weights(folder)


def load_into_unet(unet, folder):  # what a load_model_hook of this form does
    state_dict, network_alphas = StableDiffusionPipeline.lora_state_dict(folder)
    StableDiffusionPipeline.load_lora_into_unet(state_dict, network_alphas=network_alphas, unet=unet)


def load_lora_adapter(unet, folder):
    unet.load_lora_adapter(folder, prefix="unet", weight_name="pytorch_lora_weights.safetensors")


def load_into_default(unet, folder):  # the fix, as in diffusers' own LoRA training scripts
    state_dict, _ = StableDiffusionPipeline.lora_state_dict(folder)
    unet_state = {k.removeprefix("unet."): v for k, v in state_dict.items() if k.startswith("unet.")}
    set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(unet_state), adapter_name="default")


@pytest.mark.parametrize("load", [load_with_pipeline, load_into_unet, load_lora_adapter], ids=lambda f: f.__name__)
def test_pd105_diffusers_loader_resumes_into_default_1_and_the_optimizer_step_does_nothing(checkpoint, load):
    folder, saved = checkpoint
    unet = lora_unet()
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with pytest.warns(UserWarning, match="multiple adapters"):  # peft's warning: the only sign of it
        load(unet, folder)

    assert list(unet.peft_config) == ["default", "default_1"]
    assert unet.active_adapters() == ["default_1"]
    assert (unet_output(unet) - saved).abs().max() < 1e-5  # the checkpoint itself loaded, into default_1
    new_params = {id(p) for name, p in unet.named_parameters() if ".default_1." in name}
    assert new_params and not new_params & held  # the optimizer holds none of default_1's weights
    assert one_step(unet, optimizer) == 0  # default's weights get no gradient: nothing is trained


def test_pd105_control_set_peft_model_state_dict_resumes_into_default(checkpoint):
    folder, saved = checkpoint
    unet = lora_unet()
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    load_into_default(unet, folder)

    assert list(unet.peft_config) == ["default"] and unet.active_adapters() == ["default"]
    assert (unet_output(unet) - saved).abs().max() < 1e-5
    assert one_step(unet, optimizer) > 0.01


def test_pd105_load_attn_procs_by_diffusers_version(checkpoint):
    """load_attn_procs loaded LoRA files like load_lora_adapter until diffusers 0.40 removed that path."""
    folder, _ = checkpoint
    unet = lora_unet()
    if Version(diffusers.__version__) >= Version("0.40"):
        with pytest.raises(ValueError, match="not seem to be in the correct format expected by Custom Diffusion"):
            unet.load_attn_procs(folder)
        return
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    unet.load_attn_procs(folder)
    assert unet.active_adapters() == ["default_1"] and one_step(unet, optimizer) == 0


@pytest.mark.parametrize("hook_load, moves", [(load_into_unet, False), (load_into_default, True)],
                         ids=["load_lora_into_unet", "set_peft_model_state_dict"])
def test_pd105_through_accelerate_load_state_hook(checkpoint, tmp_path, hook_load, moves):
    """The whole resume as the scripts run it: accelerator.save_state / load_state with the two hooks."""
    from accelerate import Accelerator

    folder, saved = checkpoint

    def save_model_hook(models, weights, output_dir):
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(models[0]))
        StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=layers)
        weights.pop()

    first = Accelerator(cpu=True)
    trained = lora_unet()
    load_into_default(trained, folder)
    first.register_save_state_pre_hook(save_model_hook)
    model, optimizer = first.prepare(trained, torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad]))
    first.save_state(str(tmp_path / "checkpoint-1"))

    accelerator = Accelerator(cpu=True)
    unet = lora_unet()

    def load_model_hook(models, input_dir):
        hook_load(models.pop(), input_dir)

    accelerator.register_load_state_pre_hook(load_model_hook)
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    accelerator.load_state(str(tmp_path / "checkpoint-1"))

    assert (unet_output(unet) - saved).abs().max() < 1e-5  # resumed outputs are right either way
    assert unet.active_adapters() == (["default"] if moves else ["default_1"])
    assert (one_step(unet, optimizer) > 0.01) is moves


# ------------------------------------------------------------------ PD201 for diffusers models
def fp16_lora_unet(half_before: bool, half_after: bool, cast_back: bool):
    unet = tiny_unet()
    unet.requires_grad_(False)
    if half_before:
        unet.to(dtype=torch.float16)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
    if half_after:
        unet.to(dtype=torch.float16)
    if cast_back:
        cast_training_params(unet, dtype=torch.float32)
    return unet


def trainable_dtypes(unet) -> set[torch.dtype]:
    return {p.dtype for p in unet.parameters() if p.requires_grad}


def fp16_amp_unet_step(unet) -> None:
    """One optimizer step as accelerate's fp16 mixed precision runs it: autocast, scaled backward, unscale."""
    scaler = torch.amp.GradScaler("cpu")
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    with torch.autocast("cpu", dtype=torch.float16):
        sample = unet(*unet_inputs()).sample
    scaler.scale(sample.float().pow(2).mean()).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


@pytest.mark.parametrize("half_before, half_after", [(True, False), (False, True)], ids=["before", "after"])
def test_pd201_fp16_unet_gets_fp16_lora_weights_and_the_scaler_fails(half_before, half_after):
    unet = fp16_lora_unet(half_before, half_after, cast_back=False)
    assert trainable_dtypes(unet) == {torch.float16}
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        fp16_amp_unet_step(unet)


def test_pd201_control_cast_training_params_trains():
    unet = fp16_lora_unet(half_before=True, half_after=False, cast_back=True)
    assert trainable_dtypes(unet) == {torch.float32}
    before = {name: p.detach().clone() for name, p in unet.named_parameters() if p.requires_grad}
    fp16_amp_unet_step(unet)
    moved = [name for name, p in unet.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
    assert moved, "the LoRA weights should change in the step"
