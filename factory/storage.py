"""Files by URI: local paths, ``file://``, ``s3://``, ``gs://`` and ``hdfs://``, through pyarrow.fs.

Every stage reads and writes through these helpers, so an output location is just a string in
the config and nothing assumes a node-local disk. Writes are atomic: bytes go to a temporary name
beside the target and are renamed into place only when complete, so a crash never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
from pyarrow import fs as pafs

from factory.errors import FormatError, UserError

TEMP_MARKER = ".tmp-"
FILESYSTEM_ERRORS = (OSError, pa.ArrowException)
"""What pyarrow filesystems raise for a file they cannot reach (cloud clients' own errors are
ArrowException, local ones OSError, PermissionError among them)."""
GCS_RETRY_SECONDS = 60
"""How long a Google Cloud Storage call keeps retrying before it fails, unless the URI sets its
own ``retry_limit_seconds``. The client's default is many minutes, so a missing credential or
an unreachable endpoint looked like a hang."""


def is_remote(uri: str) -> bool:
    """True for URIs with a scheme other than ``file``."""
    return "://" in uri and not uri.startswith("file://")


def absolute(uri: str) -> str:
    """A local path made absolute (remote URIs and the empty string pass through).

    Config locations are resolved once, where the config is loaded, so Ray workers and job
    drivers running in another working directory read and write the same place.
    """
    if not uri or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Split a URI into a pyarrow filesystem and the path inside it."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(_bounded(uri))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes
        raise UserError(f"{uri}: not a usable storage URI ({exc})") from None


def _bounded(uri: str) -> str:
    """``uri`` with the options its filesystem needs here, unless the URI sets them itself.

    Google Cloud Storage gets a retry time limit (its client retries for minutes). S3 gets
    ``allow_delayed_open``: pyarrow would otherwise start a multipart upload when a file is
    opened, and a process killed before closing it leaves that upload in the bucket, unseen
    by any listing but stored and billed; delayed, a file smaller than one upload part (every
    small file and most shards) is sent in a single request when closed, or not at all.
    """
    if uri.startswith(("gs://", "gcs://")):
        option = f"retry_limit_seconds={GCS_RETRY_SECONDS}"
    elif uri.startswith("s3://"):
        option = "allow_delayed_open=true"
    else:
        return uri
    if option.split("=")[0] + "=" in uri:
        return uri
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{option}"


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI, keeping its scheme and its query (``?region=..``) last."""
    if "://" in uri:
        base, question, query = uri.partition("?")
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, *parts)}{question}{query}"
    return os.path.join(uri, *parts)


def _file_info(uri: str, recursive: bool | None = None) -> pafs.FileInfo | list[pafs.FileInfo]:
    """What the filesystem knows of ``uri``, or with ``recursive`` set of the entries below it
    (all levels when True); a :class:`UserError` naming the URI when it cannot be asked."""
    filesystem, path = resolve(uri)
    target = path if recursive is None else pafs.FileSelector(path, recursive=recursive)
    try:
        return filesystem.get_file_info(target)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot look it up ({_reason(exc)})") from None


def exists(uri: str) -> bool:
    return _file_info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    return _file_info(uri).type == pafs.FileType.Directory


def file_size(uri: str) -> int | None:
    """Size in bytes of the file at ``uri``; None when there is no file there."""
    info = _file_info(uri)
    return info.size if info.type == pafs.FileType.File else None


def file_sha256(uri: str) -> str:
    """Hex sha256 of the file at ``uri``, read in 4 MiB chunks (never whole in memory)."""
    digest = hashlib.sha256()
    with open_input(uri) as stream:
        try:
            for chunk in iter(lambda: stream.read(1 << 22), b""):
                digest.update(chunk)
        except FILESYSTEM_ERRORS as exc:
            raise UserError(f"{uri}: cannot read ({_reason(exc)})") from None
    return digest.hexdigest()


def listdir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly inside a directory, sorted."""
    return sorted(info.base_name for info in _file_info(uri, recursive=False))


def list_files(uri: str) -> list[str]:
    """Paths (``/``-separated, relative to ``uri``) of every file below a directory, sorted."""
    prefix = resolve(uri)[1].rstrip("/") + "/"
    return sorted(info.path[len(prefix):] for info in _file_info(uri, recursive=True)
                  if info.type == pafs.FileType.File)


def makedirs(uri: str) -> None:
    """Create a directory and its parents; a clear :class:`UserError` if that is not allowed."""
    filesystem, path = resolve(uri)
    try:
        filesystem.create_dir(path, recursive=True)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot create output directory ({_reason(exc)})") from None


def ensure_writable(uri: str) -> None:
    """Create ``uri`` as a directory and prove a file can be written there, before any work."""
    makedirs(uri)
    probe = join(uri, f"{TEMP_MARKER}probe-{uuid.uuid4().hex}")
    filesystem, path = resolve(probe)
    try:
        with filesystem.open_output_stream(path) as stream:
            stream.write(b"ok")
        filesystem.delete_file(path)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: output location is not writable ({_reason(exc)})") from None


def open_input(uri: str) -> IO[bytes]:
    """A random-access binary file for reading; :class:`UserError` if it does not exist."""
    filesystem, path = resolve(uri)
    try:
        return filesystem.open_input_file(path)
    except FileNotFoundError:
        raise UserError(f"{uri}: file not found") from None
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot open for reading ({_reason(exc)})") from None


def read_bytes(uri: str) -> bytes:
    with open_input(uri) as stream:
        try:
            return stream.read()
        except FILESYSTEM_ERRORS as exc:
            raise UserError(f"{uri}: cannot read ({_reason(exc)})") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json_object(uri: str) -> dict:
    """A file holding one JSON object; :class:`FormatError` naming the file if it does not."""
    try:
        document = json.loads(read_bytes(uri))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise FormatError(f"{uri}: not valid JSON ({_reason(exc)})") from None
    if not isinstance(document, dict):
        raise FormatError(f"{uri}: expected a JSON object, found {type(document).__name__}")
    return document


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[IO[bytes]]:
    """Write a file under a temporary name and rename it to ``uri`` only if the block succeeds."""
    filesystem, path = resolve(uri)
    parent = posixpath.dirname(path) if "://" in uri else os.path.dirname(path)
    temp_path = posixpath.join(parent, f"{TEMP_MARKER}{uuid.uuid4().hex}-{posixpath.basename(path)}")
    try:
        filesystem.create_dir(parent, recursive=True)
        stream = filesystem.open_output_stream(temp_path)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot write ({_reason(exc)})") from None
    try:
        with stream:
            yield stream
        filesystem.move(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            filesystem.delete_file(temp_path)
        raise


def delete(uri: str) -> None:
    """Remove the file at ``uri``; a :class:`UserError` naming it if that is not allowed."""
    filesystem, path = resolve(uri)
    try:
        filesystem.delete_file(path)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot delete ({_reason(exc)})") from None


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_output(uri) as stream:
        stream.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def copy_tree(source: str, destination: str,
              source_filesystem: pafs.FileSystem | None = None) -> None:
    """Copy a directory tree between any two locations (local paths or URIs).

    ``source_filesystem`` lets a caller pass a path it got with its own filesystem (a Ray Train
    checkpoint's ``filesystem`` and ``path``).
    """
    if source_filesystem is None:
        source_filesystem, source = resolve(source)
    destination_filesystem, destination_path = resolve(destination)
    try:
        destination_filesystem.create_dir(destination_path, recursive=True)
        pafs.copy_files(source, destination_path, source_filesystem=source_filesystem,
                        destination_filesystem=destination_filesystem)
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{destination}: cannot copy {source} there ({_reason(exc)})") from None


def local_path(uri: str) -> str:
    """The local filesystem path of a local URI; :class:`UserError` for remote ones."""
    if is_remote(uri):
        raise UserError(f"{uri}: this step needs a local path, not a remote URI")
    return resolve(uri)[1]


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
