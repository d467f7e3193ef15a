"""Ray Train recognizer training on a tiny face world: 1 and 2 workers, and resume.

These start a local Ray cluster with 2 CPUs (the machine CI runs on) and train for seconds.
"""

from __future__ import annotations

import json

import pytest
import torch

from factory import layout
from factory.config import FactoryConfig, load_config
from factory.checkpoints.recognizer import load_backbone, load_state
from factory.train.recognizer import train_recognizer

EPOCH_KEYS = {"epoch", "loss", "lr", "images_per_s", "global_step", "optimizer_digest",
              "tiny/acc", "tiny/tar_far_1e-3", "avg_acc", "val_tiny/acc", "val_avg_acc"}


def _config(world, tmp_path, **overrides) -> FactoryConfig:
    base = [
        f"workdir={world}",
        f"evaluate.benchmarks=[{world / 'faceworld' / 'benchmarks' / 'tiny.bin'}]",
        f"evaluate.validation_benchmarks=[{world / 'faceworld' / 'validation' / 'val_tiny.bin'}]",
        f"recognizer.storage={tmp_path / 'runs'}",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "recognizer.backbone.name=ir-tiny",
        "recognizer.backbone.input_size=32",
        "recognizer.backbone.embedding_size=16",
        "recognizer.optimizer.batch_size=8",
        "recognizer.optimizer.lr=0.05",
        "recognizer.optimizer.warmup_epochs=0",
        "recognizer.workers.cpus_per_worker=0.5",
        "recognizer.max_failures=0",
    ]
    return load_config(None, base + [f"{k}={v}" for k, v in overrides.items()])


def check_one_epoch_run(run, tmp_path, epoch_lines_before: int) -> None:
    """What every finished one-epoch run gives, whatever its worker count: the epoch's metrics,
    the saved final metrics, a loadable backbone, and a console with rank 0's epoch line once
    and none of Ray Train's per-report lines."""
    assert EPOCH_KEYS <= set(run.metrics)
    assert 0.0 <= run.metrics["tiny/acc"] <= 100.0
    saved = json.loads((tmp_path / "runs" / "recognizer" / "final" / "metrics.json").read_text())
    assert saved["epoch"] == 0
    backbone = load_backbone(run.checkpoint)
    assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    assert not worker_log_lines("Reporting training result")  # Ray Train's per-report INFO line
    # rank 0's epoch line reaches the console once (Ray Train's print patch would show it twice)
    assert len(worker_log_lines("epoch 0: loss")) - epoch_lines_before == 1


def test_two_workers_report_the_metrics_one_does(ray_two_cpus, world, tmp_path):
    """One worker's run is checked the same way by the rerun test below. On a local cluster
    Ray Train starts no preemption watcher (a process per run, for nodes that one machine
    never drains)."""
    import ray
    from ray.util.state import list_actors

    config = _config(world, tmp_path, **{"recognizer.workers.num_workers": 2,
                                         "recognizer.optimizer.epochs": 1})
    epoch_lines_before = len(worker_log_lines("epoch 0: loss"))
    check_one_epoch_run(train_recognizer(config), tmp_path, epoch_lines_before)
    cluster = ray.get_runtime_context().gcs_address  # not another cluster on this machine
    assert list_actors(cluster, filters=[("class_name", "=", "TrainController")])
    assert not list_actors(cluster, filters=[("class_name", "=", "PreemptionWatcher")])


def worker_log_lines(text: str) -> list[str]:
    """Lines containing ``text`` in the Ray session's worker logs (what log_to_driver would
    have shown on the console)."""
    import glob
    import os

    import ray

    logs = ray._private.worker._global_node.get_logs_dir_path()
    return [line for path in glob.glob(os.path.join(logs, "worker-*")) for line in
            open(path, errors="replace") if text in line]


def test_a_rerun_resumes_at_the_next_epoch_with_the_optimizer_state(
    ray_two_cpus, world, tmp_path
):
    epoch_lines_before = len(worker_log_lines("epoch 0: loss"))
    first = train_recognizer(_config(world, tmp_path, **{"recognizer.workers.num_workers": 1,
                                                         "recognizer.optimizer.epochs": 1}))
    check_one_epoch_run(first, tmp_path, epoch_lines_before)  # what one worker gives
    assert first.metrics["epoch"] == 0 and first.metrics["start_epoch"] == 0
    second = train_recognizer(_config(world, tmp_path, **{"recognizer.workers.num_workers": 1,
                                                          "recognizer.optimizer.epochs": 2}))
    assert second.metrics["start_epoch"] == 1 and second.metrics["epoch"] == 1
    assert second.metrics["global_step"] == 2 * first.metrics["global_step"]
    assert second.metrics["resume_optimizer_digest"] == pytest.approx(
        first.metrics["optimizer_digest"], rel=1e-9)
    state = load_state(second.checkpoint)
    assert state["epoch"] == 1 and state["config"]["optimizer"]["epochs"] == 2


def test_a_rerun_with_another_model_is_refused_before_training(world, tmp_path):
    from factory.errors import UserError

    config = _config(world, tmp_path)
    run_root = tmp_path / "runs" / "recognizer"
    run_root.mkdir(parents=True)
    (run_root / "run.json").write_text(json.dumps({
        "backbone": config.recognizer.backbone.model_dump(mode="json") | {"name": "ir-small"},
        "head": config.recognizer.head.model_dump(mode="json"),
        "data": layout.recognizer_data_uri(config), "real_data": ""}))
    with pytest.raises(UserError, match="different backbone; set a new recognizer.run_name"):
        train_recognizer(config)


def corrupt_one_image(train_dir, position: int = 5) -> int:
    """Overwrite the JPEG bytes of one image record of ``train_dir/train.rec``; its record key."""
    from factory.formats.recordio import RecordIOReader

    reader = RecordIOReader(str(train_dir / "train.rec"), str(train_dir / "train.idx"))
    key = int(reader.keys[1 + position])  # record 0 is the header record
    offset = reader._offset(key)
    reader.close()
    with open(train_dir / "train.rec", "r+b") as rec:
        rec.seek(offset + 8 + 24 + 2)  # past the record frame and the IRHeader
        rec.write(b"\0" * 64)
    return key


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_a_corrupt_record_met_in_training_ends_the_run_at_once_naming_it(
    ray_two_cpus, world, tmp_path, loader_workers
):
    """The driver's image check is off, so a worker meets the record: the run ends with the
    reader's one-line error (from a DataLoader process too), after one failure, not after the
    restarts max_failures allows for lost workers."""
    import shutil

    from factory.errors import FormatError

    data = tmp_path / "data"
    shutil.copytree(world / "faceworld" / "train", data)
    key = corrupt_one_image(data)
    failures = tmp_path / "failures"
    failures.mkdir()

    from ray.train import UserCallback

    class CountFailures(UserCallback):
        def after_exception(self, run_context, worker_exceptions):
            (failures / f"{len(list(failures.iterdir()))}").touch()

    config = _config(world, tmp_path, **{"recognizer.data": str(data),
                                         "recognizer.precheck_images": 0,
                                         "recognizer.max_failures": 2,
                                         "recognizer.workers.loader_workers": loader_workers,
                                         "recognizer.optimizer.epochs": 1})
    with pytest.raises(FormatError) as raised:
        train_recognizer(config, callbacks=[CountFailures()])
    assert str(raised.value) == (f"{data / 'train.rec'}: record {key}: expected an encoded "
                                 f"image (JPEG/PNG), could not decode {_record_bytes(data, key)} "
                                 "bytes")
    assert len(list(failures.iterdir())) == 1


def _record_bytes(train_dir, key: int) -> int:
    from factory.formats.recordio import RecordIOReader, unpack_record

    reader = RecordIOReader(str(train_dir / "train.rec"), str(train_dir / "train.idx"))
    try:
        return len(unpack_record(reader.read(key))[1])
    finally:
        reader.close()


def test_extra_data_is_trained_on_as_more_identities(ray_two_cpus, world, tmp_path):
    """Also trains in channels-last layout: its checkpoint loads into a default-layout backbone
    that embeds as the trained one did."""
    more = world / "faceworld" / "judge-train"  # 8 more identities, none of train's
    run = train_recognizer(_config(world, tmp_path, **{"recognizer.optimizer.epochs": 1,
                                                       "recognizer.extra_data": f"[{more}]",
                                                       "recognizer.channels_last": "true"}))
    # 8 identities x 4 images, then 8 others x 4: 16 classes, 64 images, 8 steps of 8
    state = load_state(run.checkpoint)
    assert state["head"]["weight"].shape[0] == 16
    assert run.metrics["global_step"] == 8 and state["config"]["channels_last"] is True
    backbone = load_backbone(run.checkpoint).eval()
    probe = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(backbone(probe),
                              backbone.to(memory_format=torch.channels_last)(probe), atol=1e-4)
