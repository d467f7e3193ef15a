"""Files by URI: local paths, ``file://``, ``s3://``, ``gs://`` and ``hdfs://``, through pyarrow.fs.

Every stage reads and writes through these helpers, so an output location is just a string in
the config and nothing assumes a node-local disk. Writes are atomic: bytes go to a temporary name
beside the target and are renamed into place only when complete, so a crash never leaves a
half-written file under a final name.

Remote calls have a deadline. A remote URI's filesystem is built, and its first request made
(the one that looks up credentials: a token from the cloud's metadata server, an S3 bucket's
region), in a worker thread that this thread waits for at most :func:`remote_deadline` seconds;
past it the call fails with one :class:`UserError` naming the URI and the deadline. The clients'
own retry limits do not cover an endpoint that accepts a connection and never answers (a
metadata server behind a broken proxy), and a thread blocked inside one does not see Ctrl-C:
waiting on the worker instead keeps this thread responsive to it. Moving file contents (reading,
writing, copying a tree) takes as long as the data needs and is not bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import posixpath
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

import pyarrow as pa
from pyarrow import fs as pafs

from factory.errors import (
    ExpectedWrite,
    FormatError,
    UserError,
    disk_full,
    expected_write,
    nearest_existing_folder,
    not_enough_space,
)

TEMP_MARKER = ".tmp-"
FILESYSTEM_ERRORS = (OSError, pa.ArrowException)
"""What pyarrow filesystems raise for a file they cannot reach (cloud clients' own errors are
ArrowException, local ones OSError, PermissionError among them)."""
GCS_RETRY_SECONDS = 60
"""How long a Google Cloud Storage call keeps retrying before it fails, unless the URI sets its
own ``retry_limit_seconds``. The client's default is many minutes, so a missing credential or
an unreachable endpoint looked like a hang."""
REMOTE_DEADLINE_SECONDS = 120.0
"""How long a remote URI's first request (credentials included) may take before it fails,
unless :data:`DEADLINE_VARIABLE` says otherwise; longer than :data:`GCS_RETRY_SECONDS`, so
that a client that gives up on its own still reports its own reason."""
DEADLINE_VARIABLE = "FACTORY_REMOTE_DEADLINE_S"
"""The environment variable that overrides :data:`REMOTE_DEADLINE_SECONDS` (seconds, > 0)."""

T = TypeVar("T")


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
    """Split a URI into a pyarrow filesystem and the path inside it, within the deadline."""
    return _within_deadline(uri, lambda: _filesystem(uri))


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(_bounded(uri))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes
        raise UserError(f"{uri}: not a usable storage URI ({exc})") from None


def _first_call(uri: str,
                call: Callable[[pafs.FileSystem, str], T]) -> tuple[pafs.FileSystem, str, T]:
    """Resolve ``uri`` and make its first request, ``call(filesystem, path)``, together within
    the deadline; the filesystem, the path and what ``call`` returned."""
    def reach() -> tuple[pafs.FileSystem, str, T]:
        filesystem, path = _filesystem(uri)
        return filesystem, path, call(filesystem, path)

    return _within_deadline(uri, reach)


def remote_deadline() -> float:
    """The deadline in seconds: :data:`DEADLINE_VARIABLE` if set, else the default."""
    value = os.environ.get(DEADLINE_VARIABLE, "").strip()
    if not value:
        return REMOTE_DEADLINE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise UserError(f"{DEADLINE_VARIABLE}={value!r}: expected a number of seconds above 0")
    return seconds


def _within_deadline(uri: str, call: Callable[[], T]) -> T:
    """``call()``, run in a worker thread when ``uri`` is remote; a :class:`UserError` if it has
    not returned within :func:`remote_deadline` seconds.

    The worker is a daemon thread: one stuck in a client is left behind and ends with the
    process (a thread pool's would be joined at exit, and hang it). Waiting on it here is
    interruptible, so Ctrl-C raises KeyboardInterrupt at once. One exception at exit: pyarrow
    waits for S3 calls in flight before it shuts its S3 client down, so an abandoned S3 call
    holds the exit until that client gives up by itself (about 100 s against an endpoint that
    never answers, measured), which is below the default deadline."""
    if not is_remote(uri):
        return call()
    deadline = remote_deadline()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"storage: {uri}", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        raise UserError(f"{uri}: no answer within {deadline:g} s from the storage service or "
                        f"its credential source (set {DEADLINE_VARIABLE} to wait longer)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


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
    def look_up(filesystem: pafs.FileSystem, path: str) -> pafs.FileInfo | list[pafs.FileInfo]:
        return filesystem.get_file_info(
            path if recursive is None else pafs.FileSelector(path, recursive=recursive))

    try:
        return _first_call(uri, look_up)[2]
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
    try:
        _first_call(uri, lambda filesystem, path: filesystem.create_dir(path, recursive=True))
    except FILESYSTEM_ERRORS as exc:
        raise UserError(f"{uri}: cannot create output directory ({_reason(exc)})") from None


def ensure_writable(uri: str) -> None:
    """Create ``uri`` as a directory and prove a file can be written there, before any work."""
    makedirs(uri)
    probe = join(uri, f"{TEMP_MARKER}probe-{uuid.uuid4().hex}")

    def write_and_delete(filesystem: pafs.FileSystem, path: str) -> None:
        with filesystem.open_output_stream(path) as stream:
            stream.write(b"ok")
        filesystem.delete_file(path)

    try:
        _first_call(probe, write_and_delete)
    except FILESYSTEM_ERRORS as exc:
        raise (disk_full(exc)
               or UserError(f"{uri}: output location is not writable ({_reason(exc)})")) from None


def open_input(uri: str) -> IO[bytes]:
    """A random-access binary file for reading; :class:`UserError` if it does not exist."""
    try:
        return _first_call(uri, lambda filesystem, path: filesystem.open_input_file(path))[2]
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
    def open_temporary(filesystem: pafs.FileSystem, path: str) -> tuple[str, IO[bytes]]:
        parent = posixpath.dirname(path) if "://" in uri else os.path.dirname(path)
        temp_path = posixpath.join(
            parent, f"{TEMP_MARKER}{uuid.uuid4().hex}-{posixpath.basename(path)}")
        filesystem.create_dir(parent, recursive=True)
        return temp_path, filesystem.open_output_stream(temp_path)

    try:
        filesystem, path, (temp_path, stream) = _first_call(uri, open_temporary)
    except FILESYSTEM_ERRORS as exc:
        raise (disk_full(exc) or UserError(f"{uri}: cannot write ({_reason(exc)})")) from None
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
    try:
        _first_call(uri, lambda filesystem, path: filesystem.delete_file(path))
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
    try:
        destination_filesystem, destination_path, _ = _first_call(
            destination, lambda filesystem, path: filesystem.create_dir(path, recursive=True))
        pafs.copy_files(source, destination_path, source_filesystem=source_filesystem,
                        destination_filesystem=destination_filesystem)
    except FILESYSTEM_ERRORS as exc:
        raise (disk_full(exc) or UserError(
            f"{destination}: cannot copy {source} there ({_reason(exc)})")) from None


def local_path(uri: str) -> str:
    """The local filesystem path of a local URI; :class:`UserError` for remote ones."""
    if is_remote(uri):
        raise UserError(f"{uri}: this step needs a local path, not a remote URI")
    return resolve(uri)[1]


def require_space(uri: str, bytes_needed: int, what: str) -> None:
    """Refuse a write of about ``bytes_needed`` bytes under ``uri`` before it starts when the
    local disk there has less free: a :class:`~factory.errors.DiskFullError` whose one line
    names the path, the space needed for ``what`` and the space free (exit code 2 from the CLI).

    A remote URI is not measured (an object store's space is not a disk's to run out of), nor
    is a disk whose free space cannot be read: the write goes ahead, and a full disk is still
    reported on one line if it comes (:func:`space_for`)."""
    if is_remote(uri):
        return
    folder = nearest_existing_folder(resolve(uri)[1])
    if not folder:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < bytes_needed:
        raise not_enough_space(uri, ExpectedWrite(uri, bytes_needed, what), free, folder)


@contextlib.contextmanager
def space_for(uri: str, bytes_needed: int, what: str) -> Iterator[None]:
    """Around a big write under ``uri``: refuse it now if its disk lacks about
    ``bytes_needed`` bytes (:func:`require_space`), and should the disk fill up all the same
    (an estimate is an estimate, and other processes write too) let its one-line error say how
    much ``what`` needs (:func:`~factory.errors.expected_write`)."""
    require_space(uri, bytes_needed, what)
    with expected_write(uri, bytes_needed, what):
        yield


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
