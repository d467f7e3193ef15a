"""One writer per output on an object store: the lock protocol on moto's S3 server (the local
locks and the commands' refusals: tests/unit/test_locking.py)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from factory import locking
from factory.locking import LOCK_FILE, OutputLocked, hold_lock


def test_an_object_store_lock_refuses_a_second_writer(monkeypatch, tmp_path):
    """The check-write-wait-read-back protocol on moto's S3 server."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    monkeypatch.setattr(locking, "REMOTE_SETTLE_SECONDS", 0.1)
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1"),
                        ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none")),
                        ("AWS_CONFIG_FILE", str(tmp_path / "none")),
                        ("AWS_EC2_METADATA_DISABLED", "true")):
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="locks")
        folder = f"s3://locks/out?endpoint_override={endpoint}&scheme=http"
        with hold_lock(folder, "export"):
            body = client.get_object(Bucket="locks", Key=f"out/{LOCK_FILE}")["Body"].read()
            assert json.loads(body)["pid"] == os.getpid()
            with pytest.raises(OutputLocked, match=f"pid {os.getpid()} on host"):
                with hold_lock(folder, "export"):
                    pass
        keys = [item["Key"] for item in client.list_objects_v2(Bucket="locks")["Contents"]]
        assert keys == ["out/"]  # pyarrow keeps a folder marker where it deleted the last file
    finally:
        server.stop()
