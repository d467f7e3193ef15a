"""A folder of face images, ``root/<identity>/<image>.jpg``, as a training dataset.

The plainest way to bring real data: one sub-folder per identity. Identities are numbered in
sorted folder-name order and files are sorted within each, so labels and indices are the same on
every machine. The tree is listed once, recursively, which is one request on object stores.
Every listed file is checked to lie inside the root (:mod:`factory.formats.confined`): a link
out of it is refused when the folder is opened, never read.
"""

from __future__ import annotations

import numpy as np
from pyarrow import fs as pafs

from factory import storage
from factory.errors import FormatError
from factory.formats.confined import ConfinedFolder
from factory.formats.images import decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class ImageFolderDataset:
    """``root/<identity>/*.jpg|*.jpeg|*.png`` (extensions in any case) as a
    :class:`~factory.formats.dataset.FaceDataset`.

    Hidden entries (names starting with ``.``) and files deeper than one folder are ignored;
    identity folders without images get no label; an image, or identity folder, that is a link
    leading out of the root is a FormatError naming it. Picklable (it holds only names and
    labels).
    """

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri
        if not storage.is_dir(root_uri):
            raise FormatError(f"{root_uri}: image folder not found (expected a directory "
                              "root/identity/*.jpg)")
        by_identity: dict[str, list[str]] = {}
        sizes: dict[tuple[str, str], int] = {}
        folder = ConfinedFolder(root_uri)
        for identity, filename, size in _image_entries(root_uri):
            folder.join(identity, filename)  # refuses a link out of the root
            by_identity.setdefault(identity, []).append(filename)
            sizes[identity, filename] = size
        if not by_identity:
            raise FormatError(f"{root_uri}: no images found (expected root/identity/*.jpg, "
                              f"extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.class_names = sorted(by_identity)
        self._files: list[tuple[str, str]] = []
        labels: list[int] = []
        for label, identity in enumerate(self.class_names):
            for filename in sorted(by_identity[identity]):
                self._files.append((identity, filename))
                labels.append(label)
        self.labels = np.array(labels, dtype=np.int64)
        self.num_classes = len(self.class_names)
        self._sizes = np.array([sizes[entry] for entry in self._files], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._files)

    def uri(self, index: int) -> str:
        """The URI of image ``index``."""
        return storage.join(self.root_uri, *self._files[index])

    def raw(self, index: int) -> bytes:
        """The encoded bytes (JPEG or PNG) of image ``index``, as stored."""
        return storage.read_bytes(self.uri(index))

    def stored_size(self, index: int) -> int:
        """The bytes of image ``index``'s file, as the folder's listing gave them (not read)."""
        return int(self._sizes[index])

    def source(self, index: int) -> str:
        """Where image ``index`` lies, as errors name it: its URI."""
        return self.uri(index)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` decoded to HxWx3 uint8 RGB."""
        return decode_image(self.raw(index), self.source(index))


def _image_entries(root_uri: str) -> list[tuple[str, str, int]]:
    """``(identity, filename, size)`` for every image file exactly one folder below the root
    (the size in bytes, as listed; a link's is its target's)."""
    filesystem, root = storage.resolve(root_uri)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    entries = []
    prefix = root.rstrip("/") + "/"
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(prefix):
            continue
        parts = info.path[len(prefix):].split("/")
        if (len(parts) == 2 and not any(part.startswith(".") for part in parts)
                and parts[1].lower().endswith(IMAGE_EXTENSIONS)):
            entries.append((parts[0], parts[1], info.size or 0))
    return entries
