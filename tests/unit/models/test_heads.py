"""Margin heads: golden CosFace/ArcFace values, soft (mixup) targets, finiteness, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from factory.errors import ConfigError
from factory.models.heads import ArcFaceMargin, CosFaceMargin, MarginClassifier


def toy_classifier(margin: str = "cosface", scale: float = 2.0, value: float = 0.5):
    """Two classes whose centres are the 2-D unit axes."""
    head = MarginClassifier(2, 2, margin=margin, scale=scale, margin_value=value)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 0.1]]))  # norms must not matter
    return head


def test_cosface_loss_matches_a_hand_computation() -> None:
    head = toy_classifier(scale=2.0, value=0.5)
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    labels = torch.tensor([0, 1])
    # sample 0: cos = (1, 0), target 0: logits (2 * (1 - 0.5), 2 * 0) = (1, 0)
    #           CE = -log(e^1 / (e^1 + e^0)) = log(1 + e^-1)
    # sample 1: cos = (0.6, 0.8), target 1: logits (2 * 0.6, 2 * (0.8 - 0.5)) = (1.2, 0.6)
    #           CE = -log(e^0.6 / (e^1.2 + e^0.6)) = log(1 + e^0.6)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.6))) / 2  # 0.675375
    assert head(embeddings, labels).item() == pytest.approx(expected, rel=1e-6)


def test_arcface_loss_matches_a_hand_computation() -> None:
    head = toy_classifier("arcface", scale=2.0, value=0.5)
    # cos = (0.5, sqrt(3)/2): theta = pi/3 to class 0, the target
    embeddings = torch.tensor([[0.5, math.sqrt(3) / 2]])
    target_logit = 2 * math.cos(math.pi / 3 + 0.5)
    other_logit = 2 * math.sqrt(3) / 2
    expected = math.log(1 + math.exp(other_logit - target_logit))
    assert head(embeddings, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_default_margins_are_the_published_ones() -> None:
    assert MarginClassifier(8, 3).margin.m == 0.4
    assert MarginClassifier(8, 3, margin="arcface").margin.m == 0.5
    assert MarginClassifier(8, 3).margin.s == 64.0
    assert MarginClassifier(8, 3).weight.shape == (3, 8)


def test_unknown_margin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"margin.*cosface.*arcface"):
        MarginClassifier(8, 3, margin="sphereface")  # type: ignore[arg-type]


@pytest.fixture
def batch() -> tuple[MarginClassifier, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    head = MarginClassifier(16, 7, scale=8.0)
    embeddings = torch.randn(6, 16)
    first = torch.tensor([0, 1, 2, 3, 4, 5])
    second = torch.tensor([6, 6, 0, 1, 3, 2])
    return head, embeddings, first, second


def test_one_hot_soft_targets_equal_hard_labels(batch) -> None:
    head, embeddings, first, second = batch
    labels = torch.stack([first, second], dim=1)
    weights = torch.tensor([[1.0, 0.0]]).expand(6, 2)
    assert torch.allclose(head(embeddings, labels, weights), head(embeddings, first))


def test_two_hot_targets_mix_the_cross_entropies(batch) -> None:
    head, embeddings, first, second = batch
    labels = torch.stack([first, second], dim=1)
    weights = torch.tensor([[0.3, 0.7]]).expand(6, 2)
    expected = 0.3 * head(embeddings, first) + 0.7 * head(embeddings, second)
    assert torch.allclose(head(embeddings, labels, weights), expected)


def test_each_target_gets_its_own_margin(batch) -> None:
    head, embeddings, first, second = batch
    cosine = head.cosine(embeddings)
    per_target = [
        F.cross_entropy(8.0 * cosine.scatter(1, t[:, None], cosine.gather(1, t[:, None]) - 0.4), t)
        for t in (first, second)
    ]
    labels = torch.stack([first, second], dim=1)
    weights = torch.tensor([[0.5, 0.5]]).expand(6, 2)
    loss = head(embeddings, labels, weights)
    assert torch.allclose(loss, 0.5 * per_target[0] + 0.5 * per_target[1])


def test_soft_labels_need_matching_weights(batch) -> None:
    head, embeddings, first, second = batch
    labels = torch.stack([first, second], dim=1)
    with pytest.raises(ValueError):
        head(embeddings, labels)
    with pytest.raises(ValueError):
        head(embeddings, labels, torch.ones(6, 3) / 3)


def test_cosines_are_clamped() -> None:
    logits = CosFaceMargin(s=1.0, m=0.0)(torch.tensor([[1.5, -1.5]]), torch.tensor([0]))
    assert torch.equal(logits, torch.tensor([[1.0, -1.0]]))


def test_arcface_is_finite_and_monotone_over_all_angles() -> None:
    margin = ArcFaceMargin(s=64.0, m=0.5)
    cos = torch.linspace(-1.0, 1.0, 4001, dtype=torch.float64).requires_grad_()
    cosine = torch.stack([cos, torch.zeros_like(cos)], dim=1)
    target = margin(cosine, torch.zeros(len(cos), dtype=torch.long))[:, 0]
    assert torch.isfinite(target).all()
    assert (target.diff() >= 0).all()  # larger cosine (smaller angle), never a smaller logit
    target.sum().backward()
    assert torch.isfinite(cos.grad).all()
    # theta = pi: beyond pi - m, so the fallback cos - m sin(m) applies
    assert target[0].item() == pytest.approx(64 * (-1 - 0.5 * math.sin(0.5)))
    # theta = 0: cos(0 + m)
    assert target[-1].item() == pytest.approx(64 * math.cos(0.5))


@pytest.mark.parametrize("margin", ["cosface", "arcface"])
def test_gradients_flow_to_embeddings_and_centres(margin: str) -> None:
    torch.manual_seed(1)
    head = MarginClassifier(8, 4, margin=margin)
    embeddings = torch.randn(3, 8, requires_grad=True)
    with torch.no_grad():  # include the worst case: an embedding opposite its own centre
        embeddings[0] = -head.weight[2]
    loss = head(embeddings, torch.tensor([[2, 0], [1, 1], [3, 2]]), torch.tensor(
        [[0.3, 0.7], [1.0, 0.0], [0.55, 0.45]]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0
