"""Errors a user can fix: bad input files, bad config, unwritable outputs, a full disk.

The CLI turns any :class:`UserError` into one line on stderr and exit code 2, without a
traceback. Library code raises it (or a subclass) whenever the cause is the user's input rather
than a bug, and names the file, URI or config field in the message.

A full disk is the user's to fix too, and the fix needs a number: a command that writes much
declares how much it expects to write where (:func:`expected_write`), so that an ENOSPC inside
the declaration is one line naming the path, the space the write needs and the space left
(:func:`disk_full`); :func:`factory.storage.require_space` refuses such a write before it starts
when the space is not there.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass


class UserError(Exception):
    """A problem with the user's input; the message is shown as-is, on one line."""


class ConfigError(UserError):
    """A config file or override that does not match the typed config schema."""


class FormatError(UserError):
    """A data file (RecordIO, .bin, shard, image) that is not what its format requires."""


class DiskFullError(UserError):
    """A write that found no space left (or, refused before it began, would not find enough):
    named with its path, the space it needs when that was declared, and the space still free
    there. Writes go to temporary names renamed when complete, so what was written before is
    intact and a rerun resumes."""


@dataclass(frozen=True)
class ExpectedWrite:
    """What a command declared it is about to write: about ``bytes_needed`` bytes under
    ``path`` (a local path or a URI), described for the user as ``what``."""

    path: str
    bytes_needed: int
    what: str

    def needs(self) -> str:
        """``about <N> MiB needed for <what>``, as the error lines put it."""
        return f"about {mib(self.bytes_needed)} needed for {self.what}"


_EXPECTED: contextvars.ContextVar[ExpectedWrite | None] = contextvars.ContextVar(
    "facefactory_expected_write", default=None)
"""The innermost :func:`expected_write` declaration in force in this context."""

RESUMES = "free space there and rerun: finished work is kept and the run resumes"
"""How every full-disk line ends: what to do, and that nothing finished is lost."""

_TEXT_ENOSPC = re.compile(rf"^\s*(?:\w+\.)*\w*Error: \[Errno {errno.ENOSPC}\] (?P<message>.*)$",
                          re.MULTILINE)
"""ENOSPC as Python prints an ``OSError`` ending a traceback (``OSError: [Errno 28] No space
left on device: '/data/x.tar'``): all a Ray Data or Ray task error keeps of its worker's
exception is that text."""
_QUOTED_FILENAME = re.compile(r": '(?P<filename>[^'\n]*)'(?: -> '[^'\n]*')?\s*$")
"""The file an ``OSError`` names at the end of its message, when it names one."""


def mib(size: float) -> str:
    """A byte count in MiB for an error line: one decimal below 10 MiB, whole MiB above."""
    value = size / 2 ** 20
    return f"{value:.1f} MiB" if value < 10 else f"{value:,.0f} MiB"


@contextlib.contextmanager
def expected_write(path: str, bytes_needed: int, what: str) -> Iterator[ExpectedWrite]:
    """Declare that the block writes about ``bytes_needed`` bytes under ``path``.

    An ENOSPC that leaves the block (a plain ``OSError``, one in its cause chain, or the text a
    Ray worker's error carries) leaves it as the :class:`DiskFullError` of :func:`disk_full`,
    naming ``what`` and the space it needs; so does one that code inside the block turns into
    its error line itself (:func:`disk_full` reads the declaration while it is in force). The
    innermost declaration wins. Anything else passes through unchanged."""
    expected = ExpectedWrite(path, max(0, int(bytes_needed)), what)
    token = _EXPECTED.set(expected)
    try:
        yield expected
    except DiskFullError:
        raise
    except Exception as error:
        full = disk_full(error)
        if full is None:
            raise
        raise full from error
    finally:
        _EXPECTED.reset(token)


def disk_full(error: BaseException) -> DiskFullError | None:
    """The one-line error for an ENOSPC (None for anything else): an ``OSError`` of errno
    ENOSPC, one anywhere in ``error``'s cause chain (``__cause__``, ``__context__``, a Ray
    error's ``cause``), or a Ray error whose worker traceback ends in one.

    The line names the file that failed when the error says which, else the path the
    :func:`expected_write` in force declared; the space that write needs; and the space left on
    the nearest existing folder. ``OSError`` from pyarrow's local files and from ``write()``
    carries no file name, hence the declaration."""
    found, filename = _enospc(error)
    if not found:
        return None
    expected = _EXPECTED.get()
    declared = expected.path if expected is not None else ""
    path = filename or declared
    folder = _existing_folder(filename, declared)
    free = _free_text(folder)
    needs = f"{expected.needs()}, " if expected is not None else ""
    where = f" on {folder}" if folder else ""
    return DiskFullError(f"{path or folder or 'output'}: no space left on device ({needs}{free}"
                         f"{where}); {RESUMES}")


def not_enough_space(path: str, expected: ExpectedWrite, free: int, folder: str
                     ) -> DiskFullError:
    """The line that refuses a write before it starts: ``expected`` needs more than the
    ``free`` bytes left on ``folder``."""
    return DiskFullError(f"{path}: not enough space on device ({expected.needs()}, "
                         f"{mib(free)} free on {folder}); free space there or choose another "
                         "location, then rerun: finished work is kept and the run resumes")


def nearest_existing_folder(path: str) -> str:
    """``path`` itself when it is an existing folder, else its nearest existing parent ("" when
    even the root is missing, which only a relative path on a vanished cwd can give)."""
    folder = os.path.abspath(path)
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return ""
        folder = parent
    return folder


def _existing_folder(filename: str | None, declared: str) -> str:
    """Where to measure the free space: the failed file's folder, else the declared path (a
    local one; a URI's free space is not ours to measure), else the working directory."""
    if filename:
        return nearest_existing_folder(os.path.dirname(os.path.abspath(filename)))
    if declared.startswith("file://"):
        declared = declared.removeprefix("file://")
    if declared and "://" not in declared:
        return nearest_existing_folder(declared)
    if declared:
        return ""
    with contextlib.suppress(OSError):
        return os.getcwd()
    return ""


def _free_text(folder: str) -> str:
    """``<N> MiB free``, or ``free space unknown`` where it cannot be measured."""
    if not folder:
        return "free space unknown"
    try:
        return f"{mib(shutil.disk_usage(folder).free)} free"
    except OSError:
        return "free space unknown"


def _enospc(error: BaseException) -> tuple[bool, str | None]:
    """Whether ``error`` is (or carries) an ENOSPC, and the file it names if it names one."""
    seen: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and all(link is not other for other in seen):
        seen.append(link)
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return True, link.filename if isinstance(link.filename, str) else None
        cause = getattr(link, "cause", None)  # a Ray error's own exception, when it kept one
        link = link.__cause__ or link.__context__ or (
            cause if isinstance(cause, BaseException) else None)
    for link in seen:
        match = _TEXT_ENOSPC.search(str(link))
        if match:
            named = _QUOTED_FILENAME.search(match["message"])
            return True, named["filename"] if named else None
    return False, None
