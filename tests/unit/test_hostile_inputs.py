"""Hostile and broken inputs: every one ends in one short line on stderr and exit code 2, with no
traceback, and leaves every file that was already there as it was.

Each case builds its bad input under ``tmp_path`` and returns the command line and the words
the error line must contain. Nothing here starts Ray: every case must fail before any work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import small_synthesis_overrides, synthesize_in_this_process
from factory import locking, storage
from factory.cli import MAX_ERROR_CHARS, main
from factory.config import load_config
from factory.formats.images import encode_jpeg
from factory.formats.verification_bin import write_bin
from factory.synth import synthesize as synthesize_module
from .test_storage import silent_endpoint


@dataclass
class Case:
    """A command line that must fail, and what its one error line must name."""

    argv: list[str]
    needles: tuple[str, ...] = ()


class Inputs:
    """What a case builds its bad input from: a scratch folder, and copies of the module's
    pristine fixtures, made only for the cases that ask for them."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.tmp_path = tmp_path
        self._request = request

    def fixture(self, name: str) -> Path:
        """The pristine directory fixture ``name``: read it, never change it."""
        return Path(self._request.getfixturevalue(name))

    def copy(self, fixture: str, name: str) -> Path:
        """A private copy of the directory fixture ``fixture`` at ``tmp_path/name``."""
        return Path(shutil.copytree(self.fixture(fixture), self.tmp_path / name))


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """An untrained tiny generator checkpoint (its training data is never read here)."""
    from conftest import save_tiny_generator

    return save_tiny_generator(str(tmp_path_factory.mktemp("generator")), "unused")


@pytest.fixture(scope="module")
def dataset(world, tiny_generator, tmp_path_factory):
    """A complete synthesised dataset of 2 shards (its MLflow store beside it)."""
    out = tmp_path_factory.mktemp("synthesis") / "dataset"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out.parent)
        synthesize_in_this_process(patch)
        synthesize_module.synthesize(load_config(None, small_synthesis_overrides(world, tiny_generator,
                                                                           out)))
    return out


def tiny_bin(path: Path, pairs: int, same: bool | None = None) -> Path:
    """A .bin of ``pairs`` pairs of 16 px noise images, half genuine (or all ``same``)."""
    rng = np.random.default_rng(0)
    images = [encode_jpeg(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
              for _ in range(2 * pairs)]
    issame = [index % 2 == 0 if same is None else same for index in range(pairs)]
    write_bin(str(path), images, issame)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


# -- config files and overrides ----------------------------------------------------------------

def binary_config(inputs: Inputs) -> Case:
    config = inputs.tmp_path / "junk.yaml"
    config.write_bytes(bytes(range(256))[::-1] * 4)
    return Case(["faceworld", "--config", str(config)], (str(config), "not a YAML text file"))


BILLION_LAUGHS = "\n".join(
    [f'{chr(97)}: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join(['*' + chr(96 + i)] * 9)}]"
       for i in range(1, 8)]
    + ["faceworld:", "  identities: [*h, *h, *h, *h, *h, *h, *h, *h, *h]"]) + "\n"
"""Nine aliases nested nine deep under one key: 9**9 strings once expanded, in ~400 bytes."""


def yaml_alias_bomb(inputs: Inputs) -> Case:
    config = inputs.tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    return Case(["faceworld", "--config", str(config)], (str(config), "aliases expand"))


def yaml_alias_bomb_in_an_override(inputs: Inputs) -> Case:
    value = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"&{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(6)) + "]"
    return Case(["faceworld", f"faceworld.identities={value}"], ("faceworld.identities",))


def yaml_nested_too_deeply(inputs: Inputs) -> Case:
    config = inputs.tmp_path / "deep.yaml"
    config.write_text("faceworld: " + "[" * 5000 + "]" * 5000 + "\n")
    return Case(["faceworld", "--config", str(config)], (str(config), "nested too deeply"))


def yaml_self_containing_alias(inputs: Inputs) -> Case:
    config = inputs.tmp_path / "loop.yaml"
    config.write_text("faceworld:\n  benchmarks: &loop [*loop]\n")
    return Case(["faceworld", "--config", str(config)], (str(config), "contains it"))


def huge_value_in_the_error(inputs: Inputs) -> Case:
    return Case(["faceworld", f"faceworld.identities={'x' * 100_000}"],
                ("faceworld.identities", "integer"))


def m_interval_of_1e_minus_12(inputs: Inputs) -> Case:
    """Would build a 2e11-element list per sample while planning."""
    return Case(["synthesize", "synthesis.m.kind=range", "synthesis.m.interval=1e-12"],
                ("synthesis.m", "at most 10,001"))


def crop_scale_of_nan(inputs: Inputs) -> Case:
    """Passed every range check and failed in three Ray attempts, 145 lines."""
    return Case(["train-recognizer", "recognizer.augment.crop_scale=[.nan, .nan]"],
                ("recognizer.augment.crop_scale", "finite number"))


def faceworld_of_10_to_the_12_identities(inputs: Inputs) -> Case:
    """Was a 21-line traceback and an empty train/ left behind."""
    return Case(["faceworld", "faceworld.identities=1000000000000"],
                ("faceworld.identities", "16777216"))


def experiment_name_of_100k_characters(inputs: Inputs) -> Case:
    """Reached MLflow after the work, as a traceback with a 100 kB line."""
    return Case(["faceworld", f"runtime.experiment={'x' * 100_000}"],
                ("runtime.experiment", "at most 250 characters"))


def extra_data_repeating_the_training_set(inputs: Inputs) -> Case:
    """Would train every identity twice, as two distinct classes."""
    world = inputs.fixture("world")
    return Case(["train-recognizer", f"workdir={world}",
                 f"recognizer.extra_data=[{world}/faceworld/train]"],
                ("recognizer.extra_data", "already part of the training set"))


# -- data files ----------------------------------------------------------------------------------

def bin_with_fewer_pairs_than_folds(inputs: Inputs) -> Case:
    world = inputs.tmp_path / "world"
    tiny_bin(world / "benchmarks" / "few.bin", pairs=5)
    return Case(["baseline", f"faceworld.out={world}", "faceworld.benchmarks=[{name: few}]"],
                ("few.bin", "5 pairs", "at least 10"))


def shard_label_of_ten_to_the_26(inputs: Inputs) -> Case:
    data = inputs.tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    members = [("a.cls", b"1" + b"0" * 26), ("a.jpg", encode_jpeg(np.zeros((8, 8, 3), np.uint8))),
               ("a.json", b"{}")]
    shard = data / "shards" / "shard-000000.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return Case(["train-recognizer", f"recognizer.data={data}",
                 f"workdir={inputs.tmp_path / 'run'}"], ("shard-000000.tar", "a.cls", "18 digits"))


def _training_run(inputs: Inputs, data: Path) -> list[str]:
    return ["train-recognizer", f"recognizer.data={data}", f"workdir={inputs.tmp_path / 'run'}"]


def _image_record(train: Path, position: int) -> tuple[int, int]:
    """The key and file offset of image record ``position`` of ``train/train.rec``."""
    from factory.formats.recordio import RecordIOReader

    reader = RecordIOReader(str(train / "train.rec"), str(train / "train.idx"))
    key = int(reader.keys[1 + position])  # record 0 is the header record
    offset = reader._offset(key)
    reader.close()
    return key, offset


def rec_with_a_corrupt_jpeg(inputs: Inputs) -> Case:
    train = inputs.copy("world", "world") / "faceworld" / "train"
    key, offset = _image_record(train, 20)
    with open(train / "train.rec", "r+b") as rec:
        rec.seek(offset + 8 + 24 + 2)  # past the record frame and the IRHeader
        rec.write(b"\0" * 64)
    return Case(_training_run(inputs, train), ("train.rec", f"record {key}:", "could not decode"))


def rec_index_pointing_mid_record(inputs: Inputs) -> Case:
    train = inputs.copy("world", "world") / "faceworld" / "train"
    key, offset = _image_record(train, 20)
    index = (train / "train.idx").read_text().replace(f"{key}\t{offset}\n",
                                                      f"{key}\t{offset + 12}\n")
    (train / "train.idx").write_text(index)
    return Case(_training_run(inputs, train), ("train.rec", f"record {key} at offset",
                                               "expected RecordIO magic"))


def shard_with_a_corrupt_jpeg(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    shard = dataset / "shards" / "shard-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
    victim = next(member.name for member, _ in members if member.name.endswith(".jpg"))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, payload in members:
            if member.name == victim:
                payload = b"\0" * len(payload)
            tar.addfile(member, io.BytesIO(payload))
    return Case(_training_run(inputs, dataset), ("shard-000001.tar", victim, "could not decode"))


def recognizer_checkpoint_without_backbone_args(inputs: Inputs) -> Case:
    checkpoint = inputs.tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"backbone": {}, "epoch": 3}, checkpoint / "recognizer.pt")
    benchmark = tiny_bin(inputs.tmp_path / "tiny.bin", pairs=20)
    return Case(["evaluate", f"evaluate.checkpoint={checkpoint}",
                 f"evaluate.benchmarks=[{benchmark}]"], ("recognizer.pt", "backbone_args"))


def _broken_generator(inputs: Inputs, name: str, text: str) -> Case:
    checkpoint = inputs.copy("generator", "generator")
    (checkpoint / name).write_text(text)
    return Case(["synthesize", f"synthesis.checkpoint={checkpoint}",
                 f"synthesis.out={inputs.tmp_path / 'synthetic'}"])


def generator_json_not_json(inputs: Inputs) -> Case:
    case = _broken_generator(inputs, "generator.json", '{"step": 3, "image_si')
    return Case(case.argv, ("generator.json", "not valid JSON"))


def generator_json_without_image_size(inputs: Inputs) -> Case:
    case = _broken_generator(inputs, "generator.json", '["step", 3]')
    return Case(case.argv, ("generator.json", "expected a JSON object"))


def unet_config_not_json(inputs: Inputs) -> Case:
    case = _broken_generator(inputs, "unet/config.json", "{not json")
    return Case(case.argv, ("generator/unet", "not a valid JSON file"))


def unet_config_of_the_wrong_shape(inputs: Inputs) -> Case:
    config = json.loads((inputs.fixture("generator") / "unet/config.json").read_text())
    case = _broken_generator(inputs, "unet/config.json",
                             json.dumps({**config, "block_out_channels": 5}))
    return Case(case.argv, ("generator/unet", "damaged"))


def unet_weights_truncated(inputs: Inputs) -> Case:
    """Caught by the driver's header check, before any actor loads the weights."""
    checkpoint = inputs.copy("generator", "generator")
    weights = checkpoint / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-512])
    return Case(["synthesize", f"synthesis.checkpoint={checkpoint}",
                 f"synthesis.out={inputs.tmp_path / 'synthetic'}"], ("generator/unet", "damaged"))


def s3_uri_with_an_empty_region(inputs: Inputs) -> Case:
    # a closed local port instead of AWS: the same failure, without the network
    uri = "s3://bucket/data?region=&endpoint_override=127.0.0.1:9&scheme=http"
    return Case(["train-recognizer", f"recognizer.data={uri}",
                 f"workdir={inputs.tmp_path / 'run'}"], (uri, "cannot look it up"))


# -- datasets: analysis, a synthesis rerun, verification ------------------------------------------

def _damaged_dataset(inputs: Inputs, name: str, content: bytes) -> Path:
    dataset = inputs.copy("dataset", "dataset")
    (dataset / name).write_bytes(content)
    return dataset


def analyze_corrupt_manifest(inputs: Inputs) -> Case:
    dataset = _damaged_dataset(inputs, "manifest.json", b'{"shards": [{"shard": "shard-0')
    return Case(["analyze", str(dataset)], ("manifest.json", "not valid JSON"))


def analyze_manifest_naming_a_shard_outside_the_dataset(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["shards"][0]["shard"] = "../../../etc/passwd"
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    return Case(["analyze", str(dataset)], ("manifest.json", "shard-NNNNNN.tar"))


def analyze_corrupt_centers(inputs: Inputs) -> Case:
    dataset = _damaged_dataset(inputs, "stats/shard-000001.centers.npy", b"\x93NUMPY junk")
    return Case(["analyze", str(dataset)], ("shard-000001.centers.npy",))


def _rerun(inputs: Inputs, dataset: Path) -> list[str]:
    return ["synthesize", *small_synthesis_overrides(inputs.fixture("world"),
                                               inputs.fixture("tiny_generator"), dataset)]


def synthesis_rerun_over_a_corrupt_plan(inputs: Inputs) -> Case:
    dataset = _damaged_dataset(inputs, "plan.json", b"\x00\x01 not a plan")
    return Case(_rerun(inputs, dataset), ("plan.json", "not valid JSON"))


def synthesis_rerun_over_a_corrupt_stats_file(inputs: Inputs) -> Case:
    dataset = _damaged_dataset(inputs, "stats/shard-000000.json", b'{"count": "many"}')
    return Case(_rerun(inputs, dataset), ("shard-000000.json", "count", "written again"))


def verify_a_truncated_shard(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    shard = dataset / "shards" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    return Case(["verify", str(dataset)], ("1 of 2 shards damaged", "shard-000001.tar",
                                           "bytes, expected"))


def verify_a_shard_with_one_byte_changed(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    shard = dataset / "shards" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 1
    shard.write_bytes(bytes(data))
    return Case(["verify", str(dataset)], ("shard-000000.tar", "sha256 differs"))


def _edited_manifest(inputs: Inputs, edit: Callable[[dict], object]) -> Path:
    """A copy of the dataset whose manifest ``edit`` changed in place."""
    dataset = inputs.copy("dataset", "dataset")
    manifest = json.loads((dataset / "manifest.json").read_text())
    edit(manifest)
    (dataset / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dataset


def verify_an_added_shard(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    shutil.copy(dataset / "shards" / "shard-000001.tar", dataset / "shards" / "shard-000002.tar")
    return Case(["verify", str(dataset)], (f"{dataset}/shards/shard-000002.tar: not listed in "
                                           f"{dataset}/manifest.json", "exactly the shards"))


def verify_a_dropped_manifest_entry(inputs: Inputs) -> Case:
    dataset = _edited_manifest(inputs, lambda manifest: manifest["shards"].pop(1))
    return Case(["verify", str(dataset)], (f"{dataset}/shards/shard-000001.tar: not listed in",
                                           "if its entry was lost, rerun factory synthesize"))


def verify_a_sample_count_of_99999(inputs: Inputs) -> Case:
    dataset = _edited_manifest(inputs, lambda manifest: manifest["counts"].update(samples=99999))
    return Case(["verify", str(dataset)], (f"{dataset}/manifest.json: counts.samples is 99999, "
                                           "expected 8 (counted in the shards)",))


def verify_a_shard_count_of_99999(inputs: Inputs) -> Case:
    dataset = _edited_manifest(inputs, lambda manifest: manifest["shards"][0].update(count=99999))
    return Case(["verify", str(dataset)], ("1 of 2 shards damaged", "shard-000000.tar: holds 4 "
                                           "samples, the manifest records 99999"))


def verify_an_export_written_into_shards(inputs: Inputs) -> Case:
    """What ``factory export --out <dataset>/shards/shard-000002.tar`` left before it was
    refused: a folder of train.rec, train.idx, ... among the shards."""
    from factory.formats.export import export_dataset

    dataset = inputs.copy("dataset", "dataset")
    export_dataset(str(dataset), str(inputs.tmp_path / "rec"), "rec")
    shutil.move(inputs.tmp_path / "rec", dataset / "shards" / "shard-000002.tar")
    return Case(["verify", str(dataset)], (f"{dataset}/shards/shard-000002.tar: not listed in",))


def export_into_a_dataset(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    out = dataset / "shards" / "shard-000002.tar"
    return Case(["export", str(dataset), "--format", "rec", "--out", str(out)],
                (f"--out {out}: lies inside the synthesised dataset {dataset}",))


def synthesis_into_a_dataset(inputs: Inputs) -> Case:
    dataset = inputs.copy("dataset", "dataset")
    out = dataset / "shards" / "more"
    return Case(_rerun(inputs, out), (f"synthesis.out {out}: lies inside the synthesised dataset "
                                      f"{dataset}",))


def _locked(folder: Path, command: str) -> str:
    """A lock on ``folder`` held, as its record says, by this test's parent process (alive while
    the test runs) for ``command``: what another factory command writing there leaves."""
    owner = replace(locking._this_process(command), pid=os.getppid(), process_start=None)
    folder.mkdir(parents=True)
    (folder / locking.LOCK_FILE).write_bytes(locking._record(owner))
    return f"{folder}: being written by {owner.describe()}; wait until it ends"


def synthesis_into_an_output_another_synthesis_writes(inputs: Inputs) -> Case:
    out = inputs.tmp_path / "out"
    return Case(["synthesize", f"workdir={inputs.tmp_path / 'work'}", f"synthesis.out={out}",
                 f"synthesis.inquiry.data={inputs.tmp_path / 'inquiry'}"],
                (_locked(out, "synthesize"),))


def export_into_an_out_another_export_writes(inputs: Inputs) -> Case:
    out, source = inputs.tmp_path / "out", inputs.tmp_path / "source"
    source.mkdir()
    return Case(["export", str(source), "--format", "rec", "--out", str(out)],
                (_locked(out, "export"),))


CASES: list[Callable[[Inputs], Case]] = [
    binary_config, yaml_alias_bomb, yaml_alias_bomb_in_an_override, yaml_nested_too_deeply,
    yaml_self_containing_alias, huge_value_in_the_error, m_interval_of_1e_minus_12,
    crop_scale_of_nan, faceworld_of_10_to_the_12_identities, experiment_name_of_100k_characters,
    extra_data_repeating_the_training_set,
    bin_with_fewer_pairs_than_folds, shard_label_of_ten_to_the_26,
    rec_with_a_corrupt_jpeg, rec_index_pointing_mid_record, shard_with_a_corrupt_jpeg,
    recognizer_checkpoint_without_backbone_args, generator_json_not_json,
    generator_json_without_image_size, unet_config_not_json, unet_config_of_the_wrong_shape,
    unet_weights_truncated,
    s3_uri_with_an_empty_region,
    analyze_corrupt_manifest, analyze_manifest_naming_a_shard_outside_the_dataset,
    analyze_corrupt_centers, synthesis_rerun_over_a_corrupt_plan,
    synthesis_rerun_over_a_corrupt_stats_file, verify_a_truncated_shard,
    verify_a_shard_with_one_byte_changed, verify_an_added_shard, verify_a_dropped_manifest_entry,
    verify_a_sample_count_of_99999, verify_a_shard_count_of_99999,
    verify_an_export_written_into_shards, export_into_a_dataset, synthesis_into_a_dataset,
    synthesis_into_an_output_another_synthesis_writes, export_into_an_out_another_export_writes,
]


@pytest.mark.parametrize("make_case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_gives_one_short_line_and_changes_nothing(make_case, tmp_path, capsys,
                                                            monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    case = make_case(Inputs(tmp_path, request))
    capsys.readouterr()  # what building the fixtures printed
    assert_refused(case, tmp_path, capsys)


ESCAPES = ["..", ".", "", "../elsewhere", "a/b", "/tmp/abs", ".hidden", "a\\b"]


@pytest.mark.parametrize("key, command", [("recognizer.run_name", "train-recognizer"),
                                          ("generator.run_name", "train-generator"),
                                          ("sweep.name", "sweep")])
@pytest.mark.parametrize("name", ESCAPES, ids=repr)
def test_names_that_become_folders_cannot_escape(key, command, name, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    case = Case([command, f"workdir={work}", f"{key}={name!r}"], (key, "folder name"))
    assert_refused(case, tmp_path, capsys)
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def assert_refused(case: Case, root: Path, capsys: pytest.CaptureFixture) -> None:
    """``case`` exits 2 with one line of at most MAX_ERROR_CHARS naming its needles, without
    a traceback, and every file under ``root`` is as it was."""
    before = snapshot(root)
    code = main(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    assert len(lines[0]) <= MAX_ERROR_CHARS
    assert lines[0].startswith(f"factory {case.argv[0]}: error: ")
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    after = snapshot(root)
    assert {path: after.get(path) for path in before} == before


def test_a_gs_uri_fails_within_its_retry_bound(tmp_path, capsys, monkeypatch):
    """Without credentials the GCS client retries for many minutes by default; the factory
    bounds it (GCS_RETRY_SECONDS, here 2 s) and names the URI and what it waited for."""
    monkeypatch.setattr(storage, "GCS_RETRY_SECONDS", 2)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    started = time.monotonic()
    code = main(["evaluate", "evaluate.checkpoint=gs://no-such-bucket/recognizer"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 60, (elapsed, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "gs://no-such-bucket/recognizer" in lines[0], err[-2000:]


def test_a_gs_uri_whose_token_never_comes_fails_at_the_deadline(capsys, monkeypatch):
    """A metadata server that accepts the token request and never answers is beyond the GCS
    client's retry bound (it waited past 300 s, deaf to Ctrl-C); the factory's deadline (here
    2 s) ends the call with one line naming the URI and the deadline."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv(storage.DEADLINE_VARIABLE, "2")
    with silent_endpoint() as (address, connected):
        monkeypatch.setenv("GCE_METADATA_ROOT", address)
        started = time.monotonic()
        code = main(["evaluate", "evaluate.checkpoint=gs://no-such-bucket/recognizer"])
        elapsed = time.monotonic() - started
        assert connected.is_set()  # it did reach the silent endpoint
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10, (elapsed, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "gs://no-such-bucket/recognizer" in lines[0], err[-2000:]
    assert "within 2 s" in lines[0] and storage.DEADLINE_VARIABLE in lines[0], lines[0]


# -- loose ends: odd but valid inputs must still give valid outputs ------------------------------

def strict_json(path: Path) -> dict:
    """The JSON document at ``path``, refusing the NaN and Infinity that are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_an_all_genuine_benchmark_gives_strict_json_with_null_tars(tmp_path, monkeypatch):
    from factory.models.iresnet import build_backbone

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.pt"
    torch.save(build_backbone("ir-tiny", 16, 8).state_dict(), model)
    benchmark = tiny_bin(tmp_path / "same.bin", pairs=20, same=True)
    code = main(["evaluate", f"evaluate.checkpoint={model}", f"evaluate.benchmarks=[{benchmark}]",
                 "evaluate.backbone={name: ir-tiny, input_size: 16, embedding_size: 8}",
                 f"evaluate.out={tmp_path / 'out'}",
                 f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    assert code == 0
    results = strict_json(tmp_path / "out" / "results.json")
    summary = results["benchmarks"][0]
    assert summary["tar@far=1e-3"] is None and "impostor" in summary["note"]
    assert 0.0 <= summary["acc"] <= 1.0 and "same/tar_far_1e-3" not in results["metrics"]


# -- a rerun checks what it trusts ----------------------------------------------------------------

def test_a_rerun_rewrites_a_damaged_shard_and_verify_then_passes(dataset, world, tiny_generator,
                                                                   tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synthesize_in_this_process(monkeypatch)
    copy = Path(shutil.copytree(dataset, tmp_path / "dataset"))
    shard = copy / "shards" / "shard-000001.tar"
    original = shard.read_bytes()
    shard.write_bytes(original[:-1024])
    assert main(["synthesize", *small_synthesis_overrides(world, tiny_generator, copy)]) == 0
    out = capsys.readouterr().out
    assert "shard-000001.tar is damaged" in out and "1 to write, 1 already complete" in out
    assert shard.read_bytes() == original
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["shards"][1]["sha256"] == hashlib.sha256(original).hexdigest()
    assert main(["verify", str(copy)]) == 0
    assert "2 shards, 8 samples" in capsys.readouterr().out


def test_readers_read_only_the_shards_the_manifest_lists(dataset, tmp_path):
    """Files added to shards/ (a copied shard, an export written there) are not read: every
    reader still sees the dataset's 8 samples."""
    from factory.formats.dataset import open_dataset
    from factory.synth.analyze import read_samples
    from factory.synth.reader import read_manifest

    copy = Path(shutil.copytree(dataset, tmp_path / "dataset"))
    shutil.copy(copy / "shards" / "shard-000001.tar", copy / "shards" / "shard-000002.tar")
    (copy / "shards" / "shard-000003.tar").mkdir()
    (copy / "shards" / "shard-000003.tar" / "train.rec").write_bytes(b"not a shard")
    assert len(open_dataset(str(copy))) == 8
    assert len(read_samples(str(copy), read_manifest(str(copy))).labels) == 8


def test_a_moved_dataset_resumes(dataset, world, tiny_generator, tmp_path, capsys, monkeypatch):
    """The plan records what the dataset is, not where: a copy elsewhere, even one whose plan
    an earlier version wrote with its location, resumes with nothing to write."""
    monkeypatch.chdir(tmp_path)
    synthesize_in_this_process(monkeypatch)
    moved = Path(shutil.copytree(dataset, tmp_path / "elsewhere" / "moved"))
    plan = json.loads((moved / "plan.json").read_text())
    assert "out" not in plan["synthesis"]
    plan["synthesis"]["out"] = str(dataset)
    (moved / "plan.json").write_text(json.dumps(plan))
    assert main(["synthesize", *small_synthesis_overrides(world, tiny_generator, moved)]) == 0
    assert "0 to write, 2 already complete" in capsys.readouterr().out
