"""The measuring sections: ``evaluate`` (a recognizer on .bin benchmarks), ``judge`` (the
independent recognizer of generator-report and analyze) and ``baseline`` (raw pixels)."""

from __future__ import annotations

from pydantic import Field, field_validator

from factory.config.base import StrictModel, Uri
from factory.config.recognizer import BackboneConfig


class BaselineConfig(StrictModel):
    """The raw-pixel cosine baseline: how far pixels alone get on each benchmark."""

    image_size: int = Field(32, ge=8, le=256)


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
