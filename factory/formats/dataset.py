"""The one interface training reads faces through, and the function that picks a reader for a URI.

Training code only ever sees a :class:`FaceDataset`, so a new storage format is one new class and
one new branch in :func:`open_dataset`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from factory import storage
from factory.errors import FormatError
from factory.formats.image_folder import ImageFolderDataset
from factory.formats.recordio import InsightFaceRecordDataset
from factory.formats.shards import SHARD_DIR, ShardDataset

PROGRESS_SECONDS = 5.0
"""How often the image check's progress bar redraws."""


@runtime_checkable
class FaceDataset(Protocol):
    """Labelled face images by index: what every training-data reader provides.

    Implemented by :class:`~factory.formats.recordio.InsightFaceRecordDataset`,
    :class:`~factory.formats.image_folder.ImageFolderDataset` and
    :class:`~factory.formats.shards.ShardDataset` (WebDataset shards). Implementations must be
    picklable, since DataLoader and Ray workers get copies.
    """

    labels: np.ndarray
    """int64 class id per image index, in ``0 .. num_classes-1``."""
    num_classes: int

    def __len__(self) -> int: ...

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as HxWx3 uint8 RGB."""
        ...


def training_targets(dataset: FaceDataset, index: int) -> tuple[tuple[int, int],
                                                              tuple[float, float]]:
    """Image ``index``'s two training targets with their weights: the dataset's own where it
    defines ``targets`` (shards with SynFace's soft identity-mixup labels), else the hard label
    as ``((y, y), (1, 0))``."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return targets(index)
    label = int(dataset.labels[index])
    return (label, label), (1.0, 0.0)


class ConcatenatedDataset:
    """Several training sets read as one: each member's identities numbered after those of the
    members before it (CemiFace's 1.2M set is its 1.0M set plus 40k further identities x 5, two
    synthesised datasets). Soft identity-mixup targets are shifted with their member's labels."""

    def __init__(self, members: Sequence[FaceDataset]):
        if not members:
            raise ValueError("ConcatenatedDataset needs at least one member")
        self.members = list(members)
        self.class_offsets = np.cumsum([0] + [m.num_classes for m in self.members])
        self.starts = np.cumsum([0] + [len(m) for m in self.members])
        self.labels = np.concatenate([np.asarray(m.labels, dtype=np.int64) + offset
                                      for m, offset in zip(self.members, self.class_offsets)])
        self.num_classes = int(self.class_offsets[-1])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        member = int(np.searchsorted(self.starts, index, side="right")) - 1
        return member, index - int(self.starts[member])

    def image(self, index: int) -> np.ndarray:
        member, local = self._locate(index)
        return self.members[member].image(local)

    def targets(self, index: int) -> tuple[tuple[int, int], tuple[float, float]]:
        member, local = self._locate(index)
        (first, second), weights = training_targets(self.members[member], local)
        offset = int(self.class_offsets[member])
        return (first + offset, second + offset), weights


def open_training_data(uris: Sequence[str], precheck_images: int = 0,
                       **selection) -> FaceDataset:
    """The training set made of ``uris`` (one dataset, or several read as one by
    :class:`ConcatenatedDataset`), each opened by :func:`open_checked` with the same selection."""
    members = [open_checked(uri, precheck_images, **selection) for uri in uris]
    return members[0] if len(members) == 1 else ConcatenatedDataset(members)


def open_checked(uri: str, precheck_images: int, **selection) -> FaceDataset:
    """:func:`open_dataset`, then every image decoded once when there are at most
    ``precheck_images`` (0: none): the driver's check before a training run, so a corrupt record
    is one line within seconds instead of a failure when an epoch's shuffle reaches it (which
    still ends the run without restarts, see :mod:`factory.train.workers`)."""
    dataset = open_dataset(uri, **selection)
    if 0 < len(dataset) <= precheck_images:
        for index in tqdm(range(len(dataset)), desc=f"checking {len(dataset)} images",
                          leave=False, mininterval=PROGRESS_SECONDS, disable=None):
            dataset.image(index)
    return dataset


def open_dataset(uri: str, m_range: tuple[float, float] | None = None,
                 similarity_range: tuple[float, float] | None = None,
                 mixup_share: float | None = None) -> FaceDataset:
    """Open the training data at ``uri``, choosing the reader by what is there.

    * a directory with ``train.rec`` (or the ``.rec`` file itself): insightface RecordIO;
    * a directory with ``shards/`` (``shards/shard-NNNNNN.tar``): a synthesised dataset of
      WebDataset shards, the samples whose requested m and measured similarity to their
      identity center lie in ``m_range`` and ``similarity_range`` (None: all), with identity
      mixup identities making up ``mixup_share`` of the identities (None: as synthesised);
    * a directory with other sub-directories: an image folder, ``root/identity/*.jpg``.

    Only shards carry the metadata a selection needs; selecting from another format is an error.
    """
    if storage.is_dir(uri) and storage.is_dir(storage.join(uri, SHARD_DIR)) and \
            not storage.exists(storage.join(uri, "train.rec")):
        return ShardDataset(uri, m_range, similarity_range, mixup_share)
    if m_range is not None or similarity_range is not None or mixup_share is not None:
        raise FormatError(f"{uri}: selecting samples by m, similarity or mixup share needs a synthesised "
                          "dataset of shards (shards/shard-NNNNNN.tar)")
    if uri.endswith(".rec") and not storage.is_dir(uri):
        return InsightFaceRecordDataset(posixpath.dirname(uri) or ".")
    if storage.is_dir(uri):
        if storage.exists(storage.join(uri, "train.rec")):
            return InsightFaceRecordDataset(uri)
        if any(storage.is_dir(storage.join(uri, name)) for name in storage.listdir(uri)):
            return ImageFolderDataset(uri)
    raise FormatError(f"{uri}: expected an insightface RecordIO directory (train.rec, train.idx, "
                      "property), a shard directory (shards/shard-NNNNNN.tar) or an image folder "
                      "(root/identity/*.jpg)")
