"""A full disk is one line naming the path and the space needed, and what was written is kept
(issue 33, item 5).

A write that is known to be big (a synthesis's shards, an export, the face world) is refused
before it starts when its disk has less free than it needs, and if the disk fills up anyway the
line says how much the write needed. Free space is simulated by replacing ``shutil.disk_usage``;
nothing here starts Ray (the synthesis's actor pool and inquiry stage run in this process).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple

import numpy as np
import pytest

from helpers import small_synthesis_overrides, synthesize_in_this_process
from factory import storage
from factory.cli import main
from factory.config import load_config
from factory.errors import DiskFullError, disk_full, expected_write
from factory.formats import export as export_module
from factory.formats.dataset import open_dataset
from factory.synth import synthesize as synthesize_module
from factory.synth.plan import identities_from_bytes, shard_items
from factory.synth.space import synthesis_bytes

MiB = 2 ** 20
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def free_space(monkeypatch):
    """Sets the free space every disk reports: ``free_space(bytes)``."""
    def set_free(free: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 ** 12, 0, free))
    return set_free


def one_line(capsys, argv: list[str]) -> str:
    """The single error line a command that exits 2 prints (no traceback)."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# -- the face world ------------------------------------------------------------------------------

def test_a_face_world_that_does_not_fit_is_refused_before_a_file_is_written(
        tmp_path, capsys, free_space):
    free_space(3 * MiB)
    line = one_line(capsys, ["faceworld", f"workdir={tmp_path}", "faceworld.identities=1000",
                             "faceworld.images_per_identity=12", "faceworld.image_size=112"])
    out = tmp_path / "faceworld"
    assert line.startswith(f"factory faceworld: error: {out}: not enough space on device (about ")
    needed = float(line.split("(about ")[1].split(" MiB needed")[0].replace(",", ""))
    assert 60 < needed < 200  # 12,000 training images alone are ~60 MiB at 112 px
    assert "MiB needed for the face world's" in line and f"3.0 MiB free on {out}" in line
    assert not [path for path in out.rglob("*") if path.is_file()]


# -- ENOSPC inside a declared write --------------------------------------------------------------

def test_enospc_inside_a_declared_write_names_the_space_it_needs(tmp_path, free_space):
    """pyarrow's and ``write()``'s ENOSPC carry no file name: the declared path is named, with
    the space the write needs and the space left."""
    free_space(512 * 1024)
    with pytest.raises(DiskFullError) as raised:
        with expected_write(str(tmp_path / "out"), 300 * MiB, "the 6 shards left to write"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value) == (
        f"{tmp_path / 'out'}: no space left on device (about 300 MiB needed for the 6 shards "
        f"left to write, 0.5 MiB free on {tmp_path}); free space there and rerun: finished "
        "work is kept and the run resumes")


def test_a_named_file_is_named_and_the_innermost_declaration_wins(tmp_path, free_space):
    free_space(0)
    target = tmp_path / "out" / "shards" / "shard-000003.tar"
    with pytest.raises(DiskFullError) as raised:
        with expected_write(str(tmp_path), 10 * MiB, "the whole run"):
            with expected_write(str(tmp_path / "out"), 4 * MiB, "shard 3"):
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
    assert str(raised.value).startswith(f"{target}: no space left on device (about 4.0 MiB "
                                        "needed for shard 3, 0.0 MiB free on")
    with pytest.raises(PermissionError):  # anything but ENOSPC passes through unchanged
        with expected_write(str(tmp_path), 1, "x"):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))


class RayStyleError(Exception):
    """What a Ray Data actor's failure reaches the driver as: the worker's traceback as text,
    the OSError itself gone."""


def test_an_enospc_from_a_ray_worker_is_recognised_in_its_traceback_text(tmp_path, free_space):
    free_space(0)
    worker_traceback = (
        "ray::MapWorker(MapBatches(ShardSynthesizer)).submit() (pid=1, ip=127.0.0.1)\n"
        '  File "factory/synth/shard_writer.py", line 43, in write_sampled\n'
        "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on "
        "device\n\nThe above exception was the direct cause of the following exception:\n\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block.")
    with pytest.raises(DiskFullError) as raised:
        with expected_write(str(tmp_path / "out"), 2 * MiB, "the 1 shard of 8 samples left"):
            raise RayStyleError(worker_traceback)
    assert str(raised.value).startswith(f"{tmp_path / 'out'}: no space left on device (about "
                                        "2.0 MiB needed for the 1 shard of 8 samples left")
    named = RayStyleError("OSError: [Errno 28] No space left on device: '/data/out/x.tar'")
    assert str(disk_full(named)).startswith("/data/out/x.tar: no space left on device (")
    assert disk_full(RayStyleError("OSError: [Errno 13] Permission denied: '/x'")) is None


def test_an_object_store_is_not_measured(free_space):
    free_space(0)
    storage.require_space("s3://bucket/datasets/run", 10 ** 12, "a terabyte")  # no refusal
    with pytest.raises(DiskFullError):
        storage.require_space("file:///tmp/anywhere", 10 ** 12, "a terabyte")


# -- export ------------------------------------------------------------------------------------

def test_an_export_that_does_not_fit_is_refused_naming_out_and_both_sizes(
        world, tmp_path, capsys, free_space):
    source, out = world / "faceworld" / "train", tmp_path / "export"
    free_space(1024)
    line = one_line(capsys, ["export", str(source), "--format", "folder", "--out", str(out)])
    assert line.startswith(f"factory export: error: {out}: not enough space on device (about ")
    assert "MiB needed for 32 images exported as folder, 0.0 MiB free on" in line
    assert not list(out.glob("0*"))  # no image was written


def test_a_disk_that_fills_during_an_export_names_the_space_and_a_rerun_finishes(
        world, tmp_path, capsys, free_space, monkeypatch):
    """The disk fills while train.rec is written (ENOSPC without a file name, as pyarrow
    raises it): one line naming --out and the space the export needs; export.json stays, and
    once there is space the same command finishes the export."""
    source, out = world / "faceworld" / "train", tmp_path / "export"
    write_rec = export_module.write_insightface_rec

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space "
                                    "left on device")

    monkeypatch.setattr(export_module, "write_insightface_rec", full)
    free_space(10 * MiB)
    argv = ["export", str(source), "--format", "rec", "--out", str(out)]
    line = one_line(capsys, argv)
    assert line.startswith(f"factory export: error: {out}: no space left on device (about ")
    assert "needed for 32 images exported as rec, 10 MiB free on" in line and "rerun" in line
    assert (out / "export.json").exists() and not (out / "train.rec").exists()

    monkeypatch.setattr(export_module, "write_insightface_rec", write_rec)
    assert main(argv) == 0 and (out / "metadata.jsonl").exists()


@pytest.mark.parametrize("format", ["rec", "folder"])
def test_an_export_estimate_is_about_what_it_takes_on_disk(world, tmp_path, format):
    """The estimate that both the check and the line use is near the disk the export then
    takes (a folder's small files in whole blocks), and it reads no image to get there."""
    from factory.formats.space import export_bytes

    source, out = str(world / "faceworld" / "train"), tmp_path / format
    dataset = open_dataset(source)
    dataset.raw = lambda index: pytest.fail("an image was read to estimate the export")
    estimate = export_bytes(dataset, np.arange(len(dataset)), dataset.num_classes, format,
                            str(out))
    export_module.export_dataset(source, str(out), format)
    taken = sum(path.stat().st_blocks * 512 for path in out.rglob("*") if path.is_file())
    assert 0.5 * taken < estimate < 2 * taken


# -- synthesis -----------------------------------------------------------------------------------

@pytest.fixture
def in_this_process(monkeypatch):
    """The synthesis's Ray stages run here: the same actor class, one shard at a time, and the
    same inquiry embeddings."""
    synthesize_in_this_process(monkeypatch)


def test_a_synthesis_that_does_not_fit_is_refused_before_its_pool_and_resumes_its_plan(
        world, tiny_generator, tmp_path, capsys, monkeypatch, free_space, in_this_process):
    """Refused after planning, before a shard is written, naming synthesis.out and the shards'
    size; the plan is kept, so the rerun (with space) resumes it without embedding the
    inquiries again, and its shards cost about what the refusal said."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dataset"
    argv = ["synthesize", *small_synthesis_overrides(world, tiny_generator, out)]
    free_space(4096)
    line = one_line(capsys, argv)
    assert line.startswith(f"factory synthesize: error: {out}: not enough space on device ")
    assert "needed for the 2 shards of 8 samples left to write, 0.0 MiB free on" in line
    assert (out / "plan.json").exists() and not list(out.glob("shards/*.tar"))
    needed = float(line.split("(about ")[1].split(" MiB")[0]) * MiB

    free_space(10 ** 12)
    monkeypatch.setattr(synthesize_module, "embed_inquiries_on_actors",
                        lambda *args, **kwargs: pytest.fail("the plan was not resumed"))
    assert main(argv) == 0
    written = sum(path.stat().st_size for path in out.glob("shards/*"))
    assert 0.5 * written < needed < 2 * written


def test_a_rerun_measures_the_shards_already_written(
        world, tiny_generator, tmp_path, monkeypatch, in_this_process):
    """Once a shard is complete, the estimate for the rest is its measured bytes per sample."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dataset"
    config = load_config(None, small_synthesis_overrides(world, tiny_generator, out))
    synthesize_module.synthesize(config)
    identities, _ = identities_from_bytes(
        storage.read_bytes(str(out / "plan_identities.npz")))
    todo = [item for item in shard_items(identities, 2) if item.shard == 1]
    samples, needed = synthesis_bytes(str(out), {0}, todo, config.synthesis, 32)
    shard_zero = sum(os.path.getsize(out / "shards" / f"shard-000000.{ext}")
                     for ext in ("tar", "parquet"))
    assert samples == 4 and needed == shard_zero
