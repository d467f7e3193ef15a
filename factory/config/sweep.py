"""The ``sweep`` section: ``factory sweep``'s search space, pool, ASHA and trial resources."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from factory.config.base import FolderName, StrictModel, Uri
from factory.config.recognizer import BackboneConfig


class SearchSpec(StrictModel):
    """One searched parameter: exactly one of ``grid`` (every value, in every combination),
    ``choice`` (drawn), ``uniform`` or ``loguniform`` (drawn from [low, high])."""

    grid: list[Any] | None = Field(None, min_length=1)
    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchSpec:
        given = [name for name in ("grid", "choice", "uniform", "loguniform")
                 if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform")
        bounds = self.uniform or self.loguniform
        if bounds and not bounds[0] < bounds[1]:
            raise ValueError("the range's low must be below its high")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs a positive low")
        return self


class AshaConfig(StrictModel):
    """ASHA early stopping on the sweep's metric, counted in epochs."""

    enabled: bool = True
    grace_period: int = Field(2, ge=1, description="Epochs every trial runs before it can stop")
    reduction_factor: float = Field(2.0, gt=1.0)


class MeasuredPoolConfig(StrictModel):
    """A real dataset as a sweep pool (CemiFace's similarity-group study): each sample's E_id
    similarity to its identity center is measured once and stored with it in shards."""

    data: Uri = Field("", description="Real dataset to measure; empty: the pool is synthesised")
    encoder: Uri = Field("", description="E_id: recognizer checkpoint dir, arcface model.pt, "
                                         "AdaFace .ckpt or a generator checkpoint (its E_id); "
                                         "empty: this config's recognizer run")
    encoder_backbone: BackboneConfig | None = Field(
        None, description="Architecture of a plain model.pt given as encoder")
    samples_per_shard: int = Field(5000, ge=1)
    batch_size: int = Field(256, ge=1)


SWEEP_PREFIXES = ("recognizer.", "synthesis.")
"""Where swept parameters may point: the recognizer's recipe, and in generate mode synthesis."""


class SweepConfig(StrictModel):
    """``factory sweep``: Ray Tune trials, each a recognizer trained on a metadata selection of
    a synthesised pool (``select``) or on its own freshly synthesised data (``generate``)."""

    name: FolderName = Field("sweep", description="Tune experiment and MLflow parent run name")
    mode: Literal["select", "generate"] = "select"
    pool: Uri = Field("", description="select: the synthesised dataset the trials select from "
                                      "(synthesised from the synthesis section when missing); "
                                      "empty: the synthesis output")
    storage: Uri = Field("", description="Tune and trial storage URI; empty: <workdir>/sweeps")
    space: dict[str, SearchSpec] = Field(
        default_factory=dict, description="Dotted config key (recognizer.* or, in generate "
                                          "mode, synthesis.*) -> search spec")
    measure: MeasuredPoolConfig = Field(default_factory=MeasuredPoolConfig)
    similarity_groups: int = Field(
        0, ge=0, description="K > 0: K equal-count groups of the pool's similarity to center, "
                             "one grid value of recognizer.select.similarity each")
    num_samples: int = Field(1, ge=1, description="Random draws; with grids, repeats of the grid")
    seeds: int = Field(1, ge=1, description="Repeat every setting with recognizer.seed = seed, "
                                            "seed + 1, ..; compare reports mean +- std")
    metric: str = Field("val_avg_acc", description="Validation metric ASHA and the ranking "
                                                   "maximise: val_avg_acc or "
                                                   "<validation benchmark>/acc")
    asha: AshaConfig = Field(default_factory=AshaConfig)
    max_concurrent_trials: int = Field(
        0, ge=0, description="0: as many as the cluster's CPUs and GPUs hold at once")
    trial_cpus: float = Field(0.1, ge=0.0, description="CPUs of each trial's driver process "
                                                       "(its workers take their own)")
    reference: Uri = Field("", description="Real-trained recognizer checkpoint for GtR; empty: "
                                           "this config's recognizer run, when it exists")

    @model_validator(mode="after")
    def _space_keys(self) -> SweepConfig:
        allowed = SWEEP_PREFIXES if self.mode == "generate" else SWEEP_PREFIXES[:1]
        for key in self.space:
            if not key.startswith(allowed):
                raise ValueError(f"space key {key!r}: expected a key under "
                                 f"{' or '.join(p.rstrip('.') for p in allowed)} in {self.mode} mode")
        if self.similarity_groups and "recognizer.select.similarity" in self.space:
            raise ValueError("similarity_groups sets recognizer.select.similarity itself")
        if self.seeds > 1 and "recognizer.seed" in self.space:
            raise ValueError("seeds sets recognizer.seed itself")
        return self
