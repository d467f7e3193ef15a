"""A dataset's files must lie inside its folder: no link and no ``..`` may lead out of it.

A folder handed over by someone else (an unpacked archive, a shared disk) can hold a symbolic
link to any file of the machine that reads it, ``000001/zz_leak.jpg -> ~/.ssh/id_ed25519``
say; a reader that followed it would copy that file into an export or a training run. Every
reader of a dataset folder therefore names the files it reads through
:meth:`ConfinedFolder.join`, which refuses such entries with one line naming them. Links that
stay inside the folder, and a folder that is itself a link, are fine. Only local files can be
links: object-store keys (``s3://``, ``gs://``) are plain names, so there only ``..`` is
refused.
"""

from __future__ import annotations

import os

from factory import storage
from factory.errors import FormatError


class ConfinedFolder:
    """Joins names onto a dataset folder's URI, refusing any entry that resolves outside it.

    Each folder on the way is looked at once (one ``lstat``; a link is resolved only when it
    is one), so checking every file of a million-image folder costs seconds, not minutes.
    """

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri
        self._path = None if storage.is_remote(root_uri) else storage.resolve(root_uri)[1]
        """The root's local path; None for object stores, which have no links."""
        self._real_root = "" if self._path is None else os.path.realpath(self._path)
        self._inside: set[str] = set()
        """Local folders under the root already found to stay inside it."""

    def join(self, *parts: str) -> str:
        """``storage.join(root, *parts)``; FormatError naming the entry when a part is
        ``..`` or ``.`` or holds a separator, or when a local link on the way leads out."""
        uri = storage.join(self.root_uri, *parts)
        if any(part in ("", ".", "..") or "/" in part for part in parts):
            raise FormatError(f"{uri}: refused, expected plain names below {self.root_uri} "
                              "(no '..', '.' or separators)")
        if self._path is not None:
            self._check_links(uri, self._path, parts)
        return uri

    def _check_links(self, uri: str, path: str, parts: tuple[str, ...]) -> None:
        """FormatError when ``parts`` below the local root ``path`` is, or passes through, a
        link whose target lies outside the root."""
        for depth, part in enumerate(parts, start=1):
            path = os.path.join(path, part)
            if path in self._inside:
                continue
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([target, self._real_root]) != self._real_root:
                    raise FormatError(f"{uri}: refused, a link to {target}, outside "
                                      f"{self.root_uri}; a dataset's files must lie inside its "
                                      "folder (copy the file in instead of linking it)")
            if depth < len(parts):
                self._inside.add(path)
