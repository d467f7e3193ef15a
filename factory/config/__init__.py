"""Typed, validated configuration: YAML files plus dotted ``key=value`` overrides.

Every job loads one YAML file into :class:`FactoryConfig`, applies overrides such as
``faceworld.image_size=32``, and validates the result. Unknown keys and wrong types are refused
with one line naming the key and what was expected (the CLI turns that into exit code 2). The
resolved config is saved next to every artefact, so each output says exactly what made it.

Stages read only their own section; ``pipeline`` reads them all. Locations are URIs (local
paths, ``s3://``, ``gs://``); an empty stage location defaults to a folder under ``workdir``
(:mod:`factory.layout` decides which).

One module per section, each importing only :mod:`factory.config.base` and the sections it
nests: ``runtime``, ``faceworld``, ``recognizer``, ``generator``, ``synthesis``, ``evaluate``
(with ``judge`` and ``baseline``), ``sweep``, ``experiments``; ``root`` joins them into
:class:`FactoryConfig`, and ``loading`` reads and writes it. This package re-exports every
public name, so ``from factory.config import X`` is the one import callers need.
"""

from factory.config.base import (
    MAX_GRID_POINTS,
    MAX_IDENTITIES,
    MAX_IMAGES,
    MAX_NAME_CHARS,
    MIXUP_GRID,
    PROFILES,
    FolderName,
    Profile,
    StrictModel,
    Uri,
    check_grid,
    grid_points,
)
from factory.config.evaluate import BaselineConfig, EvaluateConfig, JudgeConfig
from factory.config.experiments import (
    EXPERIMENT_STUDIES,
    ExperimentsConfig,
    ExperimentsPreset,
    MeasuredTarget,
    VolumeConfig,
)
from factory.config.faceworld import BenchmarkSpec, FaceWorldConfig
from factory.config.generator import (
    ComplianceConfig,
    ConditionConfig,
    DiffusionConfig,
    GeneratorConfig,
    GeneratorOptimizerConfig,
    SamplingConfig,
    SimilarityMatchingConfig,
    UNetConfig,
)
from factory.config.loading import (
    MAX_YAML_NODES,
    describe_validation_error,
    load_config,
    load_yaml,
    save_config,
    set_dotted,
)
from factory.config.recognizer import (
    AugmentConfig,
    BackboneConfig,
    DomainMixupConfig,
    HeadConfig,
    OptimizerConfig,
    RecognizerConfig,
    ShardSelectionConfig,
    WorkersConfig,
)
from factory.config.root import PLACEHOLDER_BUCKET, FactoryConfig, PipelineConfig
from factory.config.runtime import RuntimeConfig
from factory.config.sweep import (
    SWEEP_PREFIXES,
    AshaConfig,
    MeasuredPoolConfig,
    SearchSpec,
    SweepConfig,
)
from factory.config.synthesis import (
    FPR_SPEC,
    ActorsConfig,
    InquiryConfig,
    MValuesConfig,
    PrivacyConfig,
    SynthesisConfig,
    parse_fpr,
)
from factory.layout import FINAL_DIR, VALIDATION_DIR

__all__ = [
    "EXPERIMENT_STUDIES", "FINAL_DIR", "FPR_SPEC", "MAX_GRID_POINTS", "MAX_IDENTITIES",
    "MAX_IMAGES", "MAX_NAME_CHARS", "MAX_YAML_NODES", "MIXUP_GRID", "PLACEHOLDER_BUCKET",
    "PROFILES", "SWEEP_PREFIXES", "VALIDATION_DIR",
    "ActorsConfig", "AshaConfig", "AugmentConfig", "BackboneConfig", "BaselineConfig",
    "BenchmarkSpec", "ComplianceConfig", "ConditionConfig", "DiffusionConfig",
    "DomainMixupConfig", "EvaluateConfig", "ExperimentsConfig", "ExperimentsPreset",
    "FaceWorldConfig", "FactoryConfig", "FolderName", "GeneratorConfig",
    "GeneratorOptimizerConfig", "HeadConfig", "InquiryConfig", "JudgeConfig", "MValuesConfig",
    "MeasuredPoolConfig", "MeasuredTarget", "OptimizerConfig", "PipelineConfig", "PrivacyConfig", "Profile",
    "RecognizerConfig", "RuntimeConfig", "SamplingConfig", "SearchSpec", "ShardSelectionConfig",
    "SimilarityMatchingConfig", "StrictModel", "SweepConfig", "SynthesisConfig", "UNetConfig",
    "Uri", "VolumeConfig", "WorkersConfig",
    "check_grid", "describe_validation_error", "grid_points", "load_config", "load_yaml",
    "parse_fpr", "save_config", "set_dotted",
]
