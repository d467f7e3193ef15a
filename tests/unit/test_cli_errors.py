"""Bad input gets one line naming the problem, exit code 2, and no traceback."""

import os
import subprocess
import sys

import numpy as np

from factory.formats.images import encode_jpeg
from factory.formats.recordio import write_insightface_rec
from helpers import REPO, assert_one_line_error, run_main


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, err = run_main(capsys, "faceworld", "--out", str(blocker / "world"))
    assert_one_line_error(code, err, str(blocker / "world"))


def test_misspelled_config_key(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("faceworld:\n  identites: 10\n")
    code, err = run_main(capsys, "faceworld", "--config", str(config))
    assert_one_line_error(code, err, str(config), "faceworld.identites")


def test_sweep_space_key_outside_the_recognizer(capsys):
    code, err = run_main(capsys, "sweep", "sweep.space={faceworld.seed: {grid: [1, 2]}}")
    assert_one_line_error(code, err, "space key 'faceworld.seed'", "recognizer")


def test_sweep_space_misspelled_key_fails_before_any_work(capsys, tmp_path):
    code, err = run_main(capsys, "sweep", f"workdir={tmp_path}",
                         "sweep.space={recognizer.optimiser.lr: {grid: [0.1]}}")
    assert_one_line_error(code, err, "sweep.space", "recognizer.optimiser")
    assert not (tmp_path / "sweeps").exists()


def test_sweep_space_value_of_the_wrong_type(capsys, tmp_path):
    code, err = run_main(capsys, "sweep", f"workdir={tmp_path}",
                         "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0], high]}}")
    assert_one_line_error(code, err, "sweep.space", "recognizer.select.m")


def test_compare_without_the_store_or_the_experiment(capsys, tmp_path):
    import mlflow

    store = f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    code, err = run_main(capsys, "compare", "--experiment", "nowhere", store)
    assert_one_line_error(code, err, f"{tmp_path}/mlflow.db", "no MLflow database")
    assert not (tmp_path / "mlflow.db").exists()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.create_experiment("elsewhere")
    capsys.readouterr()
    code, err = run_main(capsys, "compare", "--experiment", "nowhere", store)
    assert_one_line_error(code, err, "'nowhere'", "not found")


def test_wrong_type(capsys):
    code, err = run_main(capsys, "faceworld", "faceworld.image_size=large")
    assert_one_line_error(code, err, "faceworld.image_size", "integer")


def test_truncated_rec(capsys, tmp_path):
    data = tmp_path / "data"
    image = encode_jpeg(np.full((16, 16, 3), 128, np.uint8))
    write_insightface_rec(str(data), [(0, image), (0, image), (1, image), (1, image)],
                          num_images=4, num_classes=2, image_size=(16, 16))
    rec = data / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-40])
    code, err = run_main(capsys, "train-recognizer", f"recognizer.data={data}",
                         f"workdir={tmp_path / 'run'}")
    assert_one_line_error(code, err, "train.rec")


def test_bin_that_is_not_a_pickle(capsys, tmp_path):
    world = tmp_path / "world"
    (world / "benchmarks").mkdir(parents=True)
    (world / "benchmarks" / "only.bin").write_bytes(b"\x89PNG not a pickle at all")
    code, err = run_main(capsys, "baseline", f"faceworld.out={world}",
                         "faceworld.benchmarks=[{name: only}]")
    assert_one_line_error(code, err, "only.bin")


def test_console_script_exits_2_without_traceback(tmp_path):
    """The installed entry point, as a user runs it, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "factory.cli", "faceworld", "faceworld.bogus=1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown key 'faceworld.bogus'" in result.stderr


def test_python_dash_m_factory_is_the_factory_command(tmp_path):
    """``python -m factory`` parses, runs and exits as the ``factory`` entry point does."""
    result = subprocess.run([sys.executable, "-m", "factory", "verify", str(tmp_path / "none")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("factory verify: error: ") and "manifest.json" in result.stderr


def test_a_full_disk_is_one_line_naming_the_path_and_the_free_space(capsys, tmp_path,
                                                                    monkeypatch):
    """ENOSPC anywhere in a command (here while the face world writes its training set) is the
    user's to fix: one line with the file and the space left, exit 2, no traceback; inside a
    Ray Train worker it is turned into the same error."""
    import errno

    from factory.faceworld import build
    from factory.train.workers import user_error_in

    target = tmp_path / "faceworld" / "train" / "train.rec"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(build, "write_insightface_rec", full)
    code, err = run_main(capsys, "faceworld", f"workdir={tmp_path}",
                         "faceworld.identities=2", "faceworld.images_per_identity=2")
    assert_one_line_error(code, err, str(target), "no space left on device", "MiB free",
                          "rerun")
    converted = user_error_in(OSError(errno.ENOSPC, "No space left on device", str(target)))
    assert converted is not None and str(target) in str(converted)
    assert user_error_in(OSError(errno.EACCES, "Permission denied", str(target))) is None
