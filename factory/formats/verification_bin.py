"""insightface verification benchmarks (lfw.bin, cfp_fp.bin, ...), read without running code.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2N encoded images (JPEG/PNG
bytes), pair ``i`` is ``(bins[2i], bins[2i+1])`` and ``issame_list[i]`` says whether both show the
same identity. insightface loads them with plain ``pickle.load``, which runs whatever code the file
names. These files are downloaded from the internet, so :func:`read_bin` uses an unpickler that
admits exactly one global, ``_codecs.encode`` with latin-1 (how pickles of protocol 2 and below
spell byte strings), and refuses anything else with :class:`FormatError`.
"""

from __future__ import annotations

import io
import pickle
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory import storage
from factory.errors import FormatError, UserError
from factory.formats.images import decode_image, resize

IDENTITIES_SUFFIX = ".identities.npy"
"""The side file of a ``<name>.bin``: ``<name>.identities.npy``, the identity of each of its
images, which the face world writes so that an impostor threshold can use every pair of images
of different people, not only the benchmark's negative pairs (:mod:`factory.eval.threshold`)."""


@dataclass
class VerificationSet:
    """One benchmark: ``name`` (file stem), 2N encoded ``images`` and N ``issame`` flags.

    ``source`` (the file's URI) names the set in decoding errors.
    """

    name: str
    images: list[bytes]
    issame: list[bool]
    source: str = ""

    @property
    def num_pairs(self) -> int:
        return len(self.issame)

    def decode(self, size: int) -> np.ndarray:
        """All images decoded and resized to ``[2N, size, size, 3]`` uint8 RGB."""
        out = np.empty((len(self.images), size, size, 3), dtype=np.uint8)
        source = self.source or self.name
        for index, data in enumerate(self.images):
            out[index] = resize(decode_image(data, f"{source}: image {index}"), size)
        return out


def write_bin(uri: str, images: list[bytes], issame: list[bool]) -> None:
    """Write ``(images, issame)`` as insightface does (a pickle, protocol 4), atomically."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{uri}: {len(images)} images for {len(issame)} pairs, expected "
                         f"{2 * len(issame)}")
    payload = ([bytes(image) for image in images], [bool(flag) for flag in issame])
    storage.write_bytes(uri, pickle.dumps(payload, protocol=4))


def read_bin(uri: str) -> VerificationSet:
    """Read and validate a ``.bin``; :class:`FormatError` for anything that is not one."""
    try:
        data = storage.read_bytes(uri)
    except UserError as exc:
        raise FormatError(str(exc)) from None
    try:
        # encoding="bytes": Python 2 ``str`` objects (the image bytes of old files) stay bytes.
        loaded = _RestrictedUnpickler(io.BytesIO(data), uri).load()
    except FormatError:
        raise
    except Exception as exc:  # a corrupt pickle can fail in many ways; all mean "not a .bin"
        reason = (str(exc).splitlines() or [""])[0]
        raise FormatError(f"{uri}: expected a pickled (images, issame) tuple, cannot unpickle "
                          f"({type(exc).__name__}: {reason})") from None
    images, issame = _validate(loaded, uri)
    name = posixpath.basename(uri.rstrip("/")).removesuffix(".bin")
    return VerificationSet(name, images, issame, source=uri)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """The one callable a ``.bin`` may name: rebuilds a byte string from its latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode called with ({type(text).__name__}, "
                                     f"{encoding!r}), expected (str, 'latin1')")
    return text.encode("latin-1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except ``_codecs.encode``."""

    def __init__(self, file: io.BytesIO, uri: str) -> None:
        super().__init__(file, encoding="bytes")
        self._uri = uri

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise FormatError(f"{self._uri}: refused pickle global {module}.{name}; a verification "
                          "'.bin' holds only byte strings and booleans")


def _validate(loaded: Any, uri: str) -> tuple[list[bytes], list[bool]]:
    """Check the unpickled object is ``(list of 2N byte strings, list of N booleans)``."""
    expected = "expected (images: list of bytes, issame: list of bool)"
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise FormatError(f"{uri}: {expected}, found {type(loaded).__name__}")
    images, issame = loaded
    if not isinstance(images, (tuple, list)) or not isinstance(issame, (tuple, list)):
        raise FormatError(f"{uri}: {expected}, found ({type(images).__name__}, "
                          f"{type(issame).__name__})")
    for index, image in enumerate(images):
        if not isinstance(image, (bytes, bytearray)):
            raise FormatError(f"{uri}: {expected}, image {index} is {type(image).__name__}")
    for index, flag in enumerate(issame):
        if not isinstance(flag, int) or flag not in (0, 1):
            raise FormatError(f"{uri}: {expected}, issame[{index}] is {flag!r:.40}")
    if not issame or len(images) != 2 * len(issame):
        raise FormatError(f"{uri}: expected 2 images per pair and at least one pair, found "
                          f"{len(images)} images for {len(issame)} pairs")
    return [bytes(image) for image in images], [bool(flag) for flag in issame]
