"""Typed, validated configuration: YAML files plus dotted ``key=value`` overrides.

Every job loads one YAML file into :class:`FactoryConfig`, applies overrides such as
``faceworld.image_size=32``, and validates the result. Unknown keys and wrong types are refused
with one line naming the key and what was expected (the CLI turns that into exit code 2). The
resolved config is saved next to every artefact, so each output says exactly what made it.

Stages read only their own section; ``pipeline`` reads them all. Locations are URIs (local
paths, ``s3://``, ``gs://``); an empty stage location defaults to a folder under ``workdir``.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from factory import storage
from factory.errors import ConfigError

Uri = Annotated[str, AfterValidator(storage.absolute)]
"""A location: local paths become absolute when the config is loaded, URIs stay as given."""

_FOLDER_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def _folder_name(value: str) -> str:
    """Refuse a name that would not stay one folder when joined to a storage URI."""
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"a name of {len(value):,} characters; at most {MAX_NAME_CHARS} (it "
                         "also names MLflow runs)")
    if not _FOLDER_NAME.fullmatch(value):
        raise ValueError("expected a folder name of letters, digits, '_', '-' and '.', not "
                         "starting with '.' (it names a folder under the storage: '..', '/' or "
                         "an empty name would write elsewhere)")
    return value


FolderName = Annotated[str, AfterValidator(_folder_name)]
"""A config value that becomes one path component (run and sweep names)."""

VALIDATION_DIR = "validation"
"""The face world's folder of validation benchmarks (beside ``benchmarks/``, the test ones)."""

FINAL_DIR = "final"
"""Where a training run publishes its last checkpoint: ``<storage>/<run_name>/final``."""

PROFILES = ("train", "frontal", "pose", "occlusion", "lighting")
Profile = Literal["train", "frontal", "pose", "occlusion", "lighting"]

MIXUP_GRID = tuple(round(0.05 * i, 2) for i in range(21))
"""SynFace's 21 mixup coefficients, 0, 0.05 .. 1 (identity mixup phi, domain mixup psi)."""


MAX_GRID_POINTS = 10_001
"""The most values an m grid (training's or synthesis's) may hold: interval 2e-4 over [-1, 1]."""
MAX_IDENTITIES = 2 ** 24
"""Identity labels travel as float32 in RecordIO headers, exact only below 2^24."""
MAX_IMAGES = 2 ** 31 - 1
"""Image counts and record keys are 32-bit in RecordIO indexes and .bin files."""
MAX_NAME_CHARS = 250
"""Names that become MLflow experiment and run names (MLflow's own limits are near this)."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated, and
    no float may be NaN or infinite (one would pass every range check and fail inside Ray)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def grid_points(low: float, high: float, interval: float) -> int:
    """How many values ``low, low + interval, .., high`` holds."""
    return int((high - low) / interval + 1e-9) + 1


def check_grid(low: float, high: float, interval: float, name: str) -> None:
    """ValueError when the grid would hold more than MAX_GRID_POINTS values (a tiny interval
    would build a list of billions while planning)."""
    if grid_points(low, high, interval) > MAX_GRID_POINTS:
        raise ValueError(f"{name} {interval:g} makes {grid_points(low, high, interval):,} values "
                         f"over [{low:g}, {high:g}]; at most {MAX_GRID_POINTS:,} are allowed")


class RuntimeConfig(StrictModel):
    """Where Ray, MLflow and the object store run. Environment variables win over the file
    (``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI``, ``AWS_ENDPOINT_URL``), and ``--address`` wins
    over both."""

    ray_address: str | None = Field(None, description="Existing cluster ('auto': the head "
                                                       "`ray start` runs on this machine); "
                                                       "None starts a local one of its own")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a local cluster")
    mlflow_tracking_uri: str | None = Field(None, description="None: sqlite:///<cwd>/mlflow.db")
    mlflow_artifact_location: Uri = Field(
        "", description="Artifact root of an experiment the factory creates (s3://...); empty: "
                        "mlartifacts/ beside a SQLite store, the server's default otherwise")
    s3_endpoint: str | None = Field(
        None, pattern=r"^https?://\S+$",
        description="S3-compatible endpoint URL (MinIO, Ceph); None: AWS_ENDPOINT_URL or AWS")
    experiment: str = Field("facefactory", min_length=1, max_length=MAX_NAME_CHARS,
                            description="MLflow experiment name")


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


class BaselineConfig(StrictModel):
    """The raw-pixel cosine baseline: how far pixels alone get on each benchmark."""

    image_size: int = Field(32, ge=8, le=256)


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


class UNetConfig(StrictModel):
    """The diffusers ``UNet2DConditionModel``: a level per entry of ``block_out_channels``;
    levels marked in ``cross_attention`` attend to the identity/similarity context tokens."""

    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=2)
    cross_attention: list[bool] = Field(default_factory=lambda: [False, False, True])
    layers_per_block: int = Field(2, ge=1)
    attention_head_dim: int = Field(8, ge=1)
    norm_num_groups: int = Field(16, ge=1)
    cross_attention_dim: int = Field(128, ge=8, description="Width of a context token")

    @model_validator(mode="after")
    def _levels_match(self) -> UNetConfig:
        if len(self.cross_attention) != len(self.block_out_channels):
            raise ValueError("cross_attention needs one flag per block_out_channels entry")
        if not any(self.cross_attention):
            raise ValueError("at least one level must use cross-attention (the conditions)")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("block_out_channels must be multiples of norm_num_groups")
        return self


class ConditionConfig(StrictModel):
    """CemiFace's conditions: C_sim = F1(m), context = F2([C_id, C_sim]) as tokens."""

    similarity_dim: int = Field(64, ge=1, description="Width of C_sim = F1(m)")
    tokens: int = Field(4, ge=1, description="Context tokens F2 produces")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Training probability of replacing a sample's context (identity and m) by "
                    "learned null tokens, which classifier-free guidance needs at sampling "
                    "(sampling.guidance_scale); 0: no null tokens (CemiFace)")


class DiffusionConfig(StrictModel):
    """The DDPM training schedule (diffusers ``DDPMScheduler``) and the objective's weighting."""

    num_train_timesteps: int = Field(1000, ge=10)
    beta_start: float = Field(1e-4, gt=0.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    min_snr_gamma: float | None = Field(None, gt=0.0, description="Min-SNR weighting; None: off")


class SimilarityMatchingConfig(StrictModel):
    """L = L_MSE + lambda L_SimMat, with m drawn per sample from a grid over [low, high]."""

    weight: float = Field(0.05, ge=0.0, description="lambda (CemiFace: 0.05; 0.5 was worse)")
    m_interval: float = Field(0.04, gt=0.0, le=1.0, description="Grid step (CemiFace: 0.04)")
    m_low: float = Field(-1.0, ge=-1.0, le=1.0)
    m_high: float = Field(1.0, ge=-1.0, le=1.0)
    target_schedule: Literal["linear", "constant"] = Field(
        "linear", description="How L_SimMat's target moves with the noise level: 'linear' is "
        "CemiFace's gamma = t/T (target 1 at t = 0, m at t = T); 'constant' is gamma = 1 (target m "
        "at every t), so the late sampling steps no longer pull a sample back to its inquiry")

    @model_validator(mode="after")
    def _ordered(self) -> SimilarityMatchingConfig:
        if self.m_low > self.m_high:
            raise ValueError("m_low must not exceed m_high")
        check_grid(self.m_low, self.m_high, self.m_interval, "m_interval")
        return self


class GeneratorOptimizerConfig(StrictModel):
    """AdamW with linear warm-up then cosine decay, counted in optimizer steps."""

    steps: int = Field(20000, ge=1, description="Total optimizer steps")
    batch_size: int = Field(32, ge=1, description="Global batch, split across workers")
    lr: float = Field(2e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(200, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final lr / peak lr")
    grad_clip: float = Field(1.0, gt=0.0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)


class SamplingConfig(StrictModel):
    """The sampler (a diffusers solver, factory.models.sampling) and how fast it runs
    (factory.models.inference)."""

    solver: Literal["ddim", "dpmsolver++", "unipc"] = Field(
        "ddim", description="DDIM (reference), DPM-Solver++ 2M or UniPC (2nd order)")
    steps: int = Field(20, ge=1, le=1000)
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM only")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        64, description="Samples per model call; auto: a memory probe on a GPU, 64 on a CPU")
    identity_handoff: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Below this t/T, condition on the sample's own identity at m = 1 instead "
                    "of the inquiry (factory.models.sampling); None: CemiFace's sampler")
    guidance_scale: float = Field(
        1.0, ge=0.0, le=20.0,
        description="Classifier-free guidance on the (identity, m) condition: "
                    "eps_null + w (eps_cond - eps_null); 1: none (CemiFace's sampler, one model "
                    "call per step), > 1 needs a generator trained with condition.dropout > 0 "
                    "and costs a second model call per step")
    guidance_interval: tuple[float, float] = Field(
        (0.0, 1.0), description="The noise levels [low, high) of t/T at which guidance applies "
                                "(the other steps take one conditional pass); (0, 1): every step")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype of the UNet and E_id; auto: bf16 on a GPU (fp16 "
                            "where bf16 is missing), fp32 on a CPU")
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="NHWC memory format for the UNet; auto: on a GPU only")
    compile: bool = Field(False, description="torch.compile the UNet once per process; off "
                                             "by default (compiling costs minutes before the "
                                             "first batch, a loss on short runs)")

    @model_validator(mode="after")
    def _eta_needs_ddim(self) -> SamplingConfig:
        if self.eta > 0 and self.solver != "ddim":
            raise ValueError(f"eta > 0 needs solver ddim ({self.solver} is deterministic)")
        low, high = self.guidance_interval
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"guidance_interval [{low:g}, {high:g}): expected 0 <= low < high "
                             "<= 1 (fractions of the training timesteps)")
        return self


class ComplianceConfig(StrictModel):
    """m-compliance: samples at each m for held-out identities, measured by E_id."""

    data: Uri = Field("", description="Inquiry images (first per identity); empty: the face "
                                      "world's held-out inquiry set")
    identities: int = Field(24, ge=2, description="Inquiry identities the report measures")
    first_identity: int = Field(
        32, ge=0, description="The report's identities start at this inquiry identity (in "
                              "label order); the ones before it are the validation identities")
    validation_identities: int = Field(
        24, ge=2, description="Inquiry identities 0 .. this - 1: what generator-progress and "
                              "lever choices measure, so no decision sees the report's")
    real_reference: Uri = Field(
        "", description="Held-out real identities (per identity a reference image, then "
                        "genuine images; optional kinds.json): the real genuine row of the "
                        "report; empty: the face world's reference set")
    seeds: int = Field(4, ge=1, description="Samples per (identity, m)")
    m_values: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.0, -0.5, -1.0],
                                  min_length=2)
    grid_identities: int = Field(6, ge=1, description="Rows of the CemiFace figure")
    grid_columns: int = Field(9, ge=2, description="m values from 1 to -1 in the figure")
    shuffled_m_control: bool = Field(
        True, description="Also report the same samples' seeds with m shuffled across samples at "
                          "sampling time: a control that should show no m dependence")
    progress_handoff: float | None = Field(
        0.75, ge=0.0, le=1.0, description="The identity hand-off generator-progress measures "
                                          "beside CemiFace's sampler; null: CemiFace's only")
    lambda0_checkpoint: Uri = Field(
        "", description="A generator trained with the same recipe at lambda = 0 (CemiFace's "
                        "no-similarity-matching ablation), reported as a control; empty: none")

    @model_validator(mode="after")
    def _validation_before_report(self) -> ComplianceConfig:
        if self.validation_identities > self.first_identity:
            raise ValueError(f"validation_identities ({self.validation_identities}) must not "
                             f"reach first_identity ({self.first_identity}): the report's "
                             "identities are kept from every decision")
        return self


class GeneratorConfig(StrictModel):
    """``factory train-generator``: the CemiFace similarity-conditioned diffusion model."""

    data: Uri = Field("", description="Training images URI; empty: the face world's training set")
    identity_encoder: Uri = Field(
        "", description="Recognizer checkpoint dir, arcface_torch model.pt or AdaFace .ckpt "
                        "(E_id); empty: this config's recognizer run")
    identity_encoder_backbone: BackboneConfig | None = Field(
        None, description="Architecture of a plain model.pt given as identity_encoder")
    storage: Uri = Field("", description="Ray Train storage URI; empty: <workdir>/generator")
    init_from: Uri = Field("", description="Generator checkpoint to start a new run from")
    checkpoint: Uri = Field("", description="Checkpoint to sample and report on; empty: this "
                                            "run's published final checkpoint")
    run_name: FolderName = "generator"
    seed: int = 0
    image_size: int = Field(32, ge=16, le=256, description="Side of generated images")
    unet: UNetConfig = Field(default_factory=UNetConfig)
    condition: ConditionConfig = Field(default_factory=ConditionConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    similarity_matching: SimilarityMatchingConfig = Field(
        default_factory=SimilarityMatchingConfig)
    optimizer: GeneratorOptimizerConfig = Field(default_factory=GeneratorOptimizerConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints")
    keep_checkpoints: int | None = Field(
        2, ge=1, description="Latest checkpoints kept in the run folder; null keeps every one "
                             "(factory generator-progress measures each)")
    log_every: int = Field(50, ge=1, description="Steps between logged losses")
    max_failures: int = Field(2, ge=0)
    precheck_images: int = Field(
        50_000, ge=0, description="Decode every training image on the driver before training "
                                  "when there are at most this many (0: never), so a corrupt "
                                  "record stops the run in seconds, not when an epoch meets it")

    @model_validator(mode="after")
    def _size_fits_levels(self) -> GeneratorConfig:
        factor = 2 ** (len(self.unet.block_out_channels) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be a multiple of {factor} for "
                             f"{len(self.unet.block_out_channels)} UNet levels")
        return self


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
            from factory.eval.threshold import parse_fpr

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


class JudgeConfig(StrictModel):
    """An independent recognizer that measures what the generator made (generator-report,
    analyze). It should share no training identity with E_id and the generator (the face
    world's judge: its judge-train set), and differ in architecture, width and seed; it is never
    used in training or sampling, so its similarities are evidence, not the objective."""

    checkpoint: Uri = Field("", description="Recognizer checkpoint dir, arcface model.pt or "
                                            "AdaFace .ckpt; empty: no judge (E_id's figures only)")
    backbone: BackboneConfig | None = Field(
        None, description="Needed for a plain model.pt (not for AdaFace: read from its keys)")


class EvaluateConfig(StrictModel):
    """``factory evaluate``: a recognizer against .bin benchmarks."""

    checkpoint: Uri = Field("", description="Recognizer checkpoint dir, arcface model.pt or "
                                            "AdaFace .ckpt")
    backbone: BackboneConfig | None = Field(
        None, description="Needed for a plain model.pt (not for AdaFace: read from its keys)")
    benchmarks: list[Uri] = Field(default_factory=list, description="Test benchmarks, "
                                  "evaluated once at the end of training; empty: the face "
                                  "world's")
    validation_benchmarks: list[Uri] = Field(
        default_factory=list, description="Validation benchmarks, evaluated whenever training "
                                          "evaluates and the only ones selection reads (sweeps, "
                                          "ASHA); empty: the face world's")
    batch_size: int = Field(256, ge=1)
    reference_run: str = Field("", description="MLflow run name of the real-data run, for GtR")
    out: Uri = Field("", description="Results URI; empty: next to the checkpoint")

    @field_validator("reference_run")
    @classmethod
    def _quotable(cls, value: str) -> str:
        # the name goes into an MLflow search filter as a quoted string literal
        if "'" in value or '"' in value:
            raise ValueError("expected an MLflow run name without quote characters")
        return value


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


class PipelineConfig(StrictModel):
    """``factory pipeline``: what differs between its stages beyond their own sections."""

    synthetic_epochs: int | None = Field(
        None, ge=1, description="Epochs of the synthetic-trained recognizer; None: as the "
                                "real-trained one")


class VolumeConfig(StrictModel):
    """A dataset size: identities x images per identity."""

    identities: int = Field(ge=2)
    images_per_identity: int = Field(ge=2)

    def label(self) -> str:
        return f"{self.identities}x{self.images_per_identity}"


EXPERIMENT_STUDIES = ("m", "similarity_groups", "lambda0", "synface", "gtr")
"""The face-world studies ``factory experiments`` runs, in the order it runs them (the later
ones use the m study's best m, chosen on validation)."""


class ExperimentsPreset(StrictModel):
    """What ``factory experiments --small`` changes: fewer seeds, smaller sets, shorter runs."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    volumes: list[VolumeConfig] = Field(default_factory=lambda: [
        VolumeConfig(identities=60, images_per_identity=8)], min_length=1)
    m_values: list[float] = Field(default_factory=lambda: [1.0, 0.0, -0.25], min_length=2)
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
    m_values: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.25, 0.0, -0.25],
                                  min_length=2, description="The m study's single values")
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
    mixup_share: float = Field(0.5, gt=0.0, lt=1.0,
                               description="Share of identity-mixup identities in the SynFace "
                                           "identity-mixup cell")
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


class FactoryConfig(StrictModel):
    """The whole factory's configuration; each stage reads its own section."""

    name: str = "facefactory"
    workdir: Uri = Field("runs/default", description="Root URI of this run's outputs")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    faceworld: FaceWorldConfig | None = Field(
        default_factory=FaceWorldConfig,
        description="null: no face world; every stage then needs its data keys and E_id given "
                    "explicitly (recognizer.data, generator.data, generator.identity_encoder, "
                    "generator.compliance.data, synthesis.inquiry.data, evaluate.benchmarks)")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    recognizer: RecognizerConfig = Field(default_factory=RecognizerConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig)

    def faceworld_uri(self) -> str:
        if self.faceworld is None:
            raise ConfigError("faceworld: null in this config, so there is no face world to "
                              "build or read")
        return self.faceworld.out or storage.join(self.workdir, "faceworld")

    def _given(self, key: str, value: str, default: Callable[[], str], what: str) -> str:
        """``value`` when set; else the face-world ``default``, unless the config has no face
        world (``faceworld: null``), where the key is required and the error names it."""
        if value:
            return value
        if self.faceworld is None:
            raise ConfigError(f"{key}: required, the URI of {what} (this config has "
                              "faceworld: null, so there is no face-world default)")
        return default()

    def benchmark_uris(self) -> list[str]:
        """The face world's benchmark files, in config order."""
        root = storage.join(self.faceworld_uri(), "benchmarks")
        return [storage.join(root, f"{spec.name}.bin") for spec in self.faceworld.benchmarks]

    def validation_benchmark_uris(self) -> list[str]:
        """The face world's validation benchmark files, in config order; none without a face
        world (give ``evaluate.validation_benchmarks`` then)."""
        if self.faceworld is None:
            return []
        root = storage.join(self.faceworld_uri(), VALIDATION_DIR)
        return [storage.join(root, f"{spec.name}.bin")
                for spec in self.faceworld.validation_benchmarks]

    def evaluation_benchmark_uris(self) -> list[str]:
        """``evaluate.benchmarks``, else the face world's benchmark files."""
        if self.evaluate.benchmarks:
            return list(self.evaluate.benchmarks)
        self._given("evaluate.benchmarks", "", lambda: "", "your .bin benchmarks (a list)")
        return self.benchmark_uris()

    def baseline_benchmark_uris(self) -> list[str]:
        """What the baselines (raw pixels, random init) measure: the face world's benchmarks,
        or with no face world ``evaluate.benchmarks``."""
        if self.faceworld is None:
            return self.evaluation_benchmark_uris()
        return self.benchmark_uris()

    def recognizer_data_uri(self) -> str:
        return self._given("recognizer.data", self.recognizer.data,
                           lambda: storage.join(self.faceworld_uri(), "train"),
                           "the recognizer's training set")

    def recognizer_data_uris(self) -> list[str]:
        """The recognizer's whole training set: ``recognizer.data`` then ``extra_data``; a set
        named twice is refused (it would train every identity twice, as distinct classes)."""
        uris = [self.recognizer_data_uri(), *self.recognizer.extra_data]
        repeated = [uri for index, uri in enumerate(uris) if uri in uris[:index]]
        if repeated:
            raise ConfigError(f"recognizer.extra_data: {repeated[0]} is already part of the "
                              "training set (recognizer.data or an earlier entry); name each "
                              "set once")
        return uris

    def recognizer_storage_uri(self) -> str:
        return self.recognizer.storage or storage.join(self.workdir, "recognizer")

    def recognizer_final_uri(self) -> str:
        """Where ``train-recognizer`` publishes this config's final checkpoint."""
        return storage.join(self.recognizer_storage_uri(), self.recognizer.run_name, FINAL_DIR)

    def generator_data_uri(self) -> str:
        return self._given("generator.data", self.generator.data,
                           lambda: storage.join(self.faceworld_uri(), "train"),
                           "the generator's training images")

    def inquiry_data_uri(self) -> str:
        return self._given("generator.compliance.data", self.generator.compliance.data,
                           lambda: storage.join(self.faceworld_uri(), "inquiry"),
                           "held-out inquiry images for m-compliance")

    def real_reference_uri(self) -> str:
        """``generator.compliance.real_reference``, else the face world's reference set; empty
        with neither (the report then says it has no real row)."""
        if self.generator.compliance.real_reference or self.faceworld is None:
            return self.generator.compliance.real_reference
        return storage.join(self.faceworld_uri(), "reference")

    def identity_encoder_uri(self) -> str:
        """E_id: named, or this config's recognizer run; with no face world it must be named
        (a recognizer checkpoint or model.pt), so the run cannot train on a default."""
        return self._given("generator.identity_encoder", self.generator.identity_encoder,
                           self.recognizer_final_uri, "E_id (a recognizer checkpoint or model.pt)")

    def generator_storage_uri(self) -> str:
        return self.generator.storage or storage.join(self.workdir, "generator")

    def generator_final_uri(self) -> str:
        """Where ``train-generator`` publishes this config's final checkpoint."""
        return storage.join(self.generator_storage_uri(), self.generator.run_name, FINAL_DIR)

    def generator_checkpoint_uri(self) -> str:
        return self.generator.checkpoint or self.generator_final_uri()

    def synthesis_checkpoint_uri(self) -> str:
        return self.synthesis.checkpoint or self.generator_checkpoint_uri()

    def synthesis_inquiry_uri(self) -> str:
        return self._given("synthesis.inquiry.data", self.synthesis.inquiry.data,
                           lambda: storage.join(self.faceworld_uri(), "inquiry"),
                           "the inquiry images to synthesise from")

    def require_inputs(self, command: str) -> None:
        """Resolve every input ``command`` reads, before it does any work: a config without a
        face world stops at once on the first data key or E_id it leaves unset."""
        needs: list[Callable[[], object]] = {
            "faceworld": [self.faceworld_uri],
            "baseline": [self.baseline_benchmark_uris],
            "train-recognizer": [self.recognizer_data_uri, self.evaluation_benchmark_uris],
            "train-generator": [self.generator_data_uri, self.identity_encoder_uri],
            "generator-report": [self.inquiry_data_uri, self.generator_data_uri],
            "generator-progress": [self.inquiry_data_uri],
            "evaluate": [self.evaluation_benchmark_uris],
            "synthesize": [self.synthesis_inquiry_uri],
        }.get(command, [])
        if command == "pipeline":
            needs = [self.recognizer_data_uri, self.evaluation_benchmark_uris]
            if self.generator.checkpoint:
                needs += [self.inquiry_data_uri, self.generator_data_uri,
                          self.synthesis_inquiry_uri]
            if self.generator.checkpoint and self.generator.init_from:
                needs.append(self.identity_encoder_uri)
        for resolve in needs:
            resolve()
        if command != "doctor":
            self._refuse_placeholders()

    def _refuse_placeholders(self) -> None:
        """Stop on a URI still holding the production configs' ``YOUR-BUCKET`` placeholder,
        naming its keys, instead of after the object store's region lookup times out."""
        keys = [key for key, value in _leaves(self.model_dump(mode="json"))
                if isinstance(value, str) and PLACEHOLDER_BUCKET in value]
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ConfigError(f"{shown}: still the shipped placeholder {PLACEHOLDER_BUCKET}; set "
                              "them to your own URIs (the keys marked USER-SUPPLIED in the "
                              "config; README, \"Production on real data\")")

    def threshold_benchmark_uris(self) -> list[str]:
        return self.synthesis.threshold_benchmarks or self.validation_benchmark_uris()

    def synthesis_out_uri(self) -> str:
        return self.synthesis.out or storage.join(self.workdir, "synthetic")

    def sweep_pool_uri(self) -> str:
        if self.sweep.pool:
            return self.sweep.pool
        if self.sweep.measure.data:
            return storage.join(self.workdir, "measured")
        return self.synthesis_out_uri()

    def sweep_storage_uri(self) -> str:
        return self.sweep.storage or storage.join(self.workdir, "sweeps")


PLACEHOLDER_BUCKET = "YOUR-BUCKET"
"""The bucket name the production configs use for every URI a user must supply."""


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.key, value)`` for every leaf of a dumped config (list items as ``key[i]``)."""
    if isinstance(node, dict):
        return [leaf for key, child in node.items()
                for leaf in _leaves(child, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(node, list):
        return [leaf for index, child in enumerate(node)
                for leaf in _leaves(child, f"{prefix}[{index}]")]
    return [(prefix, node)]


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> FactoryConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    source = path or "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = load_yaml(storage.read_text(path))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a YAML text file (byte 0x{exc.object[exc.start]:02x} "
                              f"at offset {exc.start} is not UTF-8)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(str(exc))})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        raw = loaded or {}
    for override in overrides:
        _apply_override(raw, override)
    try:
        return FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


MAX_YAML_NODES = 100_000
"""The most YAML nodes a config may hold with its aliases expanded. A real config has a few
hundred; a 370-byte "billion laughs" file, nine aliases nested nine deep, expands to 10**9."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses, before building any Python object, a document whose
    aliases would expand it past :data:`MAX_YAML_NODES` or make it contain itself."""

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise yaml.YAMLError(f"aliases expand it to {size:.3g} nodes, more than the "
                                 f"{MAX_YAML_NODES} a config may hold")
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under ``node`` as if every alias were copied out; each shared node is counted once
    per use but walked once (``sizes``), so the count is cheap however large it gets."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise yaml.YAMLError(f"an alias refers to a node that contains it "
                             f"(line {node.start_mark.line + 1})")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    sizes[key] = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    return sizes[key]


def load_yaml(text: str) -> Any:
    """Parse config YAML safely and boundedly: plain data only (no tags that build objects), no
    alias bomb, no nesting deep enough to exhaust the interpreter's stack."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``3`` is an int)."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    try:
        value = load_yaml(text) if text else ""
    except yaml.YAMLError:
        value = text  # bounded: the text itself, which the schema then checks
    set_dotted(raw, key, value, source=f"override {override!r}")


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``key`` ``a.b.c``, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {part} is not a config section")
        node = child
    node[parts[-1]] = value


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
"""Quotes a bad value in an error at a bounded length, whatever its size."""


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``key: expected ...`` for each, joined with ``; ``."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "<root>"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
            continue
        message = error["msg"].replace("Input should be", "expected").replace("Value error, ", "")
        parts.append(f"{key}: {message}, got {_SHORT_REPR.repr(error.get('input'))}")
    return "; ".join(parts)


def save_config(config: StrictModel, uri: str, code_version: str) -> None:
    """Write the resolved config, and the code and library versions that used it, as YAML at
    ``uri``."""
    from factory.provenance import package_versions

    document = {"code_version": code_version, "packages": package_versions(),
                "config": config.model_dump(mode="json")}
    storage.write_text(uri, yaml.safe_dump(document, sort_keys=False))


def _one_line(text: str) -> str:
    return " ".join(text.split())
