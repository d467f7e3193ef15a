"""Image encode/decode/resize: RGB in and out, lossless PNG, close JPEG, clear errors."""

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.images import decode_image, encode_jpeg, encode_png, resize


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def test_png_round_trip_is_exact():
    image = _gradient()
    decoded = decode_image(encode_png(image))
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


def test_jpeg_round_trip_is_close_and_keeps_channel_order():
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 220  # pure red: a swapped channel order would come back blue
    decoded = decode_image(encode_jpeg(image, quality=95))
    assert decoded.shape == (32, 32, 3)
    assert np.abs(decoded.astype(int) - image.astype(int)).max() <= 8
    assert decoded[..., 0].mean() > 200 and decoded[..., 2].mean() < 20


def test_jpeg_quality_changes_size():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(encode_jpeg(image, quality=30)) < len(encode_jpeg(image, quality=95))


def test_grayscale_png_decodes_to_three_channels():
    import cv2

    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    ok, buffer = cv2.imencode(".png", gray)
    assert ok
    decoded = decode_image(buffer.tobytes())
    assert decoded.shape == (8, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0 truncated"])
def test_undecodable_bytes_name_the_source(data):
    with pytest.raises(FormatError) as info:
        decode_image(data, source="s3://bucket/x.rec: record 7")
    assert "s3://bucket/x.rec: record 7" in str(info.value)
    assert "\n" not in str(info.value)


def test_encode_rejects_non_rgb():
    with pytest.raises(ValueError):
        encode_png(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((8, 8, 3), np.float32))


def test_resize_shapes_and_noop():
    image = _gradient(40, 40)
    assert resize(image, 40) is image
    assert resize(image, 20).shape == (20, 20, 3)
    assert resize(image, 64).shape == (64, 64, 3)
    assert resize(_gradient(30, 50), 40).shape == (40, 40, 3)


def test_resize_shrink_averages():
    dots = np.zeros((6, 6, 3), np.uint8)
    dots[1::3, 1::3] = 255  # the centre of each 3x3 block
    # area interpolation averages each block (255/9); bilinear would sample the centre (255)
    np.testing.assert_allclose(resize(dots, 2).astype(int), 28, atol=1)
