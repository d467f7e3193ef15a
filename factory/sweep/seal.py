"""A sweep restores only Tune state it wrote itself: an HMAC seal checked before any unpickling.

Restoring a Tune experiment unpickles ``tuner.pkl`` and decodes pickles inside the experiment
state, and a trial's ``error.pkl`` is unpickled when results are read: code from whoever can
write the sweep's storage, which is meant to be a shared bucket. So when a sweep's ``fit``
ends (finished or interrupted), the driver seals the state: the sha256 of every file Tune reads
back (the experiment folder's own files, and every ``.pkl`` below it) goes into a seal file,
with an HMAC over them under a key that never leaves the user's machine. A rerun restores only
when the files are exactly the sealed ones and the HMAC is this key's; anything else (a
changed or added file, no seal, another key) is refused before Tune reads a byte.

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


def sealed_files(tune_path: str, own_files: Sequence[str]) -> dict[str, str]:
    """sha256 of every file of the experiment folder Tune reads back, by relative path: the
    folder's own files, but ``own_files`` (the sweep's, read only as JSON or never) and the
    seal, and every ``.pkl`` below it."""
    digests = {}
    skipped = {*own_files, SEAL_FILE}
    for relative in storage.list_files(tune_path):
        top_level = "/" not in relative
        if (top_level and relative not in skipped) or relative.endswith(".pkl"):
            digests[relative] = storage.file_sha256(storage.join(tune_path, *relative.split("/")))
    return digests


def _tag(key: bytes, digests: dict[str, str]) -> str:
    message = json.dumps(sorted(digests.items()), separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal(tune_path: str, own_files: Sequence[str]) -> None:
    """Record the experiment's current state as written by this user (see the module doc)."""
    digests = sealed_files(tune_path, own_files)
    document = {"files": digests, "hmac": _tag(sweep_key(), digests)}
    storage.write_text(storage.join(tune_path, SEAL_FILE), json.dumps(document, indent=2))


def check_seal(tune_path: str, own_files: Sequence[str]) -> None:
    """UserError, before anything is unpickled, unless the experiment's files are exactly the
    ones this user's key sealed."""
    fresh = (f"it is not restored, since restoring runs the pickles in it; to start the sweep "
             f"afresh, remove {tune_path} or choose another sweep.name")
    seal_uri = storage.join(tune_path, SEAL_FILE)
    if not storage.exists(seal_uri):
        raise UserError(f"{tune_path}: Tune state without the sweep's seal ({SEAL_FILE}); {fresh}")
    document = storage.read_json_object(seal_uri)
    recorded = document.get("files")
    tag = document.get("hmac")
    if not isinstance(recorded, dict) or not isinstance(tag, str) or \
            not hmac.compare_digest(_tag(sweep_key(), recorded), tag):
        raise UserError(f"{tune_path}: Tune state sealed by another key, or a forged seal; "
                        f"{fresh}")
    current = sealed_files(tune_path, own_files)
    changed = sorted(name for name in recorded.keys() | current.keys()
                     if recorded.get(name) != current.get(name))
    if changed:
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        raise UserError(f"{tune_path}: Tune state changed since the sweep sealed it "
                        f"({len(changed)} file(s) added, removed or changed: {shown}); {fresh}")
