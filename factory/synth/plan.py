"""What a synthesis run makes, decided before any image is sampled.

The plan is a pure function of the config, the inquiry embeddings and the seed: which inquiry
identities are kept (1-shot, every pair below ``inquiry.max_similarity``, a number or E_id's
threshold at an FPR, resolved before planning), which extra
identities SynFace identity mixup makes (``normalise(phi f_i + (1 - phi) f_j)``), which m and
seed every sample gets, and which identities share a shard. An identity's samples always land in
one shard, so its center is known when the shard is written. Because nothing here depends on
timing or on which actor runs what, a rerun plans exactly the same keys.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from factory.config import MValuesConfig, SynthesisConfig


@dataclass
class PlannedIdentity:
    """One identity to synthesise: its label, where its embedding came from, the embedding.

    The embedding is a float64 array (a mixup vector is computed in float64; the sampler casts
    it to float32) and is left out of equality, which compares the record's plain fields.
    """

    label: int
    inquiry: str
    embedding: np.ndarray = field(compare=False, repr=False)
    partner: str | None = None
    phi: float | None = None
    image_index: int | None = None
    parents: list[int] | None = None  # labels of the two mixed identities (first gets phi)
    mixup_labels: str | None = None  # "soft" or "new_class" (InquiryConfig.mixup_labels)


def identities_to_bytes(identities: list[PlannedIdentity], inquiry_filter: dict) -> bytes:
    """The planned identities (plain fields as JSON, embeddings as an exact float64 array)
    and the inquiry filter's record, as one ``.npz`` file's bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, identities=np.array(json.dumps(plain_records(identities))),
             inquiry_filter=np.array(json.dumps(inquiry_filter)),
             embeddings=np.stack([identity.embedding for identity in identities]))
    return buffer.getvalue()


def identities_from_bytes(data: bytes) -> tuple[list[PlannedIdentity], dict]:
    """What :func:`identities_to_bytes` wrote; ValueError (or KeyError) for anything else."""
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        records = json.loads(str(saved["identities"]))
        embeddings = np.asarray(saved["embeddings"], np.float64)
        inquiry_filter = json.loads(str(saved["inquiry_filter"]))
    return from_records(records, embeddings), inquiry_filter


def plain_records(identities: list[PlannedIdentity]) -> list[dict]:
    """Each identity's plain fields (everything but the embedding), JSON-ready."""
    return [{key: value for key, value in asdict(identity).items() if key != "embedding"}
            for identity in identities]


def from_records(records: list[dict], embeddings: np.ndarray) -> list[PlannedIdentity]:
    """The identities :func:`plain_records` described, each with its float64 embedding row;
    ValueError when the two counts differ."""
    if len(records) != len(embeddings):
        raise ValueError(f"{len(records)} identities, {len(embeddings)} embeddings")
    return [PlannedIdentity(**record, embedding=np.asarray(row, np.float64))
            for record, row in zip(records, embeddings)]


def m_candidates(cfg: MValuesConfig) -> list[float]:
    """The m values cycled over an identity's images (``values`` and ``range`` kinds)."""
    if cfg.kind == "values":
        return [float(m) for m in cfg.values]
    count = int(np.floor((cfg.high - cfg.low) / cfg.interval + 1e-9)) + 1
    return [round(cfg.low + i * cfg.interval, 6) for i in range(count)]


def sample_seed(seed: int, label: int, index: int) -> int:
    """The noise seed of image ``index`` of identity ``label``: unique within a dataset."""
    return (seed * 10_000_019 + label) * 100_003 + index


def sample_m(cfg: MValuesConfig, seed: int, label: int, index: int) -> float:
    """The configured value of image ``index`` of identity ``label``: its requested m, or on a
    measured ``cfg.axis`` its target similarity (factory.eval.compliance_curve)."""
    if cfg.kind in ("values", "range"):
        candidates = m_candidates(cfg)
        return candidates[index % len(candidates)]
    rng = np.random.default_rng([seed, label, index])
    if cfg.kind == "uniform":
        return float(rng.uniform(cfg.low, cfg.high))
    return float(np.clip(rng.normal(cfg.mean, cfg.std), -1.0, 1.0))


def select_inquiries(embeddings: np.ndarray, max_similarity: float, count: int) -> list[int]:
    """Greedy 1-shot filter: walk the identities in order, keep one if its cosine to every kept
    one is below ``max_similarity``, stop at ``count``."""
    kept: list[int] = []
    # the kept rows, appended in place: indexing embeddings[kept] anew for every candidate
    # would copy the growing matrix each time (quadratic memory traffic at 10k identities)
    rows = np.empty((min(count, len(embeddings)), embeddings.shape[1]), embeddings.dtype)
    for index in range(len(embeddings)):
        if kept and float(np.max(rows[:len(kept)] @ embeddings[index])) >= max_similarity:
            continue
        rows[len(kept)] = embeddings[index]
        kept.append(index)
        if len(kept) == count:
            break
    return kept


def mixup_identities(embeddings: np.ndarray, count: int, phis: list[float],
                     seed: int) -> list[tuple[int, int, float, np.ndarray]]:
    """``count`` SynFace identity-mixup identities from pairs of rows of ``embeddings``:
    ``(i, j, phi, normalise(phi f_i + (1 - phi) f_j))``, pairs and phi drawn from ``seed``."""
    if count and len(embeddings) < 2:
        raise ValueError("identity mixup needs at least two inquiry identities")
    rng = np.random.default_rng([seed, 7])
    mixed = []
    for _ in range(count):
        i, j = (int(v) for v in rng.choice(len(embeddings), size=2, replace=False))
        phi = float(rng.choice(phis))
        vector = phi * embeddings[i] + (1.0 - phi) * embeddings[j]
        mixed.append((i, j, phi, vector / max(float(np.linalg.norm(vector)), 1e-12)))
    return mixed


def plan_identities(cfg: SynthesisConfig, embeddings: np.ndarray, names: list[str],
                    image_indices: list[int], max_similarity: float | None = None
                    ) -> list[PlannedIdentity]:
    """Kept inquiries (labels 0..) then mixup identities (labels after them).

    ``embeddings`` holds one unit-length row per inquiry identity, ``names`` its id, and
    ``image_indices`` the dataset index of its inquiry image; ``max_similarity`` is the filter's
    threshold, resolved when the config gives an FPR (default: ``inquiry.max_similarity``).
    """
    threshold = cfg.inquiry.max_similarity if max_similarity is None else max_similarity
    kept = select_inquiries(embeddings, float(threshold), cfg.inquiry.identities)
    identities = [
        # a view of the float64 row, not a copy: the driver holds the plan's embeddings once
        PlannedIdentity(label, names[index], np.asarray(embeddings[index], np.float64),
                        image_index=image_indices[index])
        for label, index in enumerate(kept)
    ]
    kept_embeddings = embeddings[kept]
    for i, j, phi, vector in mixup_identities(kept_embeddings, cfg.inquiry.mixup_identities,
                                              cfg.inquiry.mixup_phi, cfg.seed):
        identities.append(PlannedIdentity(
            len(identities), identities[i].inquiry, vector.astype(np.float64),
            partner=identities[j].inquiry, phi=phi, parents=[i, j],
            mixup_labels=cfg.inquiry.mixup_labels))
    return identities


@dataclass
class ShardItem:
    """One work item of the actor pool: a shard index and the identities it holds."""

    shard: int
    identities: list[PlannedIdentity]

    def embeddings(self) -> np.ndarray:
        """``[identities, D]`` float64: the conditioning embedding of each identity."""
        return np.stack([identity.embedding for identity in self.identities])

    def to_row(self) -> dict:
        """A Ray Data row: the embeddings as an array (an Arrow tensor column, exact float64),
        the few plain fields of each identity as one JSON string."""
        return {"shard": self.shard, "item": json.dumps(plain_records(self.identities)),
                "embeddings": self.embeddings()}

    @classmethod
    def from_row(cls, shard: int, item: str, embeddings: np.ndarray) -> ShardItem:
        try:
            return cls(int(shard), from_records(json.loads(item), embeddings))
        except ValueError as exc:
            raise ValueError(f"shard {shard}: {exc}") from None


def shard_items(identities: list[PlannedIdentity], per_shard: int) -> list[ShardItem]:
    """Consecutive identities, ``per_shard`` to a shard."""
    return [ShardItem(index, identities[start:start + per_shard])
            for index, start in enumerate(range(0, len(identities), per_shard))]


def planned_keys(cfg: SynthesisConfig, identities: list[PlannedIdentity]) -> list[str]:
    """Every sample key the plan will write, in shard order."""
    keys = []
    for identity in identities:
        keys += [sample_key(identity.label, index) for index in range(cfg.images_per_identity)]
        if cfg.include_inquiry_images and identity.image_index is not None:
            keys.append(inquiry_copy_key(identity.label))
    return keys


def planned_m(cfg: SynthesisConfig, identities: list[PlannedIdentity],
              requested: Callable[[float], float] = float) -> list[float]:
    """The requested m of every synthetic sample the plan will write (real copies excluded);
    ``requested`` turns a configured target into m (``MAxis.requested`` on a measured axis)."""
    return [requested(sample_m(cfg.m, cfg.seed, identity.label, index))
            for identity in identities for index in range(cfg.images_per_identity)]


def sample_key(label: int, index: int) -> str:
    return f"{label:08d}_{index:05d}"


def inquiry_copy_key(label: int) -> str:
    return f"{label:08d}_inquiry"
