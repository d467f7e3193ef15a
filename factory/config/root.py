"""The root of the configuration: :class:`FactoryConfig`, one field per section, and the check
that no shipped placeholder URI is left in it.

Where each stage's data and outputs live when a config leaves them empty is decided by
:mod:`factory.layout`; which inputs each command reads, by :mod:`factory.cli`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from factory.config.base import StrictModel, Uri
from factory.config.evaluate import BaselineConfig, EvaluateConfig, JudgeConfig
from factory.config.experiments import ExperimentsConfig
from factory.config.faceworld import FaceWorldConfig
from factory.config.generator import GeneratorConfig
from factory.config.recognizer import RecognizerConfig
from factory.config.runtime import RuntimeConfig
from factory.config.sweep import SweepConfig
from factory.config.synthesis import SynthesisConfig
from factory.errors import ConfigError

PLACEHOLDER_BUCKET = "YOUR-BUCKET"
"""The bucket name the production configs use for every URI a user must supply."""


class PipelineConfig(StrictModel):
    """``factory pipeline``: what differs between its stages beyond their own sections."""

    synthetic_epochs: int | None = Field(
        None, ge=1, description="Epochs of the synthetic-trained recognizer; None: as the "
                                "real-trained one")


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

    def refuse_placeholders(self) -> None:
        """Stop on a URI still holding the production configs' ``YOUR-BUCKET`` placeholder,
        naming its keys, instead of after the object store's region lookup times out."""
        keys = [key for key, value in _leaves(self.model_dump(mode="json"))
                if isinstance(value, str) and PLACEHOLDER_BUCKET in value]
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ConfigError(f"{shown}: still the shipped placeholder {PLACEHOLDER_BUCKET}; set "
                              "them to your own URIs (the keys marked USER-SUPPLIED in the "
                              "config; docs/production.md)")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted.key, value)`` for every leaf of a dumped config (list items as ``key[i]``)."""
    if isinstance(node, dict):
        return [leaf for key, child in node.items()
                for leaf in _leaves(child, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(node, list):
        return [leaf for index, child in enumerate(node)
                for leaf in _leaves(child, f"{prefix}[{index}]")]
    return [(prefix, node)]
