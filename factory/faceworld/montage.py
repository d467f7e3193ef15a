"""A contact sheet of face-world images: one row per identity, one column per image."""

from __future__ import annotations

import numpy as np


def montage(rows: list[list[np.ndarray]], gap: int = 2, fill: int = 255) -> np.ndarray:
    """Tile equally sized RGB images into a grid; short rows are padded with ``fill``."""
    if not rows or not any(rows):
        raise ValueError("montage needs at least one image")
    height, width = next(image for row in rows for image in row).shape[:2]
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), fill,
                    np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            sheet[top : top + height, left : left + width] = image
    return sheet
