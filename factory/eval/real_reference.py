"""The real genuine scale: how close real photos of one person are to that person's reference.

A generator's sample is measured against its inquiry (one frontal image of an identity). The
same measurement of real photos says what the numbers mean: held-out real identities, each with
a frontal reference image rendered or chosen the way inquiries are, and further images of the
same person; every further image is compared with its identity's reference by the same network
that measures the samples. Per nuisance kind and over all: mean and std of the cosine, rank-1
among the reference images (is an image's most similar reference its own?) and the spread
between the images of one identity (1 - their mean pairwise cosine), the same figures the
compliance table gives per m.

Layout of a reference dataset (any dataset the factory reads): per identity, its first image is
the reference and the rest are genuine images. An optional ``kinds.json`` beside it (the face
world writes one) names the nuisance kind of each genuine image: ``{"kinds": [...],
"images_per_kind": K}`` meaning K images of each kind in that order after the reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from factory import storage
from factory.errors import FormatError
from factory.eval.embedding import embed, identity_spread
from factory.formats.dataset import FaceDataset, open_dataset
from factory.models.identity import inquiry_tensor
from factory.report import format_table

KINDS_FILE = "kinds.json"
ALL = "all"


@dataclass
class RealFigures:
    """One recognizer's real genuine figures for one nuisance kind (or all)."""

    images: int
    mean: float
    std: float
    rank1: float
    spread: float


@dataclass
class RealReference:
    """A recognizer's view of the real reference: figures per kind, ``all`` first."""

    recognizer: str
    identities: int
    kinds: dict[str, RealFigures]

    @property
    def overall(self) -> RealFigures:
        return self.kinds[ALL]

    def summary(self) -> dict:
        return {"recognizer": self.recognizer, "identities": self.identities,
                "kinds": {kind: asdict(figures) for kind, figures in self.kinds.items()}}


@dataclass
class ReferenceImages:
    """The reference dataset's first ``identities`` identities, split into references and
    genuine images (with each genuine image's owner and kind)."""

    references: np.ndarray  # [I, H, W, 3] uint8
    genuine: np.ndarray  # [N, H, W, 3] uint8
    owner: np.ndarray  # [N] index into references
    kind: np.ndarray  # [N] kind name of each genuine image


def read_kinds(uri: str) -> tuple[list[str], int] | None:
    """``(kinds, images_per_kind)`` from ``<uri>/kinds.json``, or None when there is none."""
    path = storage.join(uri, KINDS_FILE)
    if not storage.exists(path):
        return None
    document = storage.read_json_object(path)
    kinds, per_kind = document.get("kinds"), document.get("images_per_kind")
    if (not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds)
            or not isinstance(per_kind, int) or isinstance(per_kind, bool) or per_kind < 1):
        raise FormatError(f"{path}: expected {{\"kinds\": [names], \"images_per_kind\": "
                          "a positive integer}")
    return kinds, per_kind


def reference_images(dataset: FaceDataset, uri: str, identities: int,
                     layout: tuple[list[str], int] | None) -> ReferenceImages:
    """Split the first ``identities`` identities of ``dataset`` (in label order of first
    appearance) into their reference image and their genuine images."""
    members: dict[int, list[int]] = {}
    for index, label in enumerate(dataset.labels):
        label = int(label)
        if label not in members and len(members) == identities:
            continue
        members.setdefault(label, []).append(index)
    chosen = [indices for indices in members.values() if len(indices) > 1]
    if len(chosen) < 2:
        raise FormatError(f"{uri}: the real reference needs at least two identities "
                          "with a reference image and at least one more image each")
    references, genuine, owner, kind = [], [], [], []
    for position, indices in enumerate(chosen):
        references.append(dataset.image(indices[0]))
        for offset, index in enumerate(indices[1:]):
            genuine.append(dataset.image(index))
            owner.append(position)
            kind.append(_kind_of(offset, layout, uri))
    return ReferenceImages(np.stack(references), np.stack(genuine), np.asarray(owner),
                           np.asarray(kind))


def load_reference(uri: str, identities: int) -> ReferenceImages | None:
    """The first ``identities`` identities of the reference dataset at ``uri`` (None for an
    empty ``uri``: no reference configured)."""
    if not uri:
        return None
    return reference_images(open_dataset(uri), uri, identities, read_kinds(uri))


def reference_text(real: dict[str, RealReference]) -> list[str]:
    """Printed lines: what the reference is, then a table per kind by each recognizer."""
    if not real:
        return ["real genuine: no real reference (set generator.compliance.real_reference)"]
    names = [name for name in ("judge", "E_id") if name in real]
    first = real[names[0]]
    headers = ["real genuine, kind", "images"]
    for name in names:
        headers += [f"{name} mean", "std", "rank-1", "spread"]
    rows = []
    for kind in first.kinds:
        row: list = [kind, first.kinds[kind].images]
        for name in names:
            figures = real[name].kinds[kind]
            row += [figures.mean, figures.std, f"{100 * figures.rank1:.0f}%", figures.spread]
        rows.append(row)
    return [f"real genuine: {first.identities} held-out real identities, each image against its "
            "identity's frontal reference, rank-1 among the references",
            format_table(headers, rows)]


def _kind_of(offset: int, layout: tuple[list[str], int] | None, uri: str) -> str:
    if layout is None:
        return ALL
    kinds, per_kind = layout
    if offset >= len(kinds) * per_kind:
        raise FormatError(f"{uri}: an identity has more images than {KINDS_FILE} describes "
                          f"({len(kinds)} kinds x {per_kind} after the reference)")
    return kinds[offset // per_kind]


def genuine_scores(encoder: torch.nn.Module, images: ReferenceImages, image_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every genuine image's cosine to its own identity's reference, whether that reference is
    its most similar one (rank-1), and the genuine images' embeddings."""
    references = embed(encoder, inquiry_tensor(images.references, image_size))
    genuine = embed(encoder, inquiry_tensor(images.genuine, image_size))
    to_all = genuine @ references.T
    return (to_all[np.arange(len(genuine)), images.owner], to_all.argmax(1) == images.owner,
            genuine)


def measure_real_reference(encoder: torch.nn.Module, recognizer: str, images: ReferenceImages,
                           image_size: int) -> RealReference:
    """``recognizer``'s real genuine figures, per kind and over all."""
    similarity, own_nearest, genuine = genuine_scores(encoder, images, image_size)
    kinds = [ALL, *dict.fromkeys(k for k in images.kind.tolist() if k != ALL)]
    figures = {}
    for kind in kinds:
        chosen = np.ones(len(genuine), bool) if kind == ALL else images.kind == kind
        figures[kind] = RealFigures(
            images=int(chosen.sum()), mean=float(similarity[chosen].mean()),
            std=float(similarity[chosen].std()), rank1=float(own_nearest[chosen].mean()),
            spread=identity_spread(genuine[chosen], images.owner[chosen]))
    return RealReference(recognizer, len(images.references), figures)
