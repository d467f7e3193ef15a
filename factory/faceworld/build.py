"""Write the face world in the formats real users have: RecordIO training set, .bin benchmarks.

Layout under the output URI::

    train/train.rec, train/train.idx, train/property   insightface RecordIO, N ids x K images
    judge-train/train.rec, ...                         RecordIO, the judge's own ids x K images
    inquiry/train.rec, ...                             RecordIO, held-out ids x 1 frontal image
    reference/train.rec, ..., reference/kinds.json     RecordIO, held-out ids: a frontal
                                                       reference, then images of each nuisance
                                                       kind (the real genuine scale)
    benchmarks/<name>.bin                              test: insightface verification pairs
    validation/<name>.bin, validation/<name>.identities.npy
                                                       validation pairs, and the identity of
                                                       each image (for impostor thresholds)
    montage.png                                        rows identities, columns their images
    summary.json, config.yaml                          counts, timings, resolved config

Every random draw comes from a seed sequence keyed by (seed, stream, index), so the output is
byte-identical for a given config, and identities of the training set, of the judge's training
set, of the inquiries, of the real reference and of each test and validation benchmark are drawn
from separate streams (disjoint identities). A
rerun with the same config finds ``summary.json`` and returns it instead of rendering again.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from factory import layout, storage
from factory.config import (
    VALIDATION_DIR,
    BenchmarkSpec,
    FaceWorldConfig,
    FactoryConfig,
    save_config,
)
from factory.errors import FormatError
from factory.faceworld.identity import lookalike, sample_identity
from factory.faceworld.montage import montage
from factory.faceworld.nuisance import Nuisance, same_scene, sample_nuisance
from factory.faceworld.render import render_face
from factory.formats.images import encode_jpeg, encode_png
from factory.formats.recordio import write_insightface_rec
from factory.formats.space import RECORD_OVERHEAD, jpeg_bytes
from factory.formats.verification_bin import IDENTITIES_SUFFIX, write_bin
from factory.provenance import code_version

TRAIN_IDENTITY_STREAM, TRAIN_IMAGE_STREAM, INQUIRY_STREAM, BENCHMARK_STREAM_BASE = 0, 1, 50, 100
JUDGE_IDENTITY_STREAM, JUDGE_IMAGE_STREAM = 2, 3
"""The judge's training identities: a stream of their own, so the judge shares no identity with
E_id and the generator (trained on stream 0), nor with inquiries, reference or benchmarks."""
REFERENCE_STREAM = 60
REFERENCE_KINDS = ("frontal", "pose", "occlusion", "lighting")
"""The nuisance kinds of the real reference: those the benchmarks' second images are drawn
under, so "real genuine" means the same thing in the report as on the benchmarks."""
REFERENCE_KINDS_FILE = "kinds.json"
VALIDATION_STREAM_BASE = 1000
"""Validation benchmark i draws from stream 1000 + i: never a test benchmark's (100 + i)."""


@dataclass
class FaceWorldSummary:
    """What ``factory faceworld`` wrote, as printed and saved to ``summary.json``."""

    out: str
    image_size: int
    identities: int
    train_images: int
    benchmarks: dict[str, int] = field(default_factory=dict)
    validation_benchmarks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    code_version: str = ""
    config: dict = field(default_factory=dict)

    inquiry_identities: int = 0
    judge_identities: int = 0
    reference_identities: int = 0

    @property
    def train_uri(self) -> str:
        return storage.join(self.out, "train")

    @property
    def judge_train_uri(self) -> str:
        return storage.join(self.out, "judge-train")

    @property
    def reference_uri(self) -> str:
        return storage.join(self.out, "reference")

    @property
    def inquiry_uri(self) -> str:
        return storage.join(self.out, "inquiry")

    def benchmark_uri(self, name: str) -> str:
        return storage.join(self.out, "benchmarks", f"{name}.bin")

    def validation_uri(self, name: str) -> str:
        return storage.join(self.out, VALIDATION_DIR, f"{name}.bin")


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def training_identity(cfg: FaceWorldConfig, label: int,
                      stream: int = TRAIN_IDENTITY_STREAM) -> np.ndarray:
    """The parameter vector of training identity ``label`` (of the judge's set with
    ``stream=JUDGE_IDENTITY_STREAM``)."""
    return sample_identity(_rng(cfg.seed, stream, label))


def _train_images(cfg: FaceWorldConfig, label: int, identity_stream: int = TRAIN_IDENTITY_STREAM,
                  image_stream: int = TRAIN_IMAGE_STREAM) -> Iterator[tuple[np.ndarray, int]]:
    """The training images of one identity, with the JPEG quality each one is stored at."""
    identity = training_identity(cfg, label, identity_stream)
    rng = _rng(cfg.seed, image_stream, label)
    for _ in range(cfg.images_per_identity):
        nuisance = sample_nuisance(rng, "train")
        yield render_face(identity, nuisance, cfg.image_size), nuisance.jpeg_quality


def _write_train_set(cfg: FaceWorldConfig, out: str, folder: str = "train",
                     identities: int | None = None, identity_stream: int = TRAIN_IDENTITY_STREAM,
                     image_stream: int = TRAIN_IMAGE_STREAM) -> int:
    """A training set of ``identities`` x ``cfg.images_per_identity`` images under the
    ``train`` nuisance profile: the factory's own (streams 0, 1) or the judge's (2, 3)."""
    identities = cfg.identities if identities is None else identities
    total = identities * cfg.images_per_identity

    def samples() -> Iterator[tuple[int, bytes]]:
        with tqdm(total=total, desc=f"face world: {folder}", unit="img", leave=False) as bar:
            for label in range(identities):
                for image, quality in _train_images(cfg, label, identity_stream, image_stream):
                    bar.update()
                    yield label, encode_jpeg(image, quality)

    write_insightface_rec(
        storage.join(out, folder),
        samples(),
        num_images=total,
        num_classes=identities,
        image_size=(cfg.image_size, cfg.image_size),
    )
    return total


def _held_out_face(cfg: FaceWorldConfig, stream: int, label: int
                   ) -> tuple[np.ndarray, np.random.Generator, bytes]:
    """A held-out identity of ``stream``, its random stream (positioned after the draws made
    here) and its frontal image as JPEG: an inquiry, or a real reference's reference image."""
    rng = _rng(cfg.seed, stream, label)
    identity = sample_identity(rng)
    image = render_face(identity, sample_nuisance(rng, "frontal"), cfg.image_size)
    return identity, rng, encode_jpeg(image, 95)


def _write_reference_set(cfg: FaceWorldConfig, out: str) -> int:
    """Held-out identities, each a frontal reference image rendered as inquiries are, then
    ``cfg.reference_images_per_kind`` images of every kind in REFERENCE_KINDS: the real genuine
    similarities a generator's samples are read against (``factory generator-report``)."""
    per_identity = 1 + len(REFERENCE_KINDS) * cfg.reference_images_per_kind

    def samples() -> Iterator[tuple[int, bytes]]:
        for label in range(cfg.reference_set_identities):
            identity, rng, reference = _held_out_face(cfg, REFERENCE_STREAM, label)
            yield label, reference
            for kind in REFERENCE_KINDS:
                for _ in range(cfg.reference_images_per_kind):
                    nuisance = sample_nuisance(rng, kind)
                    yield label, encode_jpeg(render_face(identity, nuisance, cfg.image_size),
                                             nuisance.jpeg_quality)

    uri = storage.join(out, "reference")
    write_insightface_rec(
        uri,
        samples(),
        num_images=cfg.reference_set_identities * per_identity,
        num_classes=cfg.reference_set_identities,
        image_size=(cfg.image_size, cfg.image_size),
    )
    storage.write_text(storage.join(uri, REFERENCE_KINDS_FILE), json.dumps(
        {"kinds": list(REFERENCE_KINDS), "images_per_kind": cfg.reference_images_per_kind,
         "layout": "per identity: the frontal reference image, then images_per_kind images "
                   "of each kind in the order of kinds"}, indent=2))
    return cfg.reference_set_identities


def _write_inquiry_set(cfg: FaceWorldConfig, out: str) -> int:
    """Held-out identities, one frontal image each: inquiries for the generator's checks and
    for synthesis, disjoint from the training set and from every benchmark."""

    def samples() -> Iterator[tuple[int, bytes]]:
        for label in range(cfg.inquiry_identities):
            yield label, _held_out_face(cfg, INQUIRY_STREAM, label)[2]

    write_insightface_rec(
        storage.join(out, "inquiry"),
        samples(),
        num_images=cfg.inquiry_identities,
        num_classes=cfg.inquiry_identities,
        image_size=(cfg.image_size, cfg.image_size),
    )
    return cfg.inquiry_identities


def benchmark_pairs(
    cfg: FaceWorldConfig, spec: BenchmarkSpec, stream: int
) -> Iterator[tuple[np.ndarray, np.ndarray, bool, int, int]]:
    """Pairs of one benchmark, fold by fold: each fold holds its positives then its negatives,
    each pair with the identity number of its two images (look-alikes get numbers of their own,
    from ``spec.identities`` on: each is another person).

    Positives are two images of one identity under the spec's two nuisance profiles, drawn
    independently (hard positives come from large nuisance gaps). Negatives pair two identities,
    a share of them a look-alike drawn close in parameter space, and a share photographed in the
    same scene (background, clothing, light): different people who look alike in pixels, so a
    benchmark rewards identity, not imaging conditions (hard negatives).
    """
    rng = _rng(cfg.seed, stream, 0)
    identities = [sample_identity(_rng(cfg.seed, stream, 1 + i)) for i in range(spec.identities)]
    per_fold = spec.pairs // 10
    next_lookalike = spec.identities
    order = iter(rng.permutation(np.arange(spec.pairs) % spec.identities))

    def render(identity: np.ndarray, nuisance: Nuisance) -> np.ndarray:
        return render_face(identity, nuisance, cfg.image_size)

    for _ in range(10):
        for _ in range(per_fold // 2):
            index = int(next(order))
            first, second = (sample_nuisance(rng, p) for p in (spec.first_profile,
                                                                spec.second_profile))
            yield render(identities[index], first), render(identities[index], second), True, \
                index, index
        for _ in range(per_fold // 2):
            index = next(order)
            if rng.random() < spec.lookalike_fraction:
                other = lookalike(identities[index], rng, spec.lookalike_distance)
                other_index, next_lookalike = next_lookalike, next_lookalike + 1
            else:
                other_index = int((index + rng.integers(1, spec.identities)) % spec.identities)
                other = identities[other_index]
            first, second = (sample_nuisance(rng, p) for p in (spec.first_profile,
                                                                spec.second_profile))
            if rng.random() < spec.same_scene_negatives:
                second = same_scene(second, first)
            yield render(identities[index], first), render(other, second), False, \
                int(index), other_index


def _write_benchmark(cfg: FaceWorldConfig, spec: BenchmarkSpec, stream: int, uri: str,
                     with_identities: bool = False) -> int:
    """One .bin; ``with_identities`` also writes ``<name>.identities.npy`` beside it (the
    identity number of every image, in .bin order), which the .bin format cannot hold."""
    images: list[bytes] = []
    issame: list[bool] = []
    identities: list[int] = []
    pairs = benchmark_pairs(cfg, spec, stream)
    for first, second, same, first_id, second_id in tqdm(
            pairs, total=spec.pairs, desc=f"face world: {spec.name}", unit="pair", leave=False):
        images += [encode_jpeg(first, 95), encode_jpeg(second, 95)]
        issame.append(same)
        identities += [first_id, second_id]
    write_bin(uri, images, issame)
    if with_identities:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(identities, dtype=np.int64), allow_pickle=False)
        storage.write_bytes(uri.removesuffix(".bin") + IDENTITIES_SUFFIX, buffer.getvalue())
    return len(issame)


def _write_montage(cfg: FaceWorldConfig, out: str) -> None:
    rows = []
    for label in range(min(cfg.montage_identities, cfg.identities)):
        row = [image for image, _ in _train_images(cfg, label)]
        rows.append(row[: cfg.montage_images])
    storage.write_bytes(storage.join(out, "montage.png"), encode_png(montage(rows)))


def load_summary(out: str) -> FaceWorldSummary | None:
    """The summary of a complete face world at ``out``, or None if there is none yet."""
    uri = storage.join(out, "summary.json")
    if not storage.exists(uri):
        return None
    try:
        return FaceWorldSummary(**storage.read_json_object(uri))
    except TypeError as exc:  # a key the summary does not have, or one it needs missing
        raise FormatError(f"{uri}: not a face-world summary ({exc}); remove it to render the "
                          "face world again") from None


SPACE_QUALITY = 95
"""The JPEG quality the face world's space estimate assumes of every image: the highest it
writes (benchmarks, inquiries and references; training images take 55 to 95)."""


def faceworld_images(cfg: FaceWorldConfig) -> int:
    """Every image the face world renders: both training sets, the inquiries, the real
    reference, and two per pair of every test and validation benchmark."""
    per_reference = 1 + len(REFERENCE_KINDS) * cfg.reference_images_per_kind
    return ((cfg.identities + cfg.judge_set_identities) * cfg.images_per_identity
            + cfg.inquiry_identities + cfg.reference_set_identities * per_reference
            + 2 * sum(spec.pairs for spec in [*cfg.benchmarks, *cfg.validation_benchmarks]))


def build_faceworld(config: FactoryConfig) -> FaceWorldSummary:
    """Render the face world configured in ``config.faceworld``; reuse a complete identical one."""
    cfg, out = config.faceworld, layout.faceworld_uri(config)
    resolved = cfg.model_dump(mode="json")
    existing = load_summary(out)
    if existing is not None and existing.config == resolved:
        return existing
    storage.ensure_writable(out)
    images = faceworld_images(cfg)
    needed = images * (jpeg_bytes(cfg.image_size, SPACE_QUALITY) + RECORD_OVERHEAD)
    with storage.space_for(out, needed, f"the face world's {images:,} images"):
        start = time.perf_counter()
        train_images = _write_train_set(cfg, out)
        if cfg.judge_set_identities:
            _write_train_set(cfg, out, "judge-train", cfg.judge_set_identities,
                             JUDGE_IDENTITY_STREAM, JUDGE_IMAGE_STREAM)
        inquiry_identities = _write_inquiry_set(cfg, out)
        if cfg.reference_set_identities:
            _write_reference_set(cfg, out)
        benchmarks = {
            spec.name: _write_benchmark(cfg, spec, BENCHMARK_STREAM_BASE + i,
                                        storage.join(out, "benchmarks", f"{spec.name}.bin"))
            for i, spec in enumerate(cfg.benchmarks)
        }
        validation = {
            spec.name: _write_benchmark(cfg, spec, VALIDATION_STREAM_BASE + i,
                                        storage.join(out, VALIDATION_DIR, f"{spec.name}.bin"),
                                        with_identities=True)
            for i, spec in enumerate(cfg.validation_benchmarks)
        }
        _write_montage(cfg, out)
        summary = FaceWorldSummary(
            out=out,
            image_size=cfg.image_size,
            identities=cfg.identities,
            train_images=train_images,
            inquiry_identities=inquiry_identities,
            judge_identities=cfg.judge_set_identities,
            reference_identities=cfg.reference_set_identities,
            benchmarks=benchmarks,
            validation_benchmarks=validation,
            seconds=round(time.perf_counter() - start, 2),
            code_version=code_version(),
            config=resolved,
        )
        save_config(cfg, storage.join(out, "config.yaml"), summary.code_version)
        # summary.json is written last: its presence marks the face world complete.
        storage.write_text(storage.join(out, "summary.json"),
                           json.dumps(asdict(summary), indent=2))
        return summary


def print_summary(summary: FaceWorldSummary) -> None:
    print(f"face world at {summary.out} ({summary.code_version})")
    print(f"  training set: {summary.identities} identities, {summary.train_images} images, "
          f"{summary.image_size}x{summary.image_size} px  ->  {summary.train_uri}")
    if summary.judge_identities:
        print(f"  judge's training set: {summary.judge_identities} identities of its own  ->  "
              f"{summary.judge_train_uri}")
    print(f"  inquiry set: {summary.inquiry_identities} held-out identities x 1 image  ->  "
          f"{summary.inquiry_uri}")
    if summary.reference_identities:
        print(f"  real reference: {summary.reference_identities} held-out identities, a frontal "
              f"reference and images of each nuisance kind  ->  {summary.reference_uri}")
    for name, pairs in summary.benchmarks.items():
        print(f"  test benchmark {name}: {pairs} pairs  ->  {summary.benchmark_uri(name)}")
    for name, pairs in summary.validation_benchmarks.items():
        print(f"  validation benchmark {name}: {pairs} pairs  ->  {summary.validation_uri(name)}")
    print(f"  montage: {storage.join(summary.out, 'montage.png')}  ({summary.seconds:.1f} s)")
