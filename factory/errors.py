"""Errors a user can fix: bad input files, bad config, unwritable outputs.

The CLI turns any :class:`UserError` into one line on stderr and exit code 2, without a
traceback. Library code raises it (or a subclass) whenever the cause is the user's input rather
than a bug, and names the file, URI or config field in the message.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message is shown as-is, on one line."""


class ConfigError(UserError):
    """A config file or override that does not match the typed config schema."""


class FormatError(UserError):
    """A data file (RecordIO, .bin, shard, image) that is not what its format requires."""
