"""PD201 for diffusers models: a UNet that is float16 when its LoRA adapter is added, or cast to float16 after,
has float16 LoRA weights (add_adapter makes them in the base weights' dtype and, unlike get_peft_model, does not
upcast them), and an fp16 mixed-precision step fails in the GradScaler. The control casts the trainable
parameters back with diffusers' cast_training_params, as diffusers' own scripts do, and the step trains.

The scaler is torch's GradScaler on CPU, the one accelerate uses for fp16 on GPU (on CPU accelerate makes none).
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
    import diffusers  # noqa: F401
except ImportError as exc:  # diffusers is in the dev extra; without it there is nothing to measure
    pytest.skip(f"diffusers cannot be imported: {exc}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))

from diffusers.training_utils import cast_training_params  # noqa: E402
from peft import LoraConfig  # noqa: E402
from tiny_diffusers import UNET_TARGETS, tiny_unet, unet_inputs  # noqa: E402

warnings.filterwarnings("ignore")


def lora_unet(half_before: bool, half_after: bool, cast_back: bool):
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


def fp16_amp_step(unet) -> None:
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
    unet = lora_unet(half_before, half_after, cast_back=False)
    assert trainable_dtypes(unet) == {torch.float16}
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        fp16_amp_step(unet)


def test_pd201_control_cast_training_params_trains():
    unet = lora_unet(half_before=True, half_after=False, cast_back=True)
    assert trainable_dtypes(unet) == {torch.float32}
    before = {name: p.detach().clone() for name, p in unet.named_parameters() if p.requires_grad}
    fp16_amp_step(unet)
    moved = [name for name, p in unet.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
    assert moved, "the LoRA weights should change in the step"
