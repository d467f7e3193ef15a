"""The recognizer protocol's augmentations, in numpy and OpenCV (no torchvision CPU wheel).

Random resized crop (area scale 0.9-1, aspect 3/4-4/3), horizontal flip, colour jitter
(brightness, contrast, saturation and hue, each by up to ``color_jitter``) and random erasing
(area 2-10 %, aspect 0.3-3.3, filled with zeros after normalisation), as in CemiFace and DCFace.
Every draw comes from the generator passed in, so a (seed, epoch, index) triple fixes the result.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from factory.config import AugmentConfig

ASPECT_RANGE = (3 / 4, 4 / 3)
ERASE_ASPECT_RANGE = (0.3, 3.3)


def random_resized_crop(
    image: np.ndarray, size: int, scale: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Crop a random box of ``scale`` times the area and resize it to ``size`` x ``size``."""
    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*np.log(ASPECT_RANGE)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            image = image[top : top + h, left : left + w]
            break
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue, each by a factor in [1 - s, 1 + s], random order."""
    out = image.astype(np.float32)
    for op in rng.permutation(4):
        factor = rng.uniform(1 - strength, 1 + strength)
        if op == 0:
            out = out * factor
        elif op == 1:
            out = (out - out.mean()) * factor + out.mean()
        elif op == 2:
            gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            out = (out - gray[..., None]) * factor + gray[..., None]
        else:
            hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
            shift = int(round((factor - 1) * 180))  # OpenCV hue spans 0..179
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def random_erase(
    chw: np.ndarray, scale: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Zero a random rectangle of ``scale`` times the area (of a normalised CHW image)."""
    _, height, width = chw.shape
    for _ in range(10):
        target = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*np.log(ERASE_ASPECT_RANGE)))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            chw[:, top : top + h, left : left + w] = 0.0
            break
    return chw


def to_network_input(image: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW in [-1, 1], the arcface_torch normalisation."""
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).copy()


def augment(
    image: np.ndarray, size: int, cfg: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """One training view of an RGB uint8 image, as a normalised float32 CHW array."""
    image = random_resized_crop(image, size, cfg.crop_scale, rng)
    if cfg.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(image, cfg.color_jitter, rng)
    chw = to_network_input(image)
    if rng.random() < cfg.erase_probability:
        chw = random_erase(chw, cfg.erase_scale, rng)
    return chw
