"""A sweep restores only Tune state it wrote itself: what Tune unpickles never comes from the
shared folder.

Restoring a Tune experiment unpickles ``tuner.pkl``, decodes pickles inside the experiment state
and reads trials' ``error.pkl``: code from whoever can write the sweep's storage, which is meant
to be a shared bucket. Checking that folder and then letting Tune read it leaves a window
between the check and the read, and sealing whatever the folder holds when a sweep ends blesses
a file swapped in while it ran. So Tune never works in the shared folder:

- Each run gives Tune a private temporary folder of its own process (``run_sweep``). When
  ``fit`` ends, :func:`publish` uploads every file of it to the sweep's folder and seals them:
  the sha256 of the bytes read from the private folder and uploaded (what Tune wrote, which
  nobody else can change), with an HMAC over them under a key that never leaves the user's
  machine. A file changed in the shared folder, whenever it changed, is never in the seal.
- A rerun's :func:`copy_sealed` copies the sealed files into a fresh private folder, hashing the
  very bytes it writes there, and Tune restores from that copy alone: a file swapped in the
  shared folder after the copy is never read. The copy is refused (a one-line UserError, before
  Ray starts and before anything is unpickled) unless every sealed file is there unchanged, the
  HMAC is this key's, and the folder holds no file Tune would read back that the seal does not
  list (a file of the experiment folder itself, but the sweep's own and the seal, or any
  ``.pkl``).

The key is ``FACTORY_SWEEP_KEY`` when set (to share one key with a cluster's job driver), else
32 random bytes kept in ``$XDG_CONFIG_HOME/facefactory/sweep.key`` (``~/.config`` by default),
created on first use, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence

from factory import storage
from factory.errors import UserError

SEAL_FILE = "facefactory-seal.json"
KEY_ENV = "FACTORY_SWEEP_KEY"


def sweep_key() -> bytes:
    """This user's sealing key (see the module doc), created on first use."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    path = os.path.join(config_home, "facefactory", "sweep.key")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(secrets.token_bytes(32))
    with open(path, "rb") as stream:
        return stream.read()


def _tag(key: bytes, digests: dict[str, str]) -> str:
    message = json.dumps(sorted(digests.items()), separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _local(folder: str, relative: str) -> str:
    return os.path.join(folder, *relative.split("/"))


def publish(experiment: str, tune_path: str) -> None:
    """Upload the Tune experiment this process ran in its private folder ``experiment`` to the
    sweep's folder ``tune_path``, then seal it: each digest is of the bytes read here and
    uploaded, never of what the shared folder holds afterwards (see the module doc)."""
    digests = {}
    for relative in storage.list_files(experiment):
        data = storage.read_bytes(_local(experiment, relative))
        digests[relative] = hashlib.sha256(data).hexdigest()
        storage.write_bytes(storage.join(tune_path, *relative.split("/")), data)
    document = {"files": digests, "hmac": _tag(sweep_key(), digests)}
    storage.write_text(storage.join(tune_path, SEAL_FILE), json.dumps(document, indent=2))


def _refusal(tune_path: str, problem: str) -> UserError:
    return UserError(f"{tune_path}: {problem}; it is not restored, since restoring runs the "
                     f"pickles in it; to start the sweep afresh, remove {tune_path} or choose "
                     "another sweep.name")


def _sealed_digests(tune_path: str) -> dict[str, str]:
    """The digests the seal lists, once its HMAC proves it this user's; UserError otherwise."""
    seal_uri = storage.join(tune_path, SEAL_FILE)
    if not storage.exists(seal_uri):
        raise _refusal(tune_path, f"Tune state without the sweep's seal ({SEAL_FILE})")
    document = storage.read_json_object(seal_uri)
    recorded = document.get("files")
    tag = document.get("hmac")
    if not isinstance(recorded, dict) or not isinstance(tag, str) or \
            not hmac.compare_digest(_tag(sweep_key(), recorded), tag):
        raise _refusal(tune_path, "Tune state sealed by another key, or a forged seal")
    return recorded


def _unsealed(tune_path: str, recorded: dict[str, str], own_files: Sequence[str]) -> list[str]:
    """Files Tune would read back that the seal does not list: the experiment folder's own
    files (but ``own_files``, the sweep's, read only as JSON or never, and the seal) and every
    ``.pkl`` below it."""
    skipped = {*own_files, SEAL_FILE, *recorded}
    return [relative for relative in storage.list_files(tune_path)
            if relative not in skipped and ("/" not in relative or relative.endswith(".pkl"))]


def _copy(source: str, destination: str) -> str | None:
    """Copy one file from the shared folder into the private one; the sha256 of the bytes
    written there, or None when there is no such file."""
    if not storage.exists(source):
        return None
    data = storage.read_bytes(source)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with open(destination, "wb") as stream:
        stream.write(data)
    return hashlib.sha256(data).hexdigest()


def copy_sealed(tune_path: str, experiment: str, own_files: Sequence[str]) -> None:
    """Copy the Tune state sealed in the sweep's folder ``tune_path`` into this process's
    private folder ``experiment``, for Tune to restore from; UserError, before anything is
    unpickled, unless the bytes copied are exactly the ones this user's key sealed (see the
    module doc)."""
    recorded = _sealed_digests(tune_path)
    changed = _unsealed(tune_path, recorded, own_files)
    for relative, digest in recorded.items():
        copied = _copy(storage.join(tune_path, *relative.split("/")), _local(experiment, relative))
        if copied != digest:
            changed.append(relative)
    if changed:
        shown = ", ".join(sorted(changed)[:3]) + (", ..." if len(changed) > 3 else "")
        raise _refusal(tune_path, f"Tune state changed since the sweep sealed it ({len(changed)} "
                                  f"file(s) added, removed or changed: {shown})")
