"""Naming a sample's difficulty by the similarity it should measure, not by the generator's m.

A generator's m is a knob: what similarity a sample at m = 0.5 actually has depends on the
generator, its sampler and the network that measures it. ``synthesis.m.axis`` lets a config name
the target on a measured axis instead (``judge`` or ``E_id``: "0.90, 0.80, 0.70"); each target
becomes the m that the generator's *compliance curve* says reaches it. The curve is the
per-m mean similarity ``factory generator-report`` measured (``compliance_curve.json``, stored
beside the weights when a checkpoint is shipped); the inverse is piecewise linear between the
curve's points, which is monotone wherever the curve is, and a target outside the range the
curve reaches is refused with that range. The sampler the curve was measured with must be the
one synthesis uses, since guidance or another solver moves every similarity.

Every sample records both: the requested m it was sampled at, and the target it was asked to
measure (``target_similarity``, ``target_measured_by``), beside what E_id measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from factory import storage
from factory.config import MValuesConfig, SamplingConfig
from factory.errors import FormatError, UserError

CURVE_FILE = "compliance_curve.json"
"""Written by ``factory generator-report``; read from the generator checkpoint by synthesis."""
CURVE_SAMPLING_KEYS = ("solver", "steps", "eta", "identity_handoff", "guidance_scale",
                       "guidance_interval")
"""The sampler settings a curve holds for: any difference moves the measured similarities."""


@dataclass(frozen=True)
class MAxis:
    """Targets on ``measured_by``'s axis -> requested m (identity when ``measured_by`` is None)."""

    measured_by: str | None = None
    m: tuple[float, ...] = ()  # the curve's m values, in the order of ``similarity``
    similarity: tuple[float, ...] = ()  # strictly increasing mean measured similarity

    @property
    def reachable(self) -> tuple[float, float]:
        return (self.similarity[0], self.similarity[-1]) if self.measured_by else (-1.0, 1.0)

    def requested(self, target: float) -> float:
        """The m that reaches ``target`` on this axis (``target`` itself on the m axis)."""
        if self.measured_by is None:
            return float(target)
        return round(float(np.interp(target, self.similarity, self.m)), 6)

    def record(self, target: float) -> dict:
        """The sample metadata that says what the target was (nothing on the m axis)."""
        if self.measured_by is None:
            return {}
        return {"target_similarity": float(target), "target_measured_by": self.measured_by}


def curve_document(by: dict[str, tuple[list[float], list[float]]], sampling: dict,
                   checkpoint: str, identities: list[int], seeds: int) -> dict:
    """The JSON a report writes: per recognizer the m values and mean similarity at each."""
    return {"checkpoint": checkpoint, "identities": identities, "seeds_per_m": seeds,
            "sampling": sampling_record(sampling),
            "curves": {name: {"m": list(map(float, m)), "mean": list(map(float, mean))}
                       for name, (m, mean) in by.items()}}


def sampling_record(sampling: dict) -> dict:
    """The sampler settings a curve holds for, as JSON stores them (tuples become lists)."""
    return json.loads(json.dumps({key: sampling.get(key) for key in CURVE_SAMPLING_KEYS}))


def m_axis(cfg: MValuesConfig, sampling: SamplingConfig, checkpoint: str) -> MAxis:
    """The axis ``cfg`` names, read from ``checkpoint``'s curve when it is a measured one;
    UserError (one line) when the curve is missing, made with another sampler, not monotone,
    or when a configured target lies outside what it reaches."""
    if cfg.axis == "m":
        return MAxis()
    axis = compliance_axis(cfg.axis, sampling, checkpoint)
    low, high = axis.reachable
    outside = [t for t in configured_targets(cfg) if not low <= t <= high]
    if outside:
        raise UserError(f"synthesis.m: target {outside[0]:g} is outside what the generator "
                        f"reaches on the {cfg.axis} axis ({low:.3f} .. {high:.3f}, "
                        f"{storage.join(checkpoint, CURVE_FILE)})")
    return axis


def compliance_axis(measured_by: str, sampling: SamplingConfig, checkpoint: str) -> MAxis:
    """``measured_by``'s (judge or E_id) axis from ``checkpoint``'s compliance curve; UserError
    (one line) when the curve is missing, made with another sampler or not monotone."""
    path = storage.join(checkpoint, CURVE_FILE)
    if not storage.exists(path):
        raise UserError(f"{path}: not found; a target on the {measured_by} axis needs the "
                        "generator's compliance curve (run factory generator-report and copy its "
                        f"{CURVE_FILE} into the checkpoint)")
    document = storage.read_json_object(path)
    curve = (document.get("curves") or {}).get(measured_by)
    try:
        m, mean = np.asarray(curve["m"], float), np.asarray(curve["mean"], float)
        if m.ndim != 1 or m.shape != mean.shape or len(m) < 2:
            raise ValueError
    except (TypeError, KeyError, ValueError):
        raise FormatError(f"{path}: no {measured_by} curve of at least two (m, mean) "
                          "points") from None
    recorded = document.get("sampling") or {}
    here = sampling_record(sampling.model_dump())
    differs = [f"{key} {recorded.get(key)!r} there, {here[key]!r} here"
               for key in CURVE_SAMPLING_KEYS if recorded.get(key) != here[key]]
    if differs:
        raise UserError(f"{path}: the curve was measured with another sampler ("
                        f"{'; '.join(differs)}); measure it with synthesis.sampling's settings")
    order = np.argsort(mean)
    m, mean = m[order], mean[order]
    if np.any(np.diff(mean) <= 0) or np.any(np.diff(m) <= 0):
        raise UserError(f"{path}: the {measured_by} curve is not monotone in m, so a measured "
                        "target does not name one m; use synthesis.m.axis m")
    return MAxis(measured_by, tuple(m), tuple(mean))


def configured_targets(cfg: MValuesConfig) -> list[float]:
    """The extreme targets a config can ask for: its values, or its low and high."""
    return list(cfg.values) if cfg.kind == "values" else [cfg.low, cfg.high]
