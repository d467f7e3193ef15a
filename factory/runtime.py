"""The one place that connects to Ray and MLflow.

Ray: an address from ``--address``, ``RAY_ADDRESS`` or the config joins an existing cluster
(``auto``: the head that ``ray start`` runs on this machine); otherwise a local cluster of this
process's own starts, sized to this machine (or ``runtime.num_cpus``), whatever else runs here.
Ray on its own would join the cluster named in its temp folder's ``ray_current_cluster`` file,
which ``ray start --head`` writes and a killed head leaves behind, and then refuse the local
cluster's size: so no address means ``address="local"``, never ``None``. Callers that
start actor pools must leave CPU for the tasks that feed them (fractional ``num_cpus`` per
actor): on a 2-CPU machine a pool that takes both CPUs starves its read tasks and hangs.

What a local cluster listens on (:func:`start_local_ray`, Ray 2.60, seen with ``ss -ltnp``):
every TCP server Ray starts is on 127.0.0.1, since nothing outside this machine has any
business with a cluster no other node joins. That is the GCS (gRPC, on the port chosen here), the raylet's node
manager and object manager (gRPC), each worker's and the driver's core worker (gRPC), the
dashboard agent (gRPC; its HTTP server on 52365, which a second cluster on the machine finds
taken and goes without; and the Prometheus metrics exporter), the runtime-env agent (HTTP) and
the dashboard (HTTP, 8265 or the next free port). Left to itself, Ray gives the node the
machine's outward address and listens on every interface (the gRPC servers, the metrics
exporter) or on that address (the agents' HTTP servers); with a loopback node address each of
them takes 127.0.0.1, so the node's address is made 127.0.0.1 here (:func:`_loopback_node`).
The object store and the raylet's own socket are Unix sockets in the session folder. Token
authentication stays on as Ray sets it, and its token file is made readable by its owner only.
A cluster that ``ray start`` runs is configured by its own flags, not here. One listener of a
training run is torch's, not Ray's: the rendezvous store of ``torch.distributed`` (a
``TCPStore``), which Ray Train's torch backend opens in the first training worker and which
listens on every interface, since torch has no setting that binds it to one address.

MLflow: ``MLFLOW_TRACKING_URI`` or ``runtime.mlflow_tracking_uri``, else a SQLite file in the
current directory, made absolute so Ray workers (whose working directory differs) share it; a
SQLite store's artifacts go to ``mlartifacts/`` beside it (:func:`factory.tracking.use_experiment`)
unless ``runtime.mlflow_artifact_location`` names another root (an ``s3://`` bucket).

Object storage: an S3-compatible endpoint (MinIO, Ceph, a test server) is ``AWS_ENDPOINT_URL``
or ``runtime.s3_endpoint``, the environment first; credentials and region come the AWS way
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, instance roles).
:func:`use_storage_endpoint` exports the endpoint to this process (pyarrow reads
``AWS_ENDPOINT_URL``, MLflow's boto3 ``MLFLOW_S3_ENDPOINT_URL``) and :func:`init_ray` hands it
and the region to every Ray worker; the secrets are never copied into Ray's job metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factory.config import RuntimeConfig
from factory.storage import DEADLINE_VARIABLE

DEFAULT_MLFLOW_DB = "mlflow.db"
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Where Ray warns that a new local cluster has token authentication on."""
RAY_DATA_LOGGER = "ray.data"
"""Ray Data's logger, with a file handler (the session's ray-data.log) and a console handler."""
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
"""Where Ray Data warns that its progress bars are off."""
LOCAL = "local"
"""Ray's address for "start a new local cluster", never one found on the machine."""
LOOPBACK = "127.0.0.1"
"""The one address a local cluster's servers listen on."""
RAY_TOKEN_FILE = Path("~/.ray/auth_token")
"""Where Ray keeps the token of clusters with token authentication (unless ``RAY_AUTH_TOKEN``
or ``RAY_AUTH_TOKEN_PATH`` says otherwise); ``~`` is expanded when used."""
PREEMPTION_WATCHER_VARIABLE = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train's switch for its preemption watcher: an actor per training run, a process of its
own, that polls the cluster for nodes being drained (spot instances about to go). A local
cluster's one node is never drained, so its workers are told to go without it."""
GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"
"""Where a starting Ray head takes its GCS port from (Ray's own variable)."""
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
FORWARDED_VARIABLES = (*ENDPOINT_VARIABLES, "AWS_DEFAULT_REGION", "AWS_REGION",
                       DEADLINE_VARIABLE)
"""What Ray workers get from this process beside the tracking URI: where the object store is
and how long to wait for it, not the credentials (those come from each node's own environment
or role)."""


def ray_address(runtime: RuntimeConfig, cli_address: str | None = None) -> str | None:
    """The cluster to join, by precedence ``--address`` > ``RAY_ADDRESS`` > config; or None."""
    return cli_address or os.environ.get("RAY_ADDRESS") or runtime.ray_address


def init_ray(runtime: RuntimeConfig, cli_address: str | None = None) -> None:
    """Connect to (or start) Ray once per process; a no-op when already connected."""
    import ray

    if ray.is_initialized():
        return
    from factory.errors import UserError

    use_storage_endpoint(runtime)
    address = ray_address(runtime, cli_address)
    env_vars = {"MLFLOW_TRACKING_URI": mlflow_tracking_uri(runtime)}
    env_vars.update({name: os.environ[name] for name in FORWARDED_VARIABLES
                     if os.environ.get(name)})
    common = dict(logging_level=logging.WARNING, log_to_driver=True,
                  runtime_env={"env_vars": env_vars})
    if address:
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:  # "auto" with no head, or nothing at the address
            raise UserError(f"Ray address {address}: {' '.join(str(exc).split())}") from None
    else:
        # A new local cluster gets Ray's token authentication by default, and Ray warns that it
        # did: a line the user has nothing to do about. The authentication stays on; the
        # warning stays out (a RAY_AUTH_MODE the user sets is Ray's to handle, as before).
        logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        start_local_ray(runtime.num_cpus or os.cpu_count() or 1, **common)
    hide_ray_internal_lines()


RAY_INTERNAL_LINES = (
    # Ray's core worker on Ray Train's and Ray Data's own actors (ray-project/ray#53727)
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in "
               r"the object store and max_restarts > 0"),
)
"""Worker output about Ray's internals that a user cannot act on."""
WORKER_LOG_HANDLER = "ray_print_logs"
"""The name under which ``ray.init(log_to_driver=True)`` prints workers' output here."""


def hide_ray_internal_lines() -> None:
    """Keep :data:`RAY_INTERNAL_LINES` off this console (they stay in the workers' log files).

    Wraps the handler Ray registers to print forwarded worker output; Ray has no public hook
    for this, so if its internals move the lines simply show again."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        handlers = list(dispatcher.handlers)
    except (ImportError, AttributeError):
        return
    for name, handle in handlers:
        if name != WORKER_LOG_HANDLER or getattr(handle, "hides_ray_internals", False):
            continue

        def filtered(data: dict[str, Any], handle=handle) -> None:
            lines = [line for line in data.get("lines", [])
                     if not any(pattern.search(line) for pattern in RAY_INTERNAL_LINES)]
            if lines:
                handle({**data, "lines": lines})

        filtered.hides_ray_internals = True  # type: ignore[attr-defined]
        dispatcher.remove_handler(name)
        dispatcher.add_handler(name, filtered)


def start_local_ray(num_cpus: int, **init_kwargs: Any) -> None:
    """Start this process's own cluster, on loopback only, with a private token file.

    The GCS port is chosen here so that its workers can be told it: Ray's state API, which Ray
    Train's placement-group cleaner calls from a worker with no address, would otherwise look
    for "the" cluster on the machine and, with another one running there, fail (``Found
    multiple active Ray instances``) or judge this run's controller dead and remove its
    workers' placement group. The node's address is loopback (:func:`_loopback_node`), so no
    other machine can reach its servers, and the token file is made owner-only
    (:func:`_private_token_file`) before and after Ray reads or creates it. Ray Train's
    preemption watcher is off (:data:`PREEMPTION_WATCHER_VARIABLE`) unless this process's
    environment sets it."""
    import ray

    port = _free_port()
    env_vars = init_kwargs.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env_vars["RAY_ADDRESS"] = f"{LOOPBACK}:{port}"
    env_vars.setdefault(PREEMPTION_WATCHER_VARIABLE,
                        os.environ.get(PREEMPTION_WATCHER_VARIABLE, "0"))
    _private_token_file()
    try:
        with environment_variable(GCS_PORT_VARIABLE, str(port)), _loopback_node():
            # The dashboard stays on: Ray Train's state API (its placement-group cleaner)
            # needs it.
            ray.init(address=LOCAL, num_cpus=num_cpus, include_dashboard=True,
                     dashboard_host=LOOPBACK, **init_kwargs)
    finally:
        _private_token_file()


@contextlib.contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` in this process's environment within the block, as it was
    after it (a Ray worker, or a driver, outlives the work that needed the value)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Within the block, a Ray node started here takes 127.0.0.1 as its address.

    Ray takes the node's address from ``services.get_node_ip_address()``, which is the
    machine's outward address unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off (its
    "single-machine Ray" switch, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once when Ray is
    imported, so set here on the module); an explicit ``_node_ip_address="127.0.0.1"`` does not
    help, since ``ray.init`` rewrites loopback to that same outward address. With a loopback
    address the GCS, raylet and worker gRPC servers, the agents and the metrics exporter listen
    on 127.0.0.1 (Ray 2.60, measured). Restored afterwards: with the switch off, a driver that
    joins a multi-node cluster would give it a loopback address."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _private_token_file() -> None:
    """Make Ray's default token file (``~/.ray/auth_token``) readable by its owner only.

    The token admits any process to a cluster that has token authentication on. Ray 2.60 writes
    the file with the process's umask (0644 as a rule) and has no option for its mode, so it is
    tightened here: before ``ray.init`` for a file an earlier run left, after it for one Ray has
    just written. A file the user names in ``RAY_AUTH_TOKEN_PATH`` is the user's own business."""
    with contextlib.suppress(FileNotFoundError):
        RAY_TOKEN_FILE.expanduser().chmod(0o600)


def _free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def use_storage_endpoint(runtime: RuntimeConfig) -> str | None:
    """Export the S3 endpoint for this process and the processes it starts; returns it.

    ``AWS_ENDPOINT_URL`` wins over ``runtime.s3_endpoint``; MLflow's boto3 client is pointed
    at the same endpoint unless ``MLFLOW_S3_ENDPOINT_URL`` is set already.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or runtime.s3_endpoint
    if endpoint:
        for name in ENDPOINT_VARIABLES:
            os.environ.setdefault(name, endpoint)
    return endpoint


def quiet_ray_data() -> None:
    """Turn off Ray Data's own progress output for the datasets this process runs.

    A stage that runs a dataset shows one progress bar of its own; Ray Data would add its
    execution plan at the start and, when stdout is not a terminal (a log file, ``tee``), a
    "Total Progress" block every 10 seconds. Both stay in the session's ``ray-data.log``.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # ...and would then warn, once, that its progress bars are off: nothing to act on.
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
    # Its INFO lines ("Dataset ... execution finished in N seconds") go to ray-data.log only:
    # the console handler (a StreamHandler) takes warnings and errors.
    for handler in logging.getLogger(RAY_DATA_LOGGER).handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)


def mlflow_tracking_uri(runtime: RuntimeConfig) -> str:
    """The tracking URI every process of a run must agree on."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or runtime.mlflow_tracking_uri
    if uri:
        return uri
    return f"sqlite:///{os.path.abspath(DEFAULT_MLFLOW_DB)}"


def setup_mlflow(runtime: RuntimeConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the tracking URI."""
    from factory.tracking import use_experiment

    uri = mlflow_tracking_uri(runtime)
    use_storage_endpoint(runtime)
    use_experiment(uri, runtime.experiment, runtime.mlflow_artifact_location)
    return uri
