"""The ``recognizer`` section: ``factory train-recognizer``'s data, model, optimisation and
workers (the backbone and workers sections are shared with the generator, E_id and the judge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from factory.config.base import FolderName, StrictModel, Uri


class BackboneConfig(StrictModel):
    """An arcface_torch IResNet (``r18`` .. ``r200``) or a small CPU member (``ir-tiny``)."""

    name: str = "r50"
    input_size: int = Field(112, ge=16, le=256, description="Square input side, multiple of 16")
    embedding_size: int = Field(512, ge=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class HeadConfig(StrictModel):
    """The margin classifier: CosFace (s 64, m 0.4) or ArcFace (s 64, m 0.5)."""

    margin: Literal["cosface", "arcface"] = "cosface"
    scale: float = Field(64.0, gt=0.0)
    margin_value: float | None = Field(None, ge=0.0, lt=1.5, description="None: 0.4 / 0.5")


class AugmentConfig(StrictModel):
    """The recognizer protocol's augmentations (CemiFace / DCFace)."""

    crop_scale: tuple[float, float] = (0.9, 1.0)
    erase_scale: tuple[float, float] = (0.02, 0.1)
    erase_probability: float = Field(0.5, ge=0.0, le=1.0)
    flip: bool = True
    color_jitter: float = Field(0.1, ge=0.0, le=1.0)


class OptimizerConfig(StrictModel):
    """SGD with a step or polynomial schedule and linear warm-up, epochs counted from 0."""

    epochs: int = Field(40, ge=1)
    batch_size: int = Field(512, ge=2, description="Global batch, split across workers")
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    schedule: Literal["step", "poly"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [26, 34])
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    poly_power: float = Field(2.0, gt=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0)


class WorkersConfig(StrictModel):
    """Ray Train workers: how many, and what each one takes."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0)
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per worker")
    mixed_precision: bool = Field(True, description="bf16/fp16 autocast; used on GPU only")
    report_poll_s: float = Field(
        0.2, gt=0.0, le=60.0, description="How often Ray Train's controller collects the "
        "workers' reports (its RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by Ray's default; the "
        "variable, when set, wins). A worker's report waits until the one before it was "
        "collected, so epochs shorter than this are held to one per poll")


class DomainMixupConfig(StrictModel):
    """SynFace domain mixup: x = psi x_syn + (1 - psi) x_real, loss mixed with the same weights."""

    real_data: Uri = Field("", description="URI of the real dataset; empty: off")
    psi: float | Literal["grid"] = Field("grid", description="Fixed psi, or 'grid': 0, 0.05 .. 1")
    real_fraction: float = Field(1.0, gt=0.0, le=1.0,
                                 description="Share of the real identities mixed in (the first "
                                             "ones by label)")

    @model_validator(mode="after")
    def _psi_range(self) -> DomainMixupConfig:
        if isinstance(self.psi, float) and not 0.0 <= self.psi <= 1.0:
            raise ValueError("psi must lie in [0, 1] or be 'grid'")
        return self


class ShardSelectionConfig(StrictModel):
    """Which samples of a synthetic dataset to train on, by their metadata (inclusive bounds;
    None keeps all). Applies to WebDataset shards only."""

    m: tuple[float, float] | None = Field(None, description="Requested m range")
    similarity: tuple[float, float] | None = Field(
        None, description="Measured similarity-to-center range")
    mixup_share: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of identity-mixup identities among the kept "
                                          "ones (as many identities as that share allows); "
                                          "None: keep every identity")

    def as_kwargs(self) -> dict[str, Any]:
        return {"m_range": self.m, "similarity_range": self.similarity,
                "mixup_share": self.mixup_share}


class RecognizerConfig(StrictModel):
    """``factory train-recognizer``: data, model, optimisation and workers."""

    data: Uri = Field("", description="Training data URI; empty: the face world's training set")
    extra_data: list[Uri] = Field(
        default_factory=list,
        description="Further training sets read after `data` as one set, each one's identities "
                    "numbered after those before it (CemiFace's 1.2M: the 1.0M set + 40k x 5)")
    select: ShardSelectionConfig = Field(default_factory=ShardSelectionConfig)
    storage: Uri = Field("", description="Ray Train storage URI; empty: <workdir>/recognizer")
    run_name: FolderName = "recognizer"
    seed: int = 0
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    channels_last: bool = Field(
        False, description="Train with the backbone's weights and each batch in channels-last "
        "(NHWC) memory layout: float32 summed in another order; ir-tiny at 32 px on a 2-core AMD "
        "EPYC: 1.44x the default layout's step (bench/recognizer_speed.py) and validation AVG "
        "within the seed spread over 6 seeds (docs/benchmarks.md)")
    domain_mixup: DomainMixupConfig = Field(default_factory=DomainMixupConfig)
    eval_every: int = Field(1, ge=0, description="Evaluate every N epochs; 0: only at the end")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the checkpoint")
    precheck_images: int = Field(
        50_000, ge=0, description="Decode every training image on the driver before training "
                                  "when there are at most this many (0: never), so a corrupt "
                                  "record stops the run in seconds, not when an epoch meets it")

    def train_on(self, uri: str) -> None:
        """Make ``uri`` the whole training set (a synthetic set replacing the real one), dropping
        ``extra_data``, which belonged to the data it replaces."""
        self.data = uri
        self.extra_data = []
