"""Errors a user can fix: bad input files, bad config, unwritable outputs.

The CLI turns any :class:`UserError` into one line on stderr and exit code 2, without a
traceback. Library code raises it (or a subclass) whenever the cause is the user's input rather
than a bug, and names the file, URI or config field in the message.
"""

from __future__ import annotations

import errno
import os
import shutil


class UserError(Exception):
    """A problem with the user's input; the message is shown as-is, on one line."""


class ConfigError(UserError):
    """A config file or override that does not match the typed config schema."""


class FormatError(UserError):
    """A data file (RecordIO, .bin, shard, image) that is not what its format requires."""


class DiskFullError(UserError):
    """A write that found no space left: named with its path and the space still free there.
    Writes go to temporary names renamed when complete, so what was written before is intact
    and a rerun resumes."""


def disk_full(error: BaseException) -> DiskFullError | None:
    """The one-line error for an ``OSError`` of errno ENOSPC (None for anything else)."""
    if not isinstance(error, OSError) or error.errno != errno.ENOSPC:
        return None
    path = error.filename or ""
    folder = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        free = f"{shutil.disk_usage(folder).free / 2 ** 20:,.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"{path or folder}: no space left on device ({free} on {folder}); free "
                         "space there and rerun: finished work is kept and the run resumes")
