"""Per-image nuisance: everything that changes between two photos of the same person.

A :class:`Nuisance` is drawn from a *profile*. ``train`` mixes everything moderately, the way a
web-crawled training set does. The benchmark profiles each stress one thing, in the spirit of
the real benchmarks: ``frontal`` (near-frontal, mild light, like LFW), ``pose`` (large yaw, like
the profile side of CFP-FP), ``occlusion`` (sunglasses, masks, hands, hats) and ``lighting``
(strong directional and coloured light, low ambient).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

OCCLUSIONS = ("none", "glasses", "sunglasses", "mask", "hand", "hat")


@dataclass(frozen=True)
class Nuisance:
    """The draw for one image. Angles in radians, shifts as a share of the image side."""

    yaw: float
    roll: float
    scale: float
    shift_x: float
    shift_y: float
    light_angle: float  # direction the light comes from, in the image plane
    light_strength: float  # 0: flat, 1: the dark side goes nearly black
    ambient: float  # overall brightness multiplier
    tint: tuple[float, float, float]  # per-channel light colour (RGB multipliers)
    smile: float  # -1 frown .. 1 broad smile
    mouth_open: float  # 0 closed .. 1 open
    eye_open: float  # 0.2 squint .. 1 open
    brow_raise: float
    gaze: float  # iris shift, share of the eye width
    occlusion: str
    occlusion_seed: int  # fixes the occluder's colour and placement
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle: float
    background_blobs: int
    clothing: tuple[float, float, float]
    blur: float  # Gaussian sigma as a share of the image side
    noise: float  # noise standard deviation in 8-bit levels
    jpeg_quality: int


_OCCLUSION_WEIGHTS = {
    "train": (0.55, 0.09, 0.1, 0.1, 0.1, 0.06),
    "frontal": (0.9, 0.1, 0.0, 0.0, 0.0, 0.0),
    "pose": (0.9, 0.1, 0.0, 0.0, 0.0, 0.0),
    "occlusion": (0.0, 0.0, 0.35, 0.3, 0.25, 0.1),
    "lighting": (0.9, 0.1, 0.0, 0.0, 0.0, 0.0),
}


def _colour(rng: np.random.Generator, low: float = 0.0, high: float = 255.0) -> tuple:
    return tuple(float(c) for c in rng.uniform(low, high, 3))


def _yaw(rng: np.random.Generator, profile: str) -> float:
    if profile == "pose":
        return float(rng.choice((-1.0, 1.0)) * rng.uniform(0.65, 1.05))
    if profile == "train":
        return float(rng.normal(0.0, 0.4))
    return float(rng.uniform(-0.25, 0.25))


def sample_nuisance(rng: np.random.Generator, profile: str) -> Nuisance:
    """Draw one image's nuisance under ``profile`` (train, frontal, pose, occlusion, lighting)."""
    if profile not in _OCCLUSION_WEIGHTS:
        raise ValueError(f"unknown nuisance profile {profile!r}; expected one of "
                         f"{sorted(_OCCLUSION_WEIGHTS)}")
    mild = profile != "train"
    # A web-crawled training set holds some harsh light too; the lighting benchmark is all harsh.
    strong_light = profile == "lighting" or (profile == "train" and rng.random() < 0.4)
    if strong_light:
        light_strength, ambient = rng.uniform(0.55, 0.95), rng.uniform(0.6, 1.15)
        tint = tuple(float(t) for t in rng.uniform(0.7, 1.15, 3))
    else:
        light_strength = rng.uniform(0.0, 0.3 if mild else 0.6)
        ambient = rng.uniform(0.85, 1.1) if mild else rng.uniform(0.7, 1.25)
        tint = tuple(float(t) for t in rng.uniform(0.93, 1.05, 3))
    occlusion = str(rng.choice(OCCLUSIONS, p=_OCCLUSION_WEIGHTS[profile]))
    return Nuisance(
        yaw=_yaw(rng, profile),
        roll=float(rng.normal(0.0, 0.06 if mild else 0.12)),
        scale=float(rng.uniform(0.92, 1.06) if mild else rng.uniform(0.86, 1.12)),
        shift_x=float(rng.normal(0.0, 0.02 if mild else 0.035)),
        shift_y=float(rng.normal(0.0, 0.02 if mild else 0.035)),
        light_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        light_strength=float(light_strength),
        ambient=float(ambient),
        tint=tint,
        smile=float(rng.uniform(-0.3, 0.6) if mild else rng.uniform(-0.6, 1.0)),
        mouth_open=float(max(0.0, rng.uniform(-0.6, 0.6 if mild else 1.0))),
        eye_open=float(rng.uniform(0.7, 1.0) if mild else rng.uniform(0.35, 1.0)),
        brow_raise=float(rng.uniform(-0.02, 0.02) if mild else rng.uniform(-0.04, 0.05)),
        gaze=float(rng.normal(0.0, 0.08)),
        occlusion=occlusion,
        occlusion_seed=int(rng.integers(2**31)),
        background=(_colour(rng), _colour(rng)),
        background_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        background_blobs=int(rng.integers(0, 4)),
        clothing=_colour(rng, 20.0, 235.0),
        blur=float(rng.uniform(0.0, 0.008 if mild else 0.014)),
        noise=float(rng.uniform(0.0, 4.0 if mild else 8.0)),
        jpeg_quality=int(rng.integers(80, 96) if mild else rng.integers(55, 96)),
    )


def same_scene(nuisance: Nuisance, scene: Nuisance) -> Nuisance:
    """``nuisance`` photographed in ``scene``'s setting: its background and clothing."""
    return replace(nuisance, background=scene.background,
                   background_angle=scene.background_angle,
                   background_blobs=scene.background_blobs, clothing=scene.clothing)
