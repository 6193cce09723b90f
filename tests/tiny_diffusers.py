"""A tiny diffusers UNet and Stable Diffusion pipeline built from configs (never the hub).

Import only where diffusers is installed (the dev extra); it imports torch and diffusers.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

# The LoRA targets of diffusers' own text-to-image LoRA scripts.
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    """The smallest UNet2DConditionModel that builds with cross-attention: 4 attention blocks, 8 channels."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, cross_attention_dim=8, norm_num_groups=4, sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2)


def tiny_pipeline(unet: UNet2DConditionModel | None = None) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline around `unet` (no tokenizer: load_lora_weights does not need one)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4,), norm_num_groups=4, latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=8, intermediate_size=16,
                                                num_hidden_layers=1, num_attention_heads=2, projection_dim=8,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDPMScheduler(steps_offset=1, clip_sample=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet or tiny_unet(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def unet_inputs(seed: int = 0):
    """One noisy latent, timestep and text embedding for a forward pass of tiny_unet."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, 8, 8, generator=generator), torch.tensor([10]),
            torch.randn(1, 3, 8, generator=generator))


@torch.no_grad()
def unet_output(unet: UNet2DConditionModel, seed: int = 0) -> torch.Tensor:
    sample, timestep, text = unet_inputs(seed)
    return unet(sample, timestep, encoder_hidden_states=text).sample
