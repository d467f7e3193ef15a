"""The ``experiments`` section: the face-world studies of ``factory experiments`` and the
sizes, seeds and m values they run at."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from factory.config.base import StrictModel, Uri
from factory.config.synthesis import parse_fpr


class VolumeConfig(StrictModel):
    """A dataset size: identities x images per identity."""

    identities: int = Field(ge=2)
    images_per_identity: int = Field(ge=2)

    def label(self) -> str:
        return f"{self.identities}x{self.images_per_identity}"


GENUINE_PERCENTILE = re.compile(r"genuine:p([1-9][0-9]?)")


class MeasuredTarget(StrictModel):
    """One cell of the m study named by the similarity its samples should measure to their
    inquiry, on the judge's or E_id's axis (turned into the generator's m through its compliance
    curve, like ``synthesis.m.axis``). ``at``: a similarity in [-1, 1]; ``genuine:p<N>`` (N in
    1..99): that percentile of the real genuine distribution (held-out real images against their
    identity's frontal reference) as the same network measures it, ``genuine:p25`` its first
    quartile; or ``fpr:<rate>``: that network's impostor threshold at the rate on the validation
    benchmarks."""

    axis: Literal["judge", "E_id"] = "judge"
    at: float | str

    @field_validator("at")
    @classmethod
    def _at(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            if not GENUINE_PERCENTILE.fullmatch(value.strip()):
                parse_fpr(value)
            return value.strip()
        if not -1.0 <= value <= 1.0:
            raise ValueError("expected a similarity in [-1, 1], 'genuine:p<1..99>' or "
                             "'fpr:<rate>'")
        return value


def default_targets() -> list[MeasuredTarget]:
    """On the judge's axis: the real genuine median, first quartile, 10th and 5th percentiles,
    the judge's and E_id's impostor thresholds at FPR 1e-4, and two similarities below the
    real genuine range."""
    return ([MeasuredTarget(at=f"genuine:p{p}") for p in (50, 25, 10, 5)]
            + [MeasuredTarget(at="fpr:1e-4"), MeasuredTarget(axis="E_id", at="fpr:1e-4")]
            + [MeasuredTarget(at=0.65), MeasuredTarget(at=0.3)])


EXPERIMENT_STUDIES = ("m", "similarity_groups", "lambda0", "synface", "gtr")
"""The face-world studies ``factory experiments`` runs, in the order it runs them (the later
ones use the m study's best m, chosen on validation)."""


class ExperimentsPreset(StrictModel):
    """What ``factory experiments --small`` changes: fewer seeds, smaller sets, shorter runs."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    volumes: list[VolumeConfig] = Field(default_factory=lambda: [
        VolumeConfig(identities=60, images_per_identity=8)], min_length=1)
    m_values: list[float] = Field(default_factory=lambda: [1.0, 0.0, -0.25], min_length=1)
    m_targets: list[MeasuredTarget] = Field(default_factory=default_targets)
    m_mixtures: list[list[float]] = Field(default_factory=list)
    epochs: int = Field(4, ge=1)
    similarity_groups: int = Field(3, ge=2)


class ExperimentsConfig(StrictModel):
    """``factory experiments``: the face-world studies, every cell over ``seeds``, one
    recognizer recipe (the config's ``recognizer`` section) for every cell.

    The first volume is the studies' size (each m, group and mixup cell has that many
    identities and images); GtR is measured at every volume. Runs and data go under
    ``<workdir>``; the results page (markdown, PNGs, results.json) under ``out``.
    """

    out: Uri = Field("docs/experiments", description="Results page folder")
    studies: list[Literal["m", "similarity_groups", "lambda0", "synface", "gtr"]] = Field(
        default_factory=lambda: list(EXPERIMENT_STUDIES), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    volumes: list[VolumeConfig] = Field(default_factory=lambda: [
        VolumeConfig(identities=200, images_per_identity=16),
        VolumeConfig(identities=1000, images_per_identity=16)], min_length=1)
    m_values: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.0, -0.25],
                                  min_length=1, description="The m study's cells named by "
                                                            "requested m (CemiFace's grid)")
    m_targets: list[MeasuredTarget] = Field(
        default_factory=default_targets,
        description="The m study's cells named by measured similarity (each resolved to an m "
                    "through the generator's compliance curve; one the generator cannot reach "
                    "is listed on the page, not run)")
    m_mixtures: list[list[float]] = Field(
        default_factory=lambda: [[0.0, 1.0]],
        description="Mixtures, each cycled over every identity's images (CemiFace: adding "
                    "easy samples to m = 0 hurt)")
    similarity_groups: int = Field(4, ge=2, description="Equal-count groups of the real face "
                                                        "world by similarity to center")
    lambda0_checkpoint: Uri = Field("", description="Generator trained with lambda = 0 (the "
                                                    "paper's ablation); empty: study skipped")
    lambda0_reference_checkpoint: Uri = Field(
        "", description="The similarity-matched generator trained exactly as "
                        "lambda0_checkpoint (recipe, steps, data, E_id; only lambda differs): "
                        "the ablation's equal-budget reference; empty: the lambda = 0 data is "
                        "compared with the experiments' generator only, whose training may "
                        "differ")
    mixup_share: float = Field(1.0, gt=0.0, le=1.0,
                               description="Mixed identities per base identity in the SynFace "
                                           "identity-mixup cells (made from the same base "
                                           "identities)")
    real_share: VolumeConfig = Field(
        default_factory=lambda: VolumeConfig(identities=20, images_per_identity=16),
        description="The real data domain mixup mixes in (the first identities of the world)")
    small: ExperimentsPreset = Field(default_factory=ExperimentsPreset)

    @model_validator(mode="after")
    def _m_values(self) -> ExperimentsConfig:
        for m in [*self.m_values, *(m for mix in self.m_mixtures for m in mix)]:
            if not -1.0 <= m <= 1.0:
                raise ValueError("m values must lie in [-1, 1]")
        return self
