"""The one interface training reads faces through, and the function that picks a reader for a URI.

Training code only ever sees a :class:`FaceDataset`, so a new storage format is one new class and
one new branch in :func:`open_dataset`.
"""

from __future__ import annotations

import posixpath
from typing import Protocol, runtime_checkable

import numpy as np

from factory import storage
from factory.errors import FormatError
from factory.formats.image_folder import ImageFolderDataset
from factory.formats.recordio import InsightFaceRecordDataset


@runtime_checkable
class FaceDataset(Protocol):
    """Labelled face images by index: what every training-data reader provides.

    Implemented by :class:`~factory.formats.recordio.InsightFaceRecordDataset` and
    :class:`~factory.formats.image_folder.ImageFolderDataset`; WebDataset shards will implement
    it later. Implementations must be picklable, since DataLoader and Ray workers get copies.
    """

    labels: np.ndarray
    """int64 class id per image index, in ``0 .. num_classes-1``."""
    num_classes: int

    def __len__(self) -> int: ...

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as HxWx3 uint8 RGB."""
        ...


def open_dataset(uri: str) -> FaceDataset:
    """Open the training data at ``uri``, choosing the reader by what is there.

    * a directory with ``train.rec`` (or the ``.rec`` file itself): insightface RecordIO;
    * a directory with sub-directories: an image folder, ``root/identity/*.jpg``.
    """
    if uri.endswith(".rec") and not storage.is_dir(uri):
        return InsightFaceRecordDataset(posixpath.dirname(uri) or ".")
    if storage.is_dir(uri):
        if storage.exists(storage.join(uri, "train.rec")):
            return InsightFaceRecordDataset(uri)
        if any(storage.is_dir(storage.join(uri, name)) for name in storage.listdir(uri)):
            return ImageFolderDataset(uri)
    raise FormatError(f"{uri}: expected an insightface RecordIO directory (train.rec, train.idx, "
                      "property) or an image folder (root/identity/*.jpg)")
