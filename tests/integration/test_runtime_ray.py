"""A command that starts its own local Ray does so whatever other Ray runs on the machine.

Ray's ``ray.init()`` with no address joins the cluster named in ``ray_current_cluster`` under
its temp folder, which ``ray start --head`` writes and a killed head leaves behind; with
``num_cpus`` given it then refuses (``ValueError: When connecting to an existing cluster, ...``).
The factory starts a cluster of its own unless an address is given, and ``--address auto``
joins the machine's running head. Both cases are run as a user meets them, in a separate
process with Ray's temp folder (``RAY_TMPDIR``) private to the test, so no other Ray on the
machine is seen or touched; the head is stopped by signalling its own process group. A local
cluster also listens on loopback only and keeps Ray's token file readable by its owner only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import REPO
from .test_job_submit import RAY, VENV_BIN, _free_ports, _stop_head, _tail

START_TIMEOUT_S = 180

# Starts (or joins) Ray the way every stage does, then reports the cluster it is on, what its
# workers were told, and whether Ray's state API (Ray Train's placement-group cleaner calls it
# from a worker, with no address) finds that cluster from inside a worker.
PROBE = """
import json, os, sys
import ray
from factory.config import RuntimeConfig
from factory.runtime import init_ray

init_ray(RuntimeConfig(num_cpus=1), sys.argv[1] or None)

@ray.remote(num_cpus=0)
def inside():
    from ray.util.state import list_nodes
    return os.environ.get("RAY_ADDRESS"), len(list_nodes())

worker_address, nodes = ray.get(inside.remote())
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "worker_address": worker_address, "nodes": nodes}))
"""


@pytest.fixture
def ray_tmpdir(tmp_path):
    """A short private ``RAY_TMPDIR`` (Ray's socket paths must stay under 108 bytes) and the
    environment a user's shell would have with it."""
    root = Path(tempfile.mkdtemp(prefix="ffrt-"))
    env = dict(os.environ, RAY_TMPDIR=str(root), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(REPO), PATH=VENV_BIN + os.pathsep + os.environ["PATH"],
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    env.pop("RAY_ADDRESS", None)
    yield root, env
    subprocess.run(["rm", "-rf", str(root)], check=False)


# Starts a local cluster the way every stage does, runs one task (so a worker's own server is up
# too), waits until the GCS, the dashboard and the dashboard agent's metrics exporter listen,
# then reports every TCP socket that this process and the processes it started listen on (all
# of the cluster's: Ray's daemons are its children, the agents and workers theirs) and the mode
# of Ray's token file.
LISTENERS = """
import json, os, time
import psutil, ray
from factory.config import RuntimeConfig
from factory.runtime import init_ray

init_ray(RuntimeConfig(num_cpus=1))

@ray.remote(num_cpus=0)
def worker_pid():
    return os.getpid()

ray.get(worker_pid.remote())
expected = {int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]),
            int(ray._private.worker.get_dashboard_url().rsplit(":", 1)[1]),
            ray.nodes()[0]["MetricsExportPort"]}

def listening():
    found = []
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found += [[process.name(), c.laddr.ip, c.laddr.port]
                      for c in process.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:  # a worker that has just exited
            pass
    return found

deadline = time.monotonic() + 60
while not expected <= {port for _, _, port in listening()} and time.monotonic() < deadline:
    time.sleep(0.5)
token = os.path.expanduser("~/.ray/auth_token")
print(json.dumps({"expected": sorted(expected), "listening": listening(),
                  "token_mode": os.stat(token).st_mode & 0o777}))
ray.shutdown()
"""


def _probe(env: dict, address: str = "") -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, address], env=env, capture_output=True,
                            text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_a_stale_current_cluster_file_does_not_stop_a_local_start(ray_tmpdir):
    root, env = ray_tmpdir
    (dead_port,) = _free_ports(1)
    (root / "ray").mkdir()
    (root / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead_port}")

    seen = _probe(env)
    assert _port(seen["gcs"]) != dead_port
    assert _port(seen["worker_address"]) == _port(seen["gcs"]) and seen["nodes"] == 1


def test_a_running_head_is_left_alone_unless_asked_for(ray_tmpdir, tmp_path):
    if not os.access(RAY, os.X_OK):
        pytest.skip(f"no `ray` next to {sys.executable} (needs ray[default])")
    root, env = ray_tmpdir
    gcs, dashboard, client = _free_ports(3)
    log_path = tmp_path / "ray-start.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
             "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        current = root / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not current.exists():
            assert head.poll() is None, f"ray start exited:\n{_tail(log_path)}"
            assert time.monotonic() < deadline, f"no head after {START_TIMEOUT_S}s"
            time.sleep(0.5)

        own = _probe(env)  # no address: a cluster of its own beside the head
        assert _port(own["gcs"]) != gcs
        # a worker's state API finds its own cluster, not "multiple active Ray instances"
        assert _port(own["worker_address"]) == _port(own["gcs"]) and own["nodes"] == 1

        joined = _probe(env, "auto")  # --address auto: the head `ray start` runs
        assert _port(joined["gcs"]) == gcs
    finally:
        _stop_head(head)


def test_a_local_cluster_listens_on_loopback_only_and_keeps_its_token_private(ray_tmpdir,
                                                                              tmp_path):
    """Nothing of a local cluster is reachable from another machine, and its token (Ray writes
    ~/.ray/auth_token 0644) is readable by its owner only. HOME is private to the test, so
    the token file is one Ray creates for this run."""
    _, env = ray_tmpdir
    home = tmp_path / "home"
    home.mkdir()
    env = dict(env, HOME=str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):  # Ray's defaults
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", LISTENERS], env=env, capture_output=True,
                            text=True, timeout=START_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    listening = seen["listening"]
    assert set(seen["expected"]) <= {port for _, _, port in listening}, seen
    exposed = [entry for entry in listening if not _loopback(entry[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert seen["token_mode"] == 0o600, oct(seen["token_mode"])


def _loopback(ip: str) -> bool:
    """True for a loopback address, IPv4-mapped ones (an IPv6 socket bound to 127.0.0.1) too."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback
