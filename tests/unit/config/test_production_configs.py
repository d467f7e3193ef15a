"""The production configs name real data and cannot fall back to the face world.

They set ``faceworld: null``: every stage that reads data or E_id then needs its key, and a key
left empty stops the command at once (exit 2, one line naming the key), before any storage or
Ray is touched, instead of silently training on a synthetic world under the bucket.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory import layout
from factory.cli import main
from factory.config import FactoryConfig, load_config
from factory.errors import ConfigError

from helpers import REPO as REPO_ROOT
PRODUCTION = sorted((REPO_ROOT / "configs").glob("production-*.yaml"))
DATA_KEYS = {
    "recognizer.data": ["train-recognizer", "pipeline"],
    "generator.data": ["train-generator", "generator-report"],
    "generator.identity_encoder": ["train-generator"],
    "generator.compliance.data": ["generator-report", "generator-progress"],
    "synthesis.inquiry.data": ["synthesize"],
    "evaluate.benchmarks": ["train-recognizer", "evaluate", "baseline", "pipeline"],
}
"""Each data key (E_id among them) and the commands that read it."""
STOP_SECONDS = 5.0


def test_there_are_three_production_configs():
    assert [p.name for p in PRODUCTION] == ["production-0.5m.yaml", "production-1.2m.yaml",
                                            "production-1m.yaml"]


TRACKING_EXAMPLE = "  # mlflow_tracking_uri: http://mlflow.internal:5000\n"


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
def test_the_tracking_server_key_they_name_is_one_to_uncomment(path, tmp_path):
    """Each names runtime.mlflow_tracking_uri for the PostgreSQL-backed tracking server (the
    cluster files export MLFLOW_TRACKING_URI instead); uncommented, it is that config's store."""
    text = path.read_text()
    assert text.count(TRACKING_EXAMPLE) == 1
    assert text.index("\nruntime:\n") < text.index(TRACKING_EXAMPLE) < text.index("\nfaceworld:")
    edited = tmp_path / path.name
    edited.write_text(text.replace(TRACKING_EXAMPLE, TRACKING_EXAMPLE.replace("# ", "", 1)))
    config = load_config(str(edited))
    assert config.runtime.mlflow_tracking_uri == "http://mlflow.internal:5000"


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
def test_production_configs_name_every_input_as_user_supplied(path):
    config = load_config(str(path))
    assert config.faceworld is None
    inputs = [layout.recognizer_data_uri(config), layout.generator_data_uri(config),
              layout.identity_encoder_uri(config), layout.inquiry_data_uri(config),
              layout.synthesis_inquiry_uri(config), *layout.evaluation_benchmark_uris(config)]
    assert all(uri.startswith("s3://YOUR-BUCKET/") for uri in inputs)
    text = path.read_text()
    for key in ("recognizer:\n  # The real-data", "  identity_encoder: s3://YOUR-BUCKET"):
        assert key in text
    assert text.count("# USER-SUPPLIED") >= 7


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
@pytest.mark.parametrize("key, command", [(key, command) for key, commands in DATA_KEYS.items()
                                          for command in commands])
def test_an_unset_data_key_stops_the_command_naming_it(path, key, command, capsys):
    empty = "[]" if key == "evaluate.benchmarks" else ""
    # generator-progress takes an optional folder first, which would swallow the override
    folder = ["s3://YOUR-BUCKET/runs/generator"] if command == "generator-progress" else []
    start = time.monotonic()
    code = main([command, "--config", str(path), *folder, f"{key}={empty}"])
    elapsed = time.monotonic() - start
    error = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < STOP_SECONDS
    assert error.startswith(f"factory {command}: error: {key}: required") and "\n" not in error
    assert "faceworld: null" in error


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
def test_the_pipeline_stops_in_under_five_seconds_from_a_fresh_process(path):
    """Counted in the process's CPU time (interpreter start and imports included): on an idle
    machine that is its wall time (about 1 s here), and unlike wall time it does not grow with
    the load of whatever else shares the machine."""
    cpu_before = _children_cpu_seconds()
    result = subprocess.run([sys.executable, "-m", "factory.cli", "pipeline", "--config",
                             str(path), "recognizer.data="], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    cpu = _children_cpu_seconds() - cpu_before
    assert result.returncode == 2 and cpu < STOP_SECONDS, (cpu, result.stderr)
    assert result.stderr.strip() == (
        "factory pipeline: error: recognizer.data: required, the URI of the recognizer's "
        "training set (this config has faceworld: null, so there is no face-world default)")


def test_without_a_face_world_its_own_command_is_refused(capsys):
    assert main(["faceworld", "--config", str(PRODUCTION[0])]) == 2
    assert "faceworld: null in this config" in capsys.readouterr().err


def test_a_config_with_a_face_world_still_defaults_to_it():
    config = FactoryConfig(workdir="/w")
    assert layout.recognizer_data_uri(config) == "/w/faceworld/train"
    assert layout.identity_encoder_uri(config) == "/w/recognizer/recognizer/final"
    assert layout.evaluation_benchmark_uris(config)[0] == "/w/faceworld/benchmarks/fw_frontal.bin"
    config.faceworld = None
    with pytest.raises(ConfigError, match="^generator.identity_encoder: required"):
        layout.identity_encoder_uri(config)


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: p.stem)
def test_a_production_config_run_as_shipped_names_its_placeholders(path, capsys):
    start = time.monotonic()
    code = main(["train-recognizer", "--config", str(path)])
    elapsed = time.monotonic() - start
    error = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < STOP_SECONDS and "\n" not in error
    assert error.startswith("factory train-recognizer: error: workdir, ")
    assert "recognizer.data" in error and "still the shipped placeholder YOUR-BUCKET" in error
