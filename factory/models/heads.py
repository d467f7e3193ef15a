"""Margin heads for recognizer training: margin callables and the classifier that owns the loss.

The split follows arcface_torch: a margin (:class:`CosFaceMargin`, :class:`ArcFaceMargin`) turns
cosine logits into scaled logits with the margin applied at one target column, and
:class:`MarginClassifier` owns the class centres and returns the loss, so a training step reads
``loss = head(backbone(images), labels, weights)``.

Soft targets carry SynFace's mixups: a sample with targets ``(a, b)`` and weights
``(w, 1 - w)`` costs ``w * CE_a + (1 - w) * CE_b``, where ``CE_k`` is the cross-entropy of the
logits with the margin applied at ``k`` against target ``k``. Each target thus gets its own
margin, exactly as SynFace's mixed cross-entropies do.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from factory.errors import ConfigError

MarginName = Literal["cosface", "arcface"]

# Keeps d sqrt(1 - cos^2) / d cos finite where cos = +-1 (the clamp has zero gradient there).
_SIN_EPS = 1e-12


def _target_cosines(cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``cosine[i, target[i]]`` for every row, shape ``[B]``."""
    return cosine.gather(1, target.unsqueeze(1)).squeeze(1)


def _replace_targets(
    cosine: torch.Tensor, target: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """A copy of ``cosine`` with ``values[i]`` written at ``[i, target[i]]``."""
    return cosine.scatter(1, target.unsqueeze(1), values.unsqueeze(1).to(cosine.dtype))


class CosFaceMargin(nn.Module):
    """CosFace (large margin cosine loss): target logit ``s * (cos - m)``, others ``s * cos``.

    Args:
        s: scale of the logits (the inverse temperature of the softmax).
        m: additive cosine margin subtracted at the target column.
    """

    def __init__(self, s: float = 64.0, m: float = 0.4) -> None:
        super().__init__()
        self.s = s
        self.m = m

    def forward(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cosines ``[B, C]`` and target class indices ``[B]`` -> scaled logits ``[B, C]``."""
        cosine = cosine.clamp(-1.0, 1.0)
        marked = _target_cosines(cosine, target) - self.m
        return self.s * _replace_targets(cosine, target, marked)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}"


class ArcFaceMargin(nn.Module):
    """ArcFace (additive angular margin): target logit ``s * cos(theta + m)``, others ``s * cos``.

    ``cos(theta + m)`` stops decreasing once ``theta + m`` passes pi, which would reward pushing
    a sample *away* from its class. As in insightface's ``easy_margin=False`` branch, the angular
    form is used only where ``theta + m < pi`` (``cos > cos(pi - m)``); beyond that the target
    logit is ``cos - m * sin(m)``. The result is finite for every angle and non-increasing in
    theta (it steps down, from -1 to ``-cos(m) - m sin(m)``, at the switch).

    Args:
        s: scale of the logits.
        m: additive angular margin in radians.
    """

    def __init__(self, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__()
        self.s = s
        self.m = m

    def forward(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cosines ``[B, C]`` and target class indices ``[B]`` -> scaled logits ``[B, C]``."""
        cosine = cosine.clamp(-1.0, 1.0)
        cos_t = _target_cosines(cosine, target)
        sin_t = (1.0 - cos_t * cos_t).clamp_min(_SIN_EPS).sqrt()
        angular = cos_t * math.cos(self.m) - sin_t * math.sin(self.m)
        fallback = cos_t - self.m * math.sin(self.m)
        marked = torch.where(cos_t > math.cos(math.pi - self.m), angular, fallback)
        return self.s * _replace_targets(cosine, target, marked)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}"


DEFAULT_MARGINS: dict[str, float] = {"cosface": 0.4, "arcface": 0.5}
_MARGIN_TYPES: dict[str, type[CosFaceMargin] | type[ArcFaceMargin]] = {
    "cosface": CosFaceMargin,
    "arcface": ArcFaceMargin,
}


def build_margin(
    name: MarginName, scale: float = 64.0, margin_value: float | None = None
) -> CosFaceMargin | ArcFaceMargin:
    """The margin called ``name``, with its published ``m`` unless ``margin_value`` is given."""
    if name not in _MARGIN_TYPES:
        raise ConfigError(
            f"recognizer.head.margin: unknown margin {name!r}; choose one of "
            f"{', '.join(_MARGIN_TYPES)}"
        )
    value = DEFAULT_MARGINS[name] if margin_value is None else margin_value
    return _MARGIN_TYPES[name](scale, value)


class MarginClassifier(nn.Module):
    """Class centres plus a margin softmax loss over cosine similarities.

    Args:
        embedding_size: dimension of the backbone's embeddings.
        num_classes: number of identities (synthetic first, then real ones under domain mixup).
        margin: ``"cosface"`` or ``"arcface"``.
        scale: logit scale ``s``.
        margin_value: ``m``; None takes 0.4 for CosFace and 0.5 for ArcFace.

    ``weight`` ``[num_classes, embedding_size]`` holds one (unnormalised) centre per class; only
    its direction matters, since both centres and embeddings are normalised before the product.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: MarginName = "cosface",
        scale: float = 64.0,
        margin_value: float | None = None,
    ) -> None:
        super().__init__()
        self.margin = build_margin(margin, scale, margin_value)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine between each embedding and each class centre, ``[B, C]``, float32, no margin."""
        embeddings = F.normalize(embeddings.float(), dim=1)
        centres = F.normalize(self.weight.float(), dim=1)
        return F.linear(embeddings, centres).float()

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean margin loss of a batch.

        Args:
            embeddings: ``[B, D]`` raw backbone outputs.
            labels: LongTensor ``[B]`` (one class per sample) or ``[B, K]`` (K targets each).
            weights: ``[B, K]`` target weights, each row summing to 1 (not checked, to avoid a
                device sync); None for hard labels. With soft targets the loss of a sample is
                ``sum_k weights[:, k] * CE(margin at labels[:, k], labels[:, k])``.
        """
        labels, weights = _as_soft_targets(labels, weights)
        cosine = self.cosine(embeddings)
        loss = cosine.new_zeros(len(cosine))
        for k in range(labels.shape[1]):
            target = labels[:, k]
            loss = loss + weights[:, k] * F.cross_entropy(
                self.margin(cosine, target), target, reduction="none"
            )
        return loss.mean()


def _as_soft_targets(
    labels: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and weights as ``[B, K]``: hard labels become one target of weight 1."""
    if labels.ndim == 1:
        labels = labels.unsqueeze(1)
        if weights is None:
            weights = torch.ones(labels.shape, device=labels.device)
    if weights is None:
        raise ValueError("labels of shape [B, K] need weights of shape [B, K]")
    if labels.ndim != 2 or weights.shape != labels.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} and weights {tuple(weights.shape)} must both be [B, K]"
        )
    return labels.long(), weights.float()
