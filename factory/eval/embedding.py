"""Embedding image sets with a recognizer, and the spread within an identity's embeddings:
shared by the compliance report (samples) and the real reference (photos), so both are
measured the same way."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def embed(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Unit-length embeddings ``[N, D]`` of images in [-1, 1]."""
    return torch.cat([encoder(images[start:start + batch_size]).float()
                      for start in range(0, len(images), batch_size)]).cpu().numpy()


def identity_spread(embedded: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of 1 - mean pairwise cosine between a group's members (0: identical
    images; NaN when no group has two members)."""
    values = []
    for group in np.unique(groups):
        members = embedded[groups == group]
        if len(members) > 1:
            cos = members @ members.T
            values.append(1.0 - cos[~np.eye(len(members), dtype=bool)].mean())
    return float(np.mean(values)) if values else float("nan")
