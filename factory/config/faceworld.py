"""The ``faceworld`` section: the built-in face world's training set and .bin benchmarks."""

from __future__ import annotations

from pydantic import Field, model_validator

from factory.config.base import MAX_IDENTITIES, MAX_IMAGES, Profile, StrictModel, Uri


class BenchmarkSpec(StrictModel):
    """One face-world verification benchmark (.bin), stressing one kind of nuisance."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    first_profile: Profile = "frontal"
    second_profile: Profile = "frontal"
    identities: int = Field(300, ge=20)
    pairs: int = Field(600, ge=20, description="Positive and negative pairs, half each")
    lookalike_fraction: float = Field(0.15, ge=0.0, le=1.0, description="Share of hard negatives")
    lookalike_distance: float = Field(0.8, gt=0.0, le=1.0)
    same_scene_negatives: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of negatives whose second image reuses the "
        "first one's scene (background, clothing, light): pixels alone cannot tell them apart")

    @model_validator(mode="after")
    def _folds_balanced(self) -> BenchmarkSpec:
        if self.pairs % 20:
            raise ValueError("pairs must be a multiple of 20 (10 folds, half positive)")
        return self


def _default_benchmarks() -> list[BenchmarkSpec]:
    return [
        BenchmarkSpec(name="fw_frontal", first_profile="frontal", second_profile="frontal"),
        BenchmarkSpec(name="fw_pose", first_profile="frontal", second_profile="pose"),
        BenchmarkSpec(name="fw_occlusion", first_profile="frontal", second_profile="occlusion"),
        BenchmarkSpec(name="fw_lighting", first_profile="lighting", second_profile="lighting"),
    ]


def _default_validation_benchmarks() -> list[BenchmarkSpec]:
    """The test benchmarks' four kinds on identities of their own, smaller: 150 identities and
    300 pairs each, enough to rank trials and cheap to evaluate every epoch."""
    return [spec.model_copy(update={"name": spec.name.replace("fw_", "val_", 1),
                                    "identities": 150, "pairs": 300})
            for spec in _default_benchmarks()]


class FaceWorldConfig(StrictModel):
    """The built-in face world: a RecordIO training set and .bin benchmarks."""

    out: Uri = Field("", description="Output URI; empty: <workdir>/faceworld")
    seed: int = 0
    image_size: int = Field(112, ge=16, le=256)
    identities: int = Field(1000, ge=2, le=MAX_IDENTITIES, description="Training identities")
    images_per_identity: int = Field(20, ge=2, le=MAX_IMAGES)
    inquiry_identities: int = Field(64, ge=2, description="Held-out identities, 1 image each")
    judge_identities: int | None = Field(
        None, ge=0, description="Identities of the judge's own training set (judge-train/, "
                                "images_per_identity each), drawn from a stream no other set "
                                "uses; None: as many as identities; 0: none")
    reference_identities: int | None = Field(
        None, ge=0, description="Held-out identities of the real reference (reference/): the "
                                "real genuine similarities every m is read against; None: as "
                                "many as inquiry_identities; 0: none")
    reference_images_per_kind: int = Field(
        4, ge=1, description="Reference images per identity and nuisance kind (frontal, pose, "
                             "occlusion, lighting), beside the frontal reference image")
    benchmarks: list[BenchmarkSpec] = Field(default_factory=_default_benchmarks, min_length=1,
                                            description="Test benchmarks: reported, never "
                                                        "selected on")
    validation_benchmarks: list[BenchmarkSpec] = Field(
        default_factory=_default_validation_benchmarks,
        description="Validation benchmarks (identities disjoint from training, inquiries and "
                    "the test benchmarks): what sweeps, ASHA and thresholds select on")
    montage_identities: int = Field(8, ge=1)
    montage_images: int = Field(10, ge=1)

    @property
    def judge_set_identities(self) -> int:
        return self.identities if self.judge_identities is None else self.judge_identities

    @property
    def reference_set_identities(self) -> int:
        return (self.inquiry_identities if self.reference_identities is None
                else self.reference_identities)

    @model_validator(mode="after")
    def _fits_the_formats(self) -> FaceWorldConfig:
        for name, identities in (("identities", self.identities),
                                 ("judge_identities", self.judge_set_identities)):
            if identities > MAX_IDENTITIES:
                raise ValueError(f"{name} {identities:,} exceeds {MAX_IDENTITIES:,}, the most "
                                 "identities a RecordIO label (float32) holds exactly")
            if identities * self.images_per_identity > MAX_IMAGES:
                raise ValueError(f"{name} x images_per_identity = "
                                 f"{identities * self.images_per_identity:,} images exceeds "
                                 f"{MAX_IMAGES:,}, the most a RecordIO index holds")
        return self

    @model_validator(mode="after")
    def _distinct_names(self) -> FaceWorldConfig:
        names = [spec.name for spec in [*self.benchmarks, *self.validation_benchmarks]]
        if len(set(names)) != len(names):
            raise ValueError("benchmark and validation_benchmark names must all differ (each "
                             "names a file and its metrics)")
        return self

