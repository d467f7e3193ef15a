"""The ``generator`` section: ``factory train-generator``'s CemiFace diffusion model, its
sampler (shared with synthesis) and the m-compliance report."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from factory.config.base import FolderName, StrictModel, Uri, check_grid
from factory.config.recognizer import BackboneConfig, WorkersConfig


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


TargetSchedule = Literal["linear", "constant", "ramp"]


class SimilarityMatchingConfig(StrictModel):
    """L = L_MSE + lambda L_SimMat, with m drawn per sample from a grid over [low, high]."""

    weight: float = Field(0.05, ge=0.0, description="lambda (CemiFace: 0.05; 0.5 was worse)")
    m_interval: float = Field(0.04, gt=0.0, le=1.0, description="Grid step (CemiFace: 0.04)")
    m_low: float = Field(-1.0, ge=-1.0, le=1.0)
    m_high: float = Field(1.0, ge=-1.0, le=1.0)
    target_schedule: TargetSchedule = Field(
        "linear", description="How L_SimMat's target moves with the noise level: 'linear' is "
        "CemiFace's gamma = t/T (target 1 at t = 0, m at t = T); 'constant' is gamma = 1 (target m "
        "at every t), so the late sampling steps no longer pull a sample back to its inquiry; "
        "'ramp' is gamma (m - s)^2 with gamma = t/T (CemiFace's m term alone: no similarity "
        "target at low noise, neither the inquiry's nor m)")
    ramp_full_at: float = Field(
        1.0, gt=0.0, le=1.0, description="For 'ramp' only: the noise level t/T from which the m "
        "term has its full weight, gamma = min(1, (t/T) / ramp_full_at); 1 is CemiFace's gamma, "
        "0.5 asks for m over the whole noisier half and still nothing of nearly clean images")

    @model_validator(mode="after")
    def _ordered(self) -> SimilarityMatchingConfig:
        if self.m_low > self.m_high:
            raise ValueError("m_low must not exceed m_high")
        check_grid(self.m_low, self.m_high, self.m_interval, "m_interval")
        if self.ramp_full_at != 1.0 and self.target_schedule != "ramp":
            raise ValueError("ramp_full_at applies to target_schedule 'ramp' only, "
                             f"not '{self.target_schedule}'")
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
    ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0,
        description="Decay of the EMA weights that checkpoints hold; with ema_warmup it is "
                    "reached only at step 9 d / (1 - d): 8991 for 0.999, 89991 for 0.9999")
    ema_warmup: bool = Field(
        True, description="diffusers EMAModel's ramp: the decay after n steps is "
                          "min(ema_decay, (1 + n) / (10 + n)), so a short run averages about "
                          "its last tenth whatever ema_decay says; false: ema_decay from the "
                          "first step (for a run that continues a trained checkpoint, whose "
                          "weights are a sound start for the average)")


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
    precision: Literal["auto", "native", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype of the UNet and E_id; auto: bf16 on a GPU (fp16 "
                            "where bf16 is missing), fp32 on a CPU; native: as auto, but bf16 "
                            "also on a CPU with native bf16 (avx512_bf16 or AMX), where it "
                            "samples about 1.8x faster at equal compliance")
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
