"""Procedural identities: a vector of named facial parameters, each stored normalised to [0, 1].

An identity is what stays fixed across all images of one person: head shape, skin tone, the
geometry and colour of eyes, brows, nose and mouth, hair colour and style, ears and marks
(a mole, a beard). Everything that changes between images of the same person (pose, light,
expression, occlusion, background, camera) lives in :mod:`factory.faceworld.nuisance`.

Keeping the vector normalised makes "how different are two people" a plain distance, which is
what :func:`lookalike` uses to draw hard negatives for the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Field:
    """One identity parameter: its name and the physical range [low, high] that [0, 1] maps to."""

    name: str
    low: float
    high: float


# Lengths are in head half-widths (the renderer's unit); angles in radians.
FIELDS: tuple[Field, ...] = (
    Field("face_width", 0.86, 1.06),  # head half-width multiplier
    Field("face_length", 1.18, 1.46),  # head half-height / half-width
    Field("jaw_width", 0.50, 0.88),  # jaw half-width at the chin line, share of the face
    Field("chin", 0.0, 1.0),  # 0 rounded, 1 pointed
    Field("skin_tone", 0.0, 1.0),  # dark to light along the skin palette
    Field("skin_warmth", 0.0, 1.0),  # olive to rosy
    Field("eye_spacing", 0.30, 0.46),
    Field("eye_height", -0.16, 0.04),
    Field("eye_size", 0.12, 0.20),
    Field("eye_aspect", 0.38, 0.62),
    Field("iris_color", 0.0, 1.0),  # along the iris palette: dark brown .. blue .. green .. grey
    Field("iris_size", 0.55, 0.85),
    Field("brow_thickness", 0.035, 0.10),
    Field("brow_angle", -0.30, 0.30),
    Field("brow_gap", 0.09, 0.20),
    Field("brow_length", 0.16, 0.28),
    Field("nose_length", 0.28, 0.48),
    Field("nose_width", 0.10, 0.22),
    Field("mouth_width", 0.22, 0.42),
    Field("mouth_height", 0.50, 0.72),
    Field("lip_thickness", 0.035, 0.10),
    Field("lip_tone", 0.0, 1.0),  # pale to deep red
    Field("hair_color", 0.0, 1.0),  # along the hair palette: black .. brown .. blond .. red .. grey
    Field("hair_style", 0.0, 1.0),  # quantised to HAIR_STYLES
    Field("hairline", -0.78, -0.48),
    Field("hair_volume", 0.05, 0.35),
    Field("ear_size", 0.16, 0.28),
    Field("mole_x", -0.6, 0.6),
    Field("mole_y", -0.4, 0.7),
    Field("mole", 0.0, 1.0),  # a mole when above 0.6
    Field("beard", 0.0, 1.0),  # a beard when above 0.7, denser as it grows
)

FIELD_INDEX: dict[str, int] = {field.name: i for i, field in enumerate(FIELDS)}
DIMENSIONS = len(FIELDS)
HAIR_STYLES = ("short", "long", "buzz", "fringe", "volume")

_LOW = np.array([f.low for f in FIELDS])
_SPAN = np.array([f.high - f.low for f in FIELDS])


def sample_identity(rng: np.random.Generator) -> np.ndarray:
    """A new identity: every parameter drawn uniformly in [0, 1]."""
    return rng.random(DIMENSIONS)


def lookalike(identity: np.ndarray, rng: np.random.Generator, distance: float) -> np.ndarray:
    """A different person who resembles ``identity``: a Gaussian step of RMS size ``distance``.

    Hair style and hair colour are kept, since look-alikes that differ only in the face itself
    are the hard negatives a recogniser must separate.
    """
    step = rng.normal(0.0, distance, DIMENSIONS)
    for name in ("hair_style", "hair_color"):
        step[FIELD_INDEX[name]] = 0.0
    return np.clip(identity + step, 0.0, 1.0)


def describe(identity: np.ndarray) -> dict[str, float]:
    """The identity's parameters in physical units, by field name."""
    values = _LOW + np.clip(identity, 0.0, 1.0) * _SPAN
    return {field.name: float(v) for field, v in zip(FIELDS, values, strict=True)}


def hair_style(identity: np.ndarray) -> str:
    """The identity's hair style name."""
    index = min(int(identity[FIELD_INDEX["hair_style"]] * len(HAIR_STYLES)), len(HAIR_STYLES) - 1)
    return HAIR_STYLES[index]
