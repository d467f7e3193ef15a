"""The CemiFace generator: a diffusers UNet conditioned on an identity and a similarity target.

The conditions follow CemiFace: ``C_id`` is the frozen identity encoder's (normalised)
embedding of the inquiry image, ``C_sim = F1(m)`` a linear projection of the requested cosine
similarity m, and ``F2([C_id, C_sim])`` turns both into context tokens that the UNet's
cross-attention layers attend to. The timestep enters only through the UNet's own time
embedding; m is deliberately not added to it (CemiFace removed that path from DCFace).

Classifier-free guidance: a condition module built with ``null_tokens`` also holds a learned
context that stands for "no condition". Training replaces a random share of samples' contexts
with it (``generator.condition.dropout``), so one network learns both the conditional and the
unconditional prediction, and the sampler can push along their difference
(:func:`factory.models.sampling.sample_images`, ``guidance_scale``).

Both parts are diffusers models (``ModelMixin`` + ``ConfigMixin``), so a checkpoint stores each
with ``save_pretrained`` and rebuilds it with ``from_pretrained`` and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from factory.config import ConditionConfig, UNetConfig


class SimilarityCondition(ModelMixin, ConfigMixin):
    """``(C_id, m) -> context tokens [B, tokens, context_dim]`` for cross-attention."""

    @register_to_config
    def __init__(self, identity_dim: int, similarity_dim: int, tokens: int,
                 context_dim: int, null_tokens: bool = False) -> None:
        super().__init__()
        self.similarity_projection = nn.Linear(1, similarity_dim)  # F1
        self.context_projection = nn.Linear(identity_dim + similarity_dim,
                                            tokens * context_dim)  # F2
        self.norm = nn.LayerNorm(context_dim)
        if null_tokens:
            # zeros: the cross-attention values of the null context start at nothing, so a
            # checkpoint trained without it continues from "condition absent = no signal"
            self.null_context = nn.Parameter(torch.zeros(tokens, context_dim))

    def forward(self, identity: torch.Tensor, m: torch.Tensor,
                unconditional: torch.Tensor | None = None) -> torch.Tensor:
        """Context tokens; rows where ``unconditional`` (bool ``[B]``) is set get the null
        context instead (needs ``null_tokens``)."""
        c_id = F.normalize(identity.float(), dim=-1)
        c_sim = self.similarity_projection(m.float().reshape(-1, 1))
        context = self.context_projection(torch.cat([c_id, c_sim], dim=-1))
        tokens = self.norm(context.reshape(len(context), self.config.tokens,
                                           self.config.context_dim))
        if unconditional is None:
            return tokens
        if not self.config.null_tokens:
            raise ValueError("this generator has no null context (trained without "
                             "generator.condition.dropout), so it cannot drop its condition")
        null = self.null_context.to(tokens.dtype).expand_as(tokens)
        return torch.where(unconditional.reshape(-1, 1, 1), null, tokens)


def build_unet(cfg: UNetConfig, image_size: int) -> UNet2DConditionModel:
    """An RGB-to-RGB conditional UNet; cross-attention at the levels ``cfg`` marks."""
    down = tuple("CrossAttnDownBlock2D" if attend else "DownBlock2D"
                 for attend in cfg.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if attend else "UpBlock2D"
               for attend in reversed(cfg.cross_attention))
    return UNet2DConditionModel(
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def build_condition(cfg: ConditionConfig, identity_dim: int,
                    context_dim: int) -> SimilarityCondition:
    return SimilarityCondition(identity_dim=identity_dim, similarity_dim=cfg.similarity_dim,
                               tokens=cfg.tokens, context_dim=context_dim,
                               null_tokens=cfg.dropout > 0)


class CemiFaceGenerator(nn.Module):
    """UNet plus condition module: ``(x_t, t, C_id, m) -> model output`` (epsilon or v)."""

    def __init__(self, unet: UNet2DConditionModel, condition: SimilarityCondition) -> None:
        super().__init__()
        self.unet = unet
        self.condition = condition

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, identity: torch.Tensor,
                m: torch.Tensor, unconditional: torch.Tensor | None = None) -> torch.Tensor:
        context = self.condition(identity, m, unconditional).to(noisy.dtype)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample

    @property
    def guidable(self) -> bool:
        """Whether classifier-free guidance can run: the condition has a null context."""
        return bool(self.condition.config.null_tokens)
