"""The face world: deterministic rendering, distinct identities, and the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.config import BenchmarkSpec, FaceWorldConfig, FactoryConfig
from factory.faceworld.build import build_faceworld
from factory.faceworld.identity import DIMENSIONS, describe, lookalike, sample_identity
from factory.faceworld.montage import montage
from factory.faceworld.nuisance import same_scene, sample_nuisance
from factory.faceworld.render import render_face
from factory.formats.recordio import InsightFaceRecordDataset
from factory.formats.verification_bin import read_bin


def _draw(seed: int, profile: str = "train"):
    rng = np.random.default_rng(seed)
    return sample_identity(rng), sample_nuisance(rng, profile)


@pytest.mark.parametrize("size", [32, 64, 112])
def test_render_is_deterministic_rgb_of_the_requested_size(size):
    identity, nuisance = _draw(1)
    first = render_face(identity, nuisance, size)
    assert first.shape == (size, size, 3) and first.dtype == np.uint8
    assert np.array_equal(first, render_face(identity, nuisance, size))


def test_identities_change_the_face_under_the_same_nuisance():
    identity, nuisance = _draw(2, "frontal")
    other = sample_identity(np.random.default_rng(3))
    same = render_face(identity, nuisance, 64).astype(float)
    different = render_face(other, nuisance, 64).astype(float)
    assert np.abs(same - different).mean() > 5.0


def test_lookalikes_are_closer_than_strangers():
    rng = np.random.default_rng(4)
    identities = [sample_identity(rng) for _ in range(200)]
    near = [np.linalg.norm(i - lookalike(i, rng, 0.15)) for i in identities]
    far = [np.linalg.norm(a - b) for a, b in zip(identities, identities[1:])]
    assert np.mean(near) < 0.5 * np.mean(far)
    assert all(0.0 <= v <= 1.0 for i in identities for v in lookalike(i, rng, 0.5))


def test_describe_maps_to_physical_ranges():
    values = describe(np.zeros(DIMENSIONS))
    assert values["face_width"] == pytest.approx(0.86)
    assert describe(np.ones(DIMENSIONS))["face_width"] == pytest.approx(1.06)


def test_profiles_stress_what_they_name():
    rng = np.random.default_rng(5)
    pose = [sample_nuisance(rng, "pose") for _ in range(100)]
    frontal = [sample_nuisance(rng, "frontal") for _ in range(100)]
    occluded = [sample_nuisance(rng, "occlusion") for _ in range(100)]
    assert min(abs(n.yaw) for n in pose) >= 0.65
    assert max(abs(n.yaw) for n in frontal) <= 0.25
    assert all(n.occlusion != "none" for n in occluded)
    with pytest.raises(ValueError, match="unknown nuisance profile"):
        sample_nuisance(rng, "sideways")


def test_same_scene_keeps_the_person_and_borrows_the_setting():
    rng = np.random.default_rng(4)
    scene, own = sample_nuisance(rng, "frontal"), sample_nuisance(rng, "pose")
    moved = same_scene(own, scene)
    assert (moved.background, moved.background_angle, moved.background_blobs, moved.clothing) \
        == (scene.background, scene.background_angle, scene.background_blobs, scene.clothing)
    assert (moved.yaw, moved.occlusion, moved.smile) == (own.yaw, own.occlusion, own.smile)


def test_montage_tiles_rows_and_pads_short_ones():
    tile = np.zeros((8, 8, 3), np.uint8)
    sheet = montage([[tile, tile, tile], [tile]], gap=2)
    assert sheet.shape == (2 + 2 * 10, 2 + 3 * 10, 3)
    assert sheet[12:20, 12:20].min() == 255  # padded cell


def _small_world(tmp_path, name="world") -> FactoryConfig:
    spec = dict(identities=20, pairs=40)
    return FactoryConfig(
        workdir=str(tmp_path),
        faceworld=FaceWorldConfig(
            out=str(tmp_path / name), image_size=32, identities=6, images_per_identity=3,
            montage_identities=2, montage_images=3, inquiry_identities=4,
            benchmarks=[BenchmarkSpec(name="a", **spec),
                        BenchmarkSpec(name="b", second_profile="pose", **spec)],
            validation_benchmarks=[BenchmarkSpec(name="val_b", second_profile="pose", **spec)],
        ),
    )


def test_build_writes_recordio_bins_montage_and_summary(tmp_path):
    config = _small_world(tmp_path)
    summary = build_faceworld(config)
    out = tmp_path / "world"
    dataset = InsightFaceRecordDataset(str(out / "train"))
    assert len(dataset) == 18 and dataset.num_classes == 6
    assert list(dataset.labels) == [label for label in range(6) for _ in range(3)]
    assert dataset.image(0).shape == (32, 32, 3)
    pairs = read_bin(str(out / "benchmarks" / "b.bin"))
    assert pairs.num_pairs == 40
    issame = np.asarray(pairs.issame).reshape(10, 4)
    assert (issame == [True, True, False, False]).all()  # balanced folds
    assert (out / "montage.png").stat().st_size > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["benchmarks"] == {"a": 40, "b": 40} and summary.train_images == 18
    assert "image_size: 32" in (out / "config.yaml").read_text()
    inquiry = InsightFaceRecordDataset(str(out / "inquiry"))
    count = config.faceworld.inquiry_identities
    assert len(inquiry) == count and list(inquiry.labels) == list(range(count))
    assert saved["inquiry_identities"] == count
    assert not any(np.array_equal(inquiry.image(i), dataset.image(j))
                   for i in range(count) for j in range(len(dataset)))


def test_build_is_deterministic_and_a_rerun_reuses_the_result(tmp_path):
    config = _small_world(tmp_path)
    build_faceworld(config)
    rec = tmp_path / "world" / "train" / "train.rec"
    stamp = rec.stat().st_mtime_ns
    build_faceworld(config)
    assert rec.stat().st_mtime_ns == stamp
    build_faceworld(_small_world(tmp_path, "again"))
    assert rec.read_bytes() == (tmp_path / "again" / "train" / "train.rec").read_bytes()


def test_validation_benchmarks_are_their_own_people_with_an_identity_per_image(tmp_path):
    """Validation pairs come from a stream of their own (no image of a test benchmark or of
    the training set), and the side file gives each image's identity consistently with the
    pairs: positives share one, negatives never do."""
    build_faceworld(_small_world(tmp_path))
    out = tmp_path / "world"
    validation = read_bin(str(out / "validation" / "val_b.bin"))
    identities = np.load(out / "validation" / "val_b.identities.npy")
    assert validation.num_pairs == 40 and identities.shape == (80,)
    issame = np.asarray(validation.issame)
    assert (identities[0::2][issame] == identities[1::2][issame]).all()
    assert (identities[0::2][~issame] != identities[1::2][~issame]).all()
    assert len(np.unique(identities)) >= 20  # the spec's identities, plus look-alikes
    test_images = {bytes(image) for image in read_bin(str(out / "benchmarks" / "b.bin")).images}
    assert not test_images & {bytes(image) for image in validation.images}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation_benchmarks"] == {"val_b": 40}


def test_default_validation_benchmarks_mirror_the_test_kinds_smaller():
    config = FaceWorldConfig()
    assert [(s.first_profile, s.second_profile) for s in config.validation_benchmarks] == \
        [(s.first_profile, s.second_profile) for s in config.benchmarks]
    assert all(v.pairs < t.pairs for v, t in zip(config.validation_benchmarks, config.benchmarks))
    with pytest.raises(ValueError, match="names must all differ"):
        FaceWorldConfig(validation_benchmarks=[BenchmarkSpec(name="fw_pose")])
