"""The deployment files are valid before anyone pays for a cloud: no network, no cluster.

``ray up`` has no dry run, so the autoscaler YAML is checked against the schema that ships
inside the installed Ray (the one ``ray up`` validates with) and through Ray's own offline
config preparation; a deliberately broken copy must fail, so the check can fail. The KubeRay
manifests are checked for the fields the operator needs and for paths that exist in this tree.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from helpers import REPO as REPO_ROOT
CLUSTER_DIR = REPO_ROOT / "cluster"
KUBERAY_DIR = CLUSTER_DIR / "kuberay"
AUTOSCALER_FILES = sorted(CLUSTER_DIR.glob("*.yaml"))
SCHEMA_PATH = Path(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
# The production configs are another task's deliverable; the RayJob names this one already.


def _load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def aws() -> dict:
    return _load(CLUSTER_DIR / "aws.yaml")


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _load(KUBERAY_DIR / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load(KUBERAY_DIR / "rayjob.yaml")


# --- Ray autoscaler YAML (cluster/*.yaml) -------------------------------------------------


def test_autoscaler_files_present():
    assert CLUSTER_DIR / "aws.yaml" in AUTOSCALER_FILES


@pytest.mark.parametrize("path", AUTOSCALER_FILES, ids=lambda p: p.name)
def test_autoscaler_yaml_matches_ray_schema(path: Path, schema: dict):
    jsonschema.validate(_load(path), schema)


@pytest.mark.parametrize("path", AUTOSCALER_FILES, ids=lambda p: p.name)
def test_autoscaler_yaml_passes_rays_offline_checks(path: Path, monkeypatch):
    """What ``ray up`` does before it first calls the cloud: merge the provider's defaults,
    check the docker section (image and container_name together), then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    monkeypatch.chdir(REPO_ROOT)  # file_mounts name "." : the checkout `ray up` runs from
    validate_config(prepare_config(_load(path)))


@pytest.mark.parametrize("path", AUTOSCALER_FILES, ids=lambda p: p.name)
def test_autoscaler_yaml_shape(path: Path):
    """The shape the design asks for: a CPU head, GPU workers scaling from zero, the GPU image
    of the installed Ray with a container name, MLflow server on the head, the project
    installed from the synced checkout."""
    config = _load(path)
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 and t.get("min_workers", 0) == 0
               for t in workers)
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert config["docker"]["container_name"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in head_start and "--port 5000" in head_start
    assert "/home/ray/facefactory" in config["file_mounts"]
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


@pytest.mark.parametrize("path", AUTOSCALER_FILES, ids=lambda p: p.name)
def test_the_tracking_server_keeps_its_runs_in_postgresql(path: Path):
    """The head's MLflow server takes its PostgreSQL URI from the cloud's secret store into
    MLFLOW_BACKEND_STORE_URI (never onto a command line, never SQLite), in a command the shell
    parses, and the head installs the driver."""
    config = _load(path)
    command = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0
    assert 'export MLFLOW_BACKEND_STORE_URI="$(python -c "' in command
    compile(command.split('$(python -c "', 1)[1].split('")"', 1)[0], "secret", "exec")
    assert "mlflow-backend-store-uri" in command
    assert "--backend-store-uri" not in command and "sqlite" not in command
    assert 'pip install -q -e ".[postgres]"' in " ".join(config["head_setup_commands"])


def test_schema_rejects_unknown_top_level_key(aws: dict, schema: dict):
    broken = copy.deepcopy(aws)
    broken["gpu_workers"] = 4  # a plausible typo for max_workers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_schema_rejects_fractional_resource(aws: dict, schema: dict):
    broken = copy.deepcopy(aws)
    gpu_type = next(t for t in broken["available_node_types"].values()
                    if t["resources"].get("GPU"))
    gpu_type["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_ray_rejects_image_without_container_name(aws: dict, monkeypatch):
    from ray.autoscaler._private.util import prepare_config

    broken = copy.deepcopy(aws)
    del broken["docker"]["container_name"]
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(AssertionError, match="container"):
        prepare_config(broken)


# --- KubeRay manifests (cluster/kuberay/*.yaml) -------------------------------------------


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    head_containers = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert head_containers and all(c.get("name") and c.get("image") for c in head_containers)
    assert "rayStartParams" in spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"]
        assert isinstance(group["minReplicas"], int) and isinstance(group["maxReplicas"], int)
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
    gpu_groups = [g for g in groups if g["minReplicas"] == 0 and any(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
        for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "expected a GPU worker group (nvidia.com/gpu limit) scaling from 0"


def test_raycluster_manifest(raycluster: dict):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    assert raycluster["metadata"]["name"]
    _check_cluster_spec(raycluster["spec"])


def test_raycluster_runs_mlflow_on_head(raycluster: dict):
    containers = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert any(c.get("command", [])[:2] == ["mlflow", "server"] for c in containers)


def _secret_reference(container: dict, variable: str) -> tuple[str, str]:
    entry = next(e for e in container["env"] if e["name"] == variable)
    reference = entry["valueFrom"]["secretKeyRef"]
    return reference["name"], reference["key"]


def test_the_mlflow_sidecar_keeps_its_runs_in_the_postgresql_of_mlflow_postgres(
        raycluster: dict):
    """The sidecar's store is the Secret's URI (not SQLite on the pod), and
    mlflow-postgres.yaml runs a PostgreSQL behind a Service, with the password of that same
    Secret and its data on a claim that outlives the pod; the image carries the driver."""
    containers = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers if c.get("command", [])[:2] == ["mlflow", "server"])
    assert not any("backend-store-uri" in part or "sqlite" in part
                   for part in sidecar["command"])
    secret, key = _secret_reference(sidecar, "MLFLOW_BACKEND_STORE_URI")
    assert key == "backend-store-uri"  # the key mlflow-postgres.yaml's command creates

    with open(KUBERAY_DIR / "mlflow-postgres.yaml") as f:
        documents = {d["kind"]: d for d in yaml.safe_load_all(f)}
    service, database = documents["Service"], documents["StatefulSet"]
    pod = database["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]
    postgres = pod["spec"]["containers"][0]
    assert _secret_reference(postgres, "POSTGRES_PASSWORD") == (secret, "password")
    data = next(e["value"] for e in postgres["env"] if e["name"] == "PGDATA")
    mount = postgres["volumeMounts"][0]
    assert data.startswith(mount["mountPath"] + "/")
    assert mount["name"] in [t["metadata"]["name"]
                             for t in database["spec"]["volumeClaimTemplates"]]
    assert f"@{service['metadata']['name']}:5432/" in (KUBERAY_DIR / "mlflow-postgres.yaml"
                                                      ).read_text()  # the URI it documents
    assert '-e ".[postgres]"' in (CLUSTER_DIR / "Dockerfile").read_text()


def test_rayjob_manifest(rayjob: dict):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(rayjob["spec"]["rayClusterSpec"])


def test_rayjob_cluster_matches_raycluster(rayjob: dict, raycluster: dict):
    """One cluster definition in two files: they must not drift apart."""
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def _entrypoint(rayjob: dict) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def test_rayjob_entrypoint_names_existing_job(rayjob: dict):
    argv = _entrypoint(rayjob)
    assert argv[0] == "python"
    assert argv[1].startswith("jobs/") and (REPO_ROOT / argv[1]).is_file(), argv[1]
    assert "--config" in argv


def test_rayjob_entrypoint_config_exists_and_loads(rayjob: dict):
    from factory.config import load_config

    argv = _entrypoint(rayjob)
    config = REPO_ROOT / argv[argv.index("--config") + 1]
    assert config.is_file(), config
    load_config(str(config))  # the same strict schema the job will apply


def test_runtime_env_file_is_valid():
    """jobs/runtime_env.yaml is accepted by Ray and keeps the heavy folders out of uploads."""
    from ray.runtime_env import RuntimeEnv

    runtime_env = _load(REPO_ROOT / "jobs" / "runtime_env.yaml")
    RuntimeEnv(**runtime_env)
    assert runtime_env["working_dir"] == "."
    for pattern in ("runs/", ".venv/", "mlflow.db", "*.tar"):
        assert pattern in runtime_env["excludes"]
    assert "pip" not in runtime_env and "conda" not in runtime_env
