"""One writer per output: a lock file in each output folder while a command writes it.

Two ``factory synthesize`` runs with different plans on one fresh ``synthesis.out`` both
succeeded, and the last one's dataset silently replaced the other's (each read ``plan.json``
before the minutes of inquiry embedding and wrote it after); two ``factory export`` runs into
one new ``--out`` mixed one selection's files with the other's ``export.json``. So every
command that writes an output folder (synthesis, export, a recognizer or generator run, a
sweep) first takes :func:`hold_lock` on it, before it reads anything there, and a second
writer is refused at once with a :class:`OutputLocked` naming the first: one line, exit code 2,
nothing written. Nothing ever waits for a lock, so no command can deadlock on one.

The lock is the file :data:`LOCK_FILE` directly in the output folder, beside ``shards/``,
``export.json`` or a run's checkpoints, a dot-file that no reader takes for data (verify lists
``shards/`` only, the image-folder reader skips files at the top and dot-files, a generator
run's checkpoint listing skips entries without a checkpoint record, and a sweep lists it among
its own files, which its seal does not cover). It holds a JSON record of its owner: ``host``,
``pid``, ``started`` (UTC, ISO 8601), the ``command``, a random ``token`` (a release deletes
the file only while it is still its own), and, where Linux tells them, the ``boot`` id, the
``pid_namespace`` and the process's ``process_start`` (clock ticks after boot), so that a
reused pid is not mistaken for the owner. It is removed when the command ends, on an error or
Ctrl-C too; a folder the lock created for a command that then wrote nothing is removed with it.

Creating it is atomic where the storage allows:

- local paths (and ``file://``): ``os.open`` with ``O_CREAT | O_EXCL``, which exactly one
  process wins, also on NFS v3 and later; a stale lock is deleted under ``flock()`` and only
  while the path still names the file judged stale, so that of processes taking it over at
  once exactly one gets the lock;
- object stores (``s3://``, ``gs://``, ``hdfs://``, through pyarrow.fs): pyarrow offers no
  create-if-absent, so the lock is a check, a write, a wait of :data:`REMOTE_SETTLE_SECONDS`,
  and a read back that must find this writer's token (the stores are read-after-write
  consistent). Two writers that race are told apart, unless one took longer than that wait
  between finding no lock and its own lock landing: a guard against the mistake, not a
  guarantee.

A stale lock (the decision): a lock whose owner ran on this machine and no longer runs (its pid
is gone or is now another process, or the machine has rebooted since) is taken over, with one
line on stderr saying whose it was. Every command here resumes what an interrupted run left,
so a rerun after a crash, a ``kill -9`` or the OOM killer is the normal way on; on the same
machine a dead owner proves nobody writes any more, and making the user delete the file would
add a step to every recovery and teach the habit of deleting lock files unread, the very thing
that defeats the lock. A lock from another host, or another pid namespace of this one (a
container), cannot be judged from here: it is refused like a live one, and the line names the
file to remove once the user knows that process has ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

from factory import storage
from factory.errors import UserError

LOCK_FILE = ".facefactory.lock"
REMOTE_SETTLE_SECONDS = 2.0
"""How long an object-store lock waits after writing before it reads back who holds it."""
UNREADABLE_SECONDS = 1.0
"""How long a lock that does not parse is read again: its owner may be writing it."""


class OutputLocked(UserError):
    """The output folder is being written by another command (or its lock cannot be read)."""


@dataclass(frozen=True)
class LockOwner:
    """What a lock file records of the process holding it."""

    host: str
    pid: int
    started: str
    command: str
    token: str
    boot: str | None = None
    pid_namespace: str | None = None
    process_start: int | None = None

    def describe(self) -> str:
        return f"factory {self.command}, pid {self.pid} on host {self.host} since {self.started}"


@contextlib.contextmanager
def hold_lock(folder: str, command: str) -> Iterator[None]:
    """Hold the lock of the output ``folder`` (any URI) for ``command`` (``"synthesize"``) while
    the ``with`` block runs; :class:`OutputLocked` naming the owner when another command holds
    it. Creates the folder when it is missing (see the module doc for the rest)."""
    uri = storage.join(folder, LOCK_FILE)
    created = [] if storage.is_remote(folder) else _missing_folders(storage.local_path(folder))
    if created:
        storage.makedirs(folder)
    me = _this_process(command)
    try:
        acquire = _acquire_remote if storage.is_remote(folder) else _acquire_local
        stale = acquire(folder, uri, me)
        if stale is not None:
            print(f"{folder}: took over the stale lock of {stale.describe()}: that process is "
                  "no longer running", file=sys.stderr)
        try:
            yield
        finally:
            _release(folder, uri, me.token)
    finally:
        for path in created:  # deepest first; a folder that holds anything stays
            try:
                os.rmdir(path)
            except OSError:
                break


def _missing_folders(path: str) -> list[str]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _acquire_local(folder: str, uri: str, me: LockOwner) -> LockOwner | None:
    """Create the lock file with O_EXCL, after deleting a stale one (:func:`_delete_stale`);
    the owner of the stale lock it took over, if any."""
    path = storage.local_path(uri)
    stale = None
    while True:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(folder, uri)
            if owner is not None:  # None: released meanwhile, so try again
                _refuse_unless_stale(folder, uri, owner)
                _delete_stale(uri, owner)
                stale = owner
            continue
        except FileNotFoundError:  # the folder's creator removed it, empty, as it ended
            storage.makedirs(folder)
            continue
        except OSError as exc:
            raise UserError(f"{folder}: cannot create the lock file {LOCK_FILE} "
                            f"({exc.strerror})") from None
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(_record(me))
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException:
            os.unlink(path)  # never leave a lock without its owner's record
            raise
        return stale


def _delete_stale(uri: str, stale: LockOwner) -> None:
    """Delete the lock file at ``uri`` if it still is the lock of ``stale``.

    It is checked and deleted under flock(), so that of processes taking one stale lock over
    at once only one deletes it, and none deletes a lock created after it (that file is
    another inode: checking that the path still names the inode read makes the difference).
    """
    path = storage.local_path(uri)
    # NFS grants an exclusive flock to writers only; another user's lock is read-only here
    mode = os.O_RDWR if os.access(path, os.W_OK) else os.O_RDONLY
    try:
        descriptor = os.open(path, mode)
    except FileNotFoundError:
        return  # another process deleted it first
    with os.fdopen(descriptor, "rb") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.01)  # another process is deleting it
            return
        except OSError as exc:
            raise OutputLocked(f"{uri}: the stale lock of {stale.describe()}, which cannot be "
                               f"taken over here ({exc.strerror}); that process is no longer "
                               f"running: remove {uri} and run again") from None
        with contextlib.suppress(FileNotFoundError):
            if _parse(stream.read()) == stale and \
                    os.path.samestat(os.fstat(descriptor), os.stat(path)):
                os.unlink(path)


def _acquire_remote(folder: str, uri: str, me: LockOwner) -> LockOwner | None:
    """Check, write, wait, read back (see the module doc for what this guarantees); the owner
    of the stale lock it took over, if any."""
    filesystem, path = storage.resolve(uri)
    while True:
        stale = _read_owner(folder, uri)
        if stale is not None:
            _refuse_unless_stale(folder, uri, stale)
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                filesystem.delete_file(path)
        try:
            with filesystem.open_output_stream(path) as stream:
                stream.write(_record(me))
        except storage.FILESYSTEM_ERRORS as exc:
            raise UserError(f"{folder}: cannot create the lock file {LOCK_FILE} ({exc})") from None
        try:
            time.sleep(REMOTE_SETTLE_SECONDS)
            owner = _read_owner(folder, uri)
        except BaseException:  # Ctrl-C while it waits: its lock goes, as on any other exit
            _release(folder, uri, me.token)
            raise
        if owner is not None and owner.token == me.token:
            return stale
        if owner is not None:
            raise OutputLocked(_in_use(folder, uri, owner))


def _release(folder: str, uri: str, token: str) -> None:
    """Remove the lock at ``uri`` if it is still the one with ``token``. A failure is one line
    on stderr, never an exception that would hide the command's own error."""
    try:
        if getattr(_read_owner(folder, uri), "token", None) == token:
            storage.delete(uri)
    except UserError as exc:
        print(f"{folder}: could not remove its lock ({exc})", file=sys.stderr)


def _refuse_unless_stale(folder: str, uri: str, owner: LockOwner) -> None:
    """:class:`OutputLocked` unless ``owner`` ran on this machine and no longer runs."""
    if not _stale(owner):
        raise OutputLocked(_in_use(folder, uri, owner))


def _in_use(folder: str, uri: str, owner: LockOwner) -> str:
    """The refusal naming ``owner``; where this host cannot check it, with what to do."""
    host, _, namespace = _this_machine()
    if (owner.host, owner.pid_namespace) == (host, namespace):
        return (f"{folder}: being written by {owner.describe()}; wait until it ends, or write "
                "elsewhere")
    return (f"{folder}: being written by {owner.describe()}, which cannot be checked from "
            f"this host; if that process has ended, remove {uri} and run again")


def _stale(owner: LockOwner) -> bool:
    """Whether ``owner`` ran on this machine and is gone (see the module doc)."""
    host, boot, namespace = _this_machine()
    if owner.host != host:
        return False
    if owner.boot and boot and owner.boot != boot:
        return True  # rebooted since: no process of before runs
    if owner.pid_namespace != namespace:
        return False
    return not _running(owner.pid, owner.process_start)


def _running(pid: int, process_start: int | None) -> bool:
    """Whether the process ``pid`` of this machine runs and, where /proc shows it, is the one
    that started at ``process_start`` (not a zombie, nor a later process given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc here, or hidden from this user: it exists, that is all we know
    state, start = stat
    return state != "Z" and process_start in (None, start)


def _proc_stat(pid: int | str) -> tuple[str, int] | None:
    """The state letter and start time (clock ticks after boot) of a process, from
    /proc/<pid>/stat; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            parts = stream.read().rsplit(")", 1)[1].split()  # the name may hold ")" and spaces
    except (OSError, IndexError):
        return None
    return parts[0], int(parts[19])


def _this_machine() -> tuple[str, str | None, str | None]:
    """This host's name, boot id and pid namespace (the last two on Linux only): where a
    pid means one process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as stream:
            boot: str | None = stream.read().strip()
    except OSError:
        boot = None
    try:
        namespace: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return socket.gethostname(), boot, namespace


def _this_process(command: str) -> LockOwner:
    """The owner record of this process, for ``command``, from now."""
    host, boot, namespace = _this_machine()
    stat = _proc_stat("self")
    return LockOwner(host=host, pid=os.getpid(),
                     started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     command=command, token=uuid.uuid4().hex, boot=boot,
                     pid_namespace=namespace, process_start=stat[1] if stat else None)


def _record(owner: LockOwner) -> bytes:
    return json.dumps(asdict(owner), indent=1).encode()


def _parse(data: bytes) -> LockOwner | None:
    """The owner a lock file's bytes record; None unless they are a complete record (fields
    this version does not know are ignored)."""
    try:
        document = json.loads(data)
        owner = LockOwner(**{field.name: document[field.name] for field in fields(LockOwner)
                             if field.name in document})
    except (ValueError, TypeError, RecursionError):  # not JSON, not an object, a field missing
        return None
    text = (owner.host, owner.started, owner.command, owner.token)
    numbers = (owner.pid, 1 if owner.process_start is None else owner.process_start)
    if not all(isinstance(value, str) for value in text) or \
            not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers) \
            or not 0 < owner.pid < 2**31:
        return None
    return owner


def _read_owner(folder: str, uri: str) -> LockOwner | None:
    """The owner the lock at ``uri`` records; None when there is no lock. A lock that does not
    parse is read again for :data:`UNREADABLE_SECONDS` (its owner may be writing it), then
    refused, naming the file."""
    filesystem, path = storage.resolve(uri)
    deadline = time.monotonic() + UNREADABLE_SECONDS
    while True:
        try:
            with filesystem.open_input_file(path) as stream:
                data = stream.read()
        except FileNotFoundError:
            return None
        except storage.FILESYSTEM_ERRORS as exc:
            raise UserError(f"{uri}: cannot read the lock file ({exc})") from None
        owner = _parse(data)
        if owner is not None:
            return owner
        if time.monotonic() > deadline:
            raise OutputLocked(f"{uri}: a lock file that is not a factory lock record; if no "
                               f"factory command is writing {folder}, remove it and run again")
        time.sleep(0.1)
