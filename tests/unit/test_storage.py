"""URI storage: atomic writes, clear errors for unwritable locations, a deadline on remote calls."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from factory import storage
from factory.errors import FormatError, UserError
from helpers import REPO


@contextlib.contextmanager
def silent_endpoint() -> Iterator[tuple[str, threading.Event]]:
    """``host:port`` of a local TCP server that accepts connections and never answers (a
    metadata or storage endpoint behind a broken proxy), and an event set once a client has
    connected. Leaving the block closes every connection, which releases a client still
    waiting on one."""
    server = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the server closed
            while True:
                held.append(server.accept()[0])
                connected.set()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", connected
    finally:
        server.close()
        for connection in held:
            connection.close()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = str(tmp_path / "sub" / "file.bin")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(target) as stream:
            stream.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert not os.path.exists(target)
    assert os.listdir(tmp_path / "sub") == []


def test_atomic_output_keeps_old_file_until_complete(tmp_path):
    target = str(tmp_path / "file.txt")
    storage.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(target) as stream:
            stream.write(b"new")
            raise RuntimeError
    assert open(target).read() == "old"


def test_ensure_writable_names_the_location(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as info:
        storage.ensure_writable(str(blocker / "out"))
    assert str(blocker / "out") in str(info.value)


def test_file_uri_and_plain_path_agree(tmp_path):
    storage.write_text(str(tmp_path / "x.txt"), "hello")
    assert storage.read_text(f"file://{tmp_path}/x.txt") == "hello"
    assert storage.listdir(f"file://{tmp_path}") == ["x.txt"]


def test_join_keeps_a_query_last():
    assert storage.join("s3://bucket/data?region=eu-west-1", "shards", "a.tar") == \
        "s3://bucket/data/shards/a.tar?region=eu-west-1"
    assert storage.join("s3://bucket/data", "a") == "s3://bucket/data/a"


def test_gcs_uris_get_a_retry_bound_unless_they_set_one():
    limit = storage.GCS_RETRY_SECONDS
    assert storage._bounded("gs://b/x") == f"gs://b/x?retry_limit_seconds={limit}"
    assert storage._bounded("gs://b/x?scheme=http") == \
        f"gs://b/x?scheme=http&retry_limit_seconds={limit}"
    assert storage._bounded("gs://b/x?retry_limit_seconds=5") == "gs://b/x?retry_limit_seconds=5"
    assert storage._bounded("/local/x") == "/local/x"


@pytest.mark.parametrize("value, seconds", [
    (None, storage.REMOTE_DEADLINE_SECONDS), ("2.5", 2.5), ("0", None), ("-1", None),
    ("inf", None), ("nan", None), ("soon", None),
])
def test_the_remote_deadline_is_a_positive_number_of_seconds(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv(storage.DEADLINE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(storage.DEADLINE_VARIABLE, value)
    if seconds is None:
        with pytest.raises(UserError, match=storage.DEADLINE_VARIABLE):
            storage.remote_deadline()
    else:
        assert storage.remote_deadline() == seconds


def test_ctrl_c_stops_a_remote_call_that_gets_no_answer():
    """A thread blocked in the GCS client's token request does not see Ctrl-C; the factory waits
    on it from another thread, so SIGINT ends the call at once, long before the deadline."""
    with silent_endpoint() as (address, connected):
        env = dict(os.environ, GCE_METADATA_ROOT=address, PYTHONPATH=str(REPO),
                   **{storage.DEADLINE_VARIABLE: "300"})
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        process = subprocess.Popen(
            [sys.executable, "-c",
             "from factory import storage; storage.exists('gs://no-such-bucket/x')"],
            env=env, stderr=subprocess.PIPE, text=True,
            # a test runner's worker may ignore SIGINT, and an ignored signal stays ignored in
            # its children: give the child the default a terminal's Ctrl-C meets
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
        reader.start()
        try:
            assert connected.wait(180), "the GCS client never asked the metadata server"
            time.sleep(0.5)
            interrupted = time.monotonic()
            process.send_signal(signal.SIGINT)
            # the call must stop waiting at once; the interpreter's exit afterwards may wait for
            # pyarrow's abandoned request (its own retry bound), which is not the factory's wait
            while time.monotonic() - interrupted < 30 and not any(
                    line.startswith("KeyboardInterrupt") for line in lines):
                time.sleep(0.1)
            elapsed = time.monotonic() - interrupted
        finally:
            process.kill()
            process.wait()
    err = "".join(lines)
    assert "KeyboardInterrupt" in err and elapsed < 10, (elapsed, err[-2000:])


def test_s3_uris_open_files_for_writing_only_when_they_are_sent():
    assert storage._bounded("s3://b/x") == "s3://b/x?allow_delayed_open=true"
    assert storage._bounded("s3://b/x?region=eu-west-1") == \
        "s3://b/x?region=eu-west-1&allow_delayed_open=true"
    assert storage._bounded("s3://b/x?allow_delayed_open=false") == \
        "s3://b/x?allow_delayed_open=false"


@pytest.mark.parametrize("content, match", [
    (b"\xff\xfe\x00junk", "not valid JSON"), (b'{"a": ', "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"), (b"[1, 2]", "expected a JSON object, found list"),
])
def test_read_json_object_names_the_file(tmp_path, content, match):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=match) as info:
        storage.read_json_object(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
