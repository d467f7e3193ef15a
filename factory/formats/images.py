"""Encode, decode and resize face images, always as HxWx3 uint8 RGB arrays.

OpenCV works in BGR; every conversion happens here so the rest of the package never has to think
about channel order. Undecodable bytes raise :class:`FormatError` naming where they came from.
"""

from __future__ import annotations

import cv2
import numpy as np

from factory.errors import FormatError


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")


def _encode(image_rgb: np.ndarray, extension: str, params: list[int]) -> bytes:
    _check_rgb(image_rgb)
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image_rgb.shape} image as {extension}")
    return buffer.tobytes()


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB image (stored as BGR-encoded JPEG, as insightface's tools write it)."""
    return _encode(image_rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)])


def encode_png(image_rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB image."""
    return _encode(image_rgb, ".png", [])


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG/... bytes to HxWx3 uint8 RGB; grayscale comes back with 3 equal channels.

    ``source`` (a URI, optionally with a key) names the bytes in the error if they do not decode.
    """
    decoded = None
    if len(data) > 0:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise FormatError(f"{source}: expected an encoded image (JPEG/PNG), "
                          f"could not decode {len(data)} bytes")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size``: area averaging when shrinking (no aliasing), bilinear when
    growing. Returns ``image`` itself when it already has that size."""
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    shrinking = size <= height and size <= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
