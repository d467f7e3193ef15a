"""The real genuine scale: reference layout, the figures on a lookup encoder whose answer is
known, the face world's reference and judge sets, and the report's use of both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factory.config import BenchmarkSpec, ComplianceConfig, FaceWorldConfig, FactoryConfig
from factory.errors import FormatError
from factory.eval.real_reference import (
    ALL,
    load_reference,
    measure_real_reference,
    read_kinds,
    reference_images,
    reference_text,
)
from factory.faceworld.build import (
    JUDGE_IDENTITY_STREAM,
    REFERENCE_KINDS,
    build_faceworld,
    training_identity,
)
from factory.formats.recordio import InsightFaceRecordDataset

SIZE = 8


class CodedImages:
    """A dataset whose image i carries the number ``codes[i]`` in its first pixel."""

    def __init__(self, labels: list[int], codes: list[int]) -> None:
        self.labels, self.codes = np.asarray(labels), codes
        self.num_classes = len(set(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        image[0, 0, 0] = self.codes[index]
        return image


class LookupEncoder(torch.nn.Module):
    """Embeds an image as ``table[code]``, the code read back from its first pixel."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = torch.nn.functional.normalize(torch.as_tensor(table, dtype=torch.float32),
                                                   dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        codes = ((images[:, 0, 0, 0] + 1) * 127.5).round().long()
        return self.table[codes]


def _two_kind_world():
    """3 identities, each: a reference (code 10 i), 2 'near' images embedded as the reference,
    2 'far' images embedded orthogonally to every reference."""
    labels, codes = [], []
    for identity in range(3):
        labels += [identity] * 5
        codes += [10 * identity, 10 * identity, 10 * identity, 10 * identity + 1,
                  10 * identity + 2]
    table = np.zeros((256, 8))
    for identity in range(3):
        table[10 * identity, identity] = 1.0
        table[10 * identity + 1, 3 + identity] = 1.0
        table[10 * identity + 2, 6] = 1.0
    return CodedImages(labels, codes), LookupEncoder(table)


def test_references_and_kinds_follow_the_layout():
    dataset, _ = _two_kind_world()
    images = reference_images(dataset, "memory://ref", 3, (["near", "far"], 2))
    assert images.references.shape == (3, SIZE, SIZE, 3) and len(images.genuine) == 12
    assert images.owner.tolist() == [i for i in range(3) for _ in range(4)]
    assert images.kind.tolist() == ["near", "near", "far", "far"] * 3
    assert [int(r[0, 0, 0]) for r in images.references] == [0, 10, 20]
    first_two = reference_images(dataset, "memory://ref", 2, None)
    assert len(first_two.references) == 2 and set(first_two.kind.tolist()) == {ALL}
    with pytest.raises(FormatError, match="more images than kinds.json"):
        reference_images(dataset, "memory://ref", 3, (["near"], 2))


def test_figures_per_kind_on_an_encoder_whose_answer_is_known():
    dataset, encoder = _two_kind_world()
    images = reference_images(dataset, "memory://ref", 3, (["near", "far"], 2))
    real = measure_real_reference(encoder, "lookup", images, SIZE)
    near, far, overall = real.kinds["near"], real.kinds["far"], real.overall
    assert (near.images, far.images, overall.images) == (6, 6, 12)
    assert near.mean == pytest.approx(1.0) and near.std == pytest.approx(0.0, abs=1e-6)
    assert near.rank1 == 1.0
    assert far.mean == pytest.approx(0.0, abs=1e-6)
    assert overall.mean == pytest.approx(0.5) and overall.std == pytest.approx(0.5)
    # within one identity: the near images are copies, the far ones orthogonal to each other
    assert near.spread == pytest.approx(0.0, abs=1e-6) and far.spread == pytest.approx(1.0)
    assert list(real.kinds) == [ALL, "near", "far"]
    text = "\n".join(reference_text({"E_id": real}))
    assert "3 held-out real identities" in text and "far" in text


def test_the_face_world_writes_a_reference_and_a_judge_set_of_their_own(tmp_path):
    spec = dict(identities=20, pairs=40)
    config = FactoryConfig(workdir=str(tmp_path), faceworld=FaceWorldConfig(
        out=str(tmp_path / "world"), image_size=32, identities=6, images_per_identity=3,
        inquiry_identities=4, judge_identities=5, reference_identities=3,
        reference_images_per_kind=2, montage_identities=2, montage_images=3,
        benchmarks=[BenchmarkSpec(name="a", **spec)],
        validation_benchmarks=[BenchmarkSpec(name="val_a", **spec)]))
    summary = build_faceworld(config)
    out = tmp_path / "world"
    judge = InsightFaceRecordDataset(str(out / "judge-train"))
    train = InsightFaceRecordDataset(str(out / "train"))
    assert len(judge) == 15 and judge.num_classes == 5
    assert (summary.judge_identities, summary.reference_identities) == (5, 3)
    train_images = {bytes(train.image(i)) for i in range(len(train))}
    assert not train_images & {bytes(judge.image(i)) for i in range(len(judge))}
    reference_uri = str(out / "reference")
    assert read_kinds(reference_uri) == (list(REFERENCE_KINDS), 2)
    reference = load_reference(reference_uri, 3)
    assert len(reference.references) == 3 and len(reference.genuine) == 3 * 4 * 2
    inquiry = InsightFaceRecordDataset(str(out / "inquiry"))
    inquiry_images = {bytes(inquiry.image(i)) for i in range(len(inquiry))}
    assert not inquiry_images & {bytes(image) for image in reference.references}
    assert load_reference("", 3) is None


def test_no_judge_identity_is_a_training_identity_of_e_id_or_the_generator():
    """The quickstart's face world: 1000 training identities (E_id, the generator) and 1000
    judge identities, from separate streams; no parameter vector is shared, and the nearest
    pair is no closer than two training identities are to each other."""
    cfg = FaceWorldConfig(image_size=32, identities=1000, images_per_identity=12)
    train = np.stack([training_identity(cfg, i) for i in range(cfg.identities)])
    judge = np.stack([training_identity(cfg, i, JUDGE_IDENTITY_STREAM)
                      for i in range(cfg.judge_set_identities)])
    assert cfg.judge_set_identities == 1000
    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.clip(squared, 0, None))

    across = distances(train, judge).min()
    within = distances(train, train)[~np.eye(len(train), dtype=bool)].min()
    assert across > 0 and across >= 0.5 * within


def test_kinds_file_must_name_kinds_and_a_count(tmp_path):
    (tmp_path / "kinds.json").write_text(json.dumps({"kinds": [], "images_per_kind": 2}))
    with pytest.raises(FormatError, match="kinds.json"):
        read_kinds(str(tmp_path))
    assert read_kinds(str(tmp_path / "absent")) is None


def test_the_report_identities_are_kept_from_the_validation_ones():
    assert ComplianceConfig().first_identity >= ComplianceConfig().validation_identities
    with pytest.raises(ValueError, match="must not reach first_identity"):
        ComplianceConfig(first_identity=10, validation_identities=12)


def test_the_report_and_the_validation_inquiries_are_different_people():
    from factory.eval.compliance import first_image_per_identity

    labels = [label for label in range(6) for _ in range(2)]
    dataset = CodedImages(labels, list(range(12)))
    validation = first_image_per_identity(dataset, 2)
    report = first_image_per_identity(dataset, 3, skip=3)
    assert [int(image[0, 0, 0]) for image in validation] == [0, 2]
    assert [int(image[0, 0, 0]) for image in report] == [6, 8, 10]
    with pytest.raises(FormatError, match="after the first 5"):
        first_image_per_identity(dataset, 3, skip=5)
