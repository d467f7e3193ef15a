"""The ``synthesis`` section: ``factory synthesize``'s identities, m values, actor pool and
privacy check, and the ``fpr:<rate>`` spec its inquiry filter takes."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from factory.config.base import MIXUP_GRID, StrictModel, Uri, check_grid
from factory.config.generator import SamplingConfig

FPR_SPEC = re.compile(r"fpr:([0-9.]+(?:e-?[0-9]+)?)")


def parse_fpr(spec: str) -> float:
    """``"fpr:1e-4"`` -> 1e-4; ValueError for anything else (the config validator's message).
    Here, beside the one key that takes the spec, so the threshold estimate
    (:mod:`factory.eval.threshold`) and the config both import it from below."""
    match = FPR_SPEC.fullmatch(spec.strip())
    rate = float(match.group(1)) if match else math.nan
    if not 0.0 < rate < 1.0:
        raise ValueError("expected a number in [-1, 1] or 'fpr:<rate>' with 0 < rate < 1 "
                         "(e.g. 'fpr:1e-4')")
    return rate


class MValuesConfig(StrictModel):
    """The requested similarities m of the synthesised samples.

    ``values``: the listed m, cycled over each identity's images; ``range``: ``low`` to
    ``high`` every ``interval``, cycled likewise; ``uniform`` / ``normal``: drawn per sample
    (``low``..``high`` / ``mean`` +- ``std``), clipped to [-1, 1]. With ``axis`` judge or E_id
    the same numbers are similarities that recognizer should measure, turned into m through the
    generator's compliance curve (factory.eval.compliance_curve).
    """

    kind: Literal["values", "range", "uniform", "normal"] = "values"
    axis: Literal["m", "judge", "E_id"] = Field(
        "m", description="What the numbers name: the generator's requested m, or the mean "
                         "similarity the judge or E_id measures (through the checkpoint's "
                         "compliance_curve.json, refused outside its reachable range)")
    values: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    low: float = Field(-0.1, ge=-1.0, le=1.0)
    high: float = Field(0.1, ge=-1.0, le=1.0)
    interval: float = Field(0.04, gt=0.0)
    mean: float = Field(0.0, ge=-1.0, le=1.0)
    std: float = Field(0.1, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> MValuesConfig:
        if any(not -1.0 <= m <= 1.0 for m in self.values):
            raise ValueError("values must lie in [-1, 1]")
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.kind == "range":
            check_grid(self.low, self.high, self.interval, "interval")
        if self.axis != "m" and self.kind == "normal":
            raise ValueError(f"axis {self.axis} takes kind values, range or uniform (a normal "
                             "draw has no bounds to check against the reachable range)")
        return self


class InquiryConfig(StrictModel):
    """The identities to synthesise: 1-shot inquiries, plus SynFace identity-mixup identities."""

    data: Uri = Field("", description="Dataset of inquiry images (first image per identity); "
                                      "empty: the face world's held-out inquiry set")
    identities: int = Field(64, ge=1, description="Inquiry identities to keep (at most)")
    max_similarity: float | str = Field(
        0.3, description="Every kept pair has E_id cosine below this: a number in [-1, 1] "
                         "(DCFace: 0.3), or 'fpr:<rate>' for E_id's own impostor threshold at "
                         "that false positive rate on synthesis.threshold_benchmarks (DCFace "
                         "derived its 0.3 so, at 1e-4)")
    mixup_identities: int = Field(0, ge=0, description="Extra identities made by mixing two "
                                                       "inquiry embeddings")
    mixup_phi: list[float] = Field(default_factory=lambda: list(MIXUP_GRID), min_length=1,
                                   description="phi drawn from these (default: the 21-grid)")
    mixup_labels: Literal["soft", "new_class"] = Field(
        "soft", description="How a recognizer trains on a mixed identity: 'soft' is SynFace's "
        "two-hot label (phi on the first parent's class, 1 - phi on the second's) whenever both "
        "parents are classes of the training set; 'new_class' gives it a class of its own")

    @field_validator("max_similarity")
    @classmethod
    def _threshold(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            parse_fpr(value)
        elif not -1.0 <= value <= 1.0:
            raise ValueError("expected a number in [-1, 1] or 'fpr:<rate>'")
        return value


class ActorsConfig(StrictModel):
    """The Ray Data actor pool that samples: how many actors and what each one takes."""

    num_actors: int | tuple[int, int] = Field(
        1, description="A fixed pool size, or [min, max]: Ray Data's autoscaling pool starts "
                       "min actors and adds actors up to max while work is queued and the "
                       "cluster has room (new GPU nodes, spot capacity)")
    cpus_per_actor: float = Field(1.0, gt=0.0, description="Keep the sum below the CPUs: "
                                                           "read tasks need some")
    gpus_per_actor: float = Field(0.0, ge=0.0)
    threads_per_actor: int = Field(0, ge=0, description="torch threads; 0: from cpus_per_actor")
    encode: Literal["thread", "stage"] = Field(
        "thread", description="Where JPEG encoding and shard writing run: 'thread', inside each "
                              "actor (a worker thread encodes a batch while the next one "
                              "samples); 'stage', a separate Ray Data CPU stage after the "
                              "actors, which hand it pixels, so the actors never wait for it. "
                              "The shards' bytes are the same")
    encode_cpus: float = Field(0.1, gt=0.0, description="CPUs one encoding task of 'encode: "
                                                        "stage' reserves; keep the actors' CPUs "
                                                        "plus this within the cluster's")

    @model_validator(mode="after")
    def _range(self) -> ActorsConfig:
        low, high = self.size_range()
        if not 1 <= low <= high:
            raise ValueError("num_actors must be at least 1, or [min, max] with 1 <= min <= max")
        return self

    def size_range(self) -> tuple[int, int]:
        """(min, max) actors; equal for a fixed pool."""
        if isinstance(self.num_actors, int):
            return self.num_actors, self.num_actors
        return self.num_actors


class PrivacyConfig(StrictModel):
    """The leakage check of ``factory analyze``: synthetic identities against real ones."""

    real_data: Uri = Field("", description="Real training data; empty: the generator's own")
    threshold: float = Field(0.6, ge=-1.0, le=1.0,
                             description="Flag synthetic identities whose center is at least "
                                         "this similar to a real identity center")
    false_match_fpr: float = Field(
        1e-4, gt=0.0, lt=1.0, description="Every synthetic sample is compared with every real "
                                          "identity center; a false match is a score above "
                                          "E_id's impostor threshold at this FPR (on "
                                          "synthesis.threshold_benchmarks)")


class SynthesisConfig(StrictModel):
    """``factory synthesize``: identities x images x m values -> WebDataset shards."""

    checkpoint: Uri = Field("", description="Generator checkpoint; empty: generator.checkpoint "
                                            "or this config's generator run")
    out: Uri = Field("", description="Dataset URI; empty: <workdir>/synthetic")
    seed: int = 0
    inquiry: InquiryConfig = Field(default_factory=InquiryConfig)
    images_per_identity: int = Field(50, ge=1)
    m: MValuesConfig = Field(default_factory=MValuesConfig)
    identities_per_shard: int = Field(20, ge=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    jpeg_quality: int = Field(95, ge=1, le=100)
    include_inquiry_images: bool = Field(
        False, description="Copy each real inquiry image into its identity (oversampling); "
                           "the manifest records it")
    actors: ActorsConfig = Field(default_factory=ActorsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    threshold_benchmarks: list[Uri] = Field(
        default_factory=list, description="Validation .bin files E_id's impostor thresholds are "
                                          "estimated on (inquiry filter at 'fpr:..', privacy "
                                          "false matches); empty: the face world's validation "
                                          "benchmarks")
