"""How fast the face world renders, on one core: images per second at a given size.

Run: ``.venv/bin/python bench/faceworld_speed.py [--size 112] [--images 2000]``.
Prints render-only and render+JPEG throughput and their ratio to the 500 images/s target.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from factory.faceworld.identity import sample_identity  # noqa: E402
from factory.faceworld.nuisance import sample_nuisance  # noqa: E402
from factory.faceworld.render import render_face  # noqa: E402
from factory.formats.images import encode_jpeg  # noqa: E402

TARGET = 500.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    identities = [sample_identity(rng) for _ in range(50)]
    draws = [(identities[i % 50], sample_nuisance(rng, "train")) for i in range(args.images)]
    render_face(*draws[0], args.size)  # warm caches

    start = time.perf_counter()
    images = [render_face(identity, nuisance, args.size) for identity, nuisance in draws]
    render_rate = args.images / (time.perf_counter() - start)
    start = time.perf_counter()
    for image, (_, nuisance) in zip(images, draws, strict=True):
        encode_jpeg(image, nuisance.jpeg_quality)
    encode_seconds = time.perf_counter() - start
    total_rate = args.images / (args.images / render_rate + encode_seconds)
    print(f"face world at {args.size}x{args.size}, one core, {args.images} images")
    print(f"  render only    {render_rate:8.0f} img/s   {render_rate / TARGET:.2f}x the 500 img/s target")
    print(f"  render + JPEG  {total_rate:8.0f} img/s   {total_rate / TARGET:.2f}x the 500 img/s target")


if __name__ == "__main__":
    main()
