"""Per-sample Parquet metadata beside every shard: written with the shard, listed in the
manifest, read alike by pyarrow, pandas, DuckDB and Ray Data, checked by ``factory verify``,
written again from its tar by a synthesis rerun, carried by ``factory export``, read by the
similarity-group selection, and joined by the judge's sidecar. Only the Ray Data test starts
Ray: the dataset is synthesised with the actor pool's code run in this process."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from helpers import small_synthesis_overrides, synthesize_in_this_process
from factory.cli import main
from factory.config import load_config
from factory.formats.export import METADATA_TABLE_FILE, export_dataset
from factory.formats.shard_metadata import SHARD_SCHEMA, metadata_name, read_dataset_metadata
from factory.formats.shards import iter_shard, shard_name

SHARDS = 3
COLUMNS = ["key", "label", "m", "similarity_center", "real", "jpg_offset"]


def overrides(world: Path, generator: Path, out: Path) -> list[str]:
    """The shared small synthesis with one identity-mixup identity and the inquiry images
    copied in, so the rows hold mixup parents and real copies."""
    return small_synthesis_overrides(world, generator, out,
                                     "synthesis.inquiry.mixup_identities=1",
                                     "synthesis.include_inquiry_images=true")


def synthesize_here(patch, argv: list[str]) -> int:
    synthesize_in_this_process(patch)
    return main(["synthesize", *argv])


@pytest.fixture(scope="module")
def dataset(world, tiny_generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthesis") / "dataset"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out.parent)
        assert synthesize_here(patch, overrides(world, tiny_generator, out)) == 0
    return out


def parquet(dataset: Path, shard: int) -> Path:
    return dataset / "shards" / metadata_name(shard_name(shard))


def similarity_range(dataset: Path) -> tuple[float, float]:
    """A range holding about the middle half of the samples' measured similarity."""
    values = read_dataset_metadata(str(dataset), ["similarity_center"])["similarity_center"]
    low, high = np.quantile(values.to_numpy(), [0.25, 0.75])
    return float(low), float(high)


def test_each_shard_has_its_rows_beside_it_and_the_manifest_lists_them(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    listing = manifest["metadata"]
    assert listing["pattern"] == "shards/shard-{000000..000002}.parquet"
    assert [entry["file"] for entry in listing["files"]] == [
        f"shard-{shard:06d}.parquet" for shard in range(SHARDS)]
    for shard, entry in enumerate(listing["files"]):
        path = parquet(dataset, shard)
        table = pq.read_table(path)
        assert table.schema.equals(SHARD_SCHEMA)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (entry["rows"], entry["size_bytes"]) == (table.num_rows, path.stat().st_size)
        tar = dataset / "shards" / shard_name(shard)
        samples, rows, data = list(iter_shard(str(tar))), table.to_pylist(), tar.read_bytes()
        assert len(rows) == len(samples) == manifest["shards"][shard]["count"]
        for row, sample in zip(rows, samples):
            meta = sample["json"]
            assert (row["shard"], row["key"], row["label"]) == (shard, sample["__key__"],
                                                                sample["cls"])
            assert data[row["jpg_offset"]:row["jpg_offset"] + row["jpg_size"]] == sample["jpg"]
            for name in ("inquiry", "m", "similarity_inquiry", "similarity_center", "real",
                         "seed", "sampler", "steps", "generator"):
                assert row[name] == meta[name], name
            mixup = meta["mixup"] or {}
            assert row["mixup_parents"] == mixup.get("parents")
            assert row["mixup_weights"] == (None if not mixup else
                                            [mixup["phi"], 1.0 - mixup["phi"]])
    table = read_dataset_metadata(str(dataset))
    assert table.num_rows == manifest["counts"]["samples"] == 14
    assert sum(table["real"].to_pylist()) == manifest["counts"]["real_images"] == 4
    assert sum(parents is not None for parents in table["mixup_parents"].to_pylist()) == 2


def test_pyarrow_pandas_and_duckdb_select_the_same_rows(dataset):
    import duckdb
    import pandas as pd

    low, high = similarity_range(dataset)
    files = sorted(str(path) for path in (dataset / "shards").glob("*.parquet"))
    by_pyarrow = pads.dataset(files).to_table(
        columns=COLUMNS, filter=(pads.field("similarity_center") >= low)
        & (pads.field("similarity_center") <= high)).to_pylist()
    by_pandas = pd.read_parquet(files, columns=COLUMNS, filters=[
        ("similarity_center", ">=", low), ("similarity_center", "<=", high)])
    by_duckdb = duckdb.sql(
        f"SELECT {', '.join(COLUMNS)} FROM read_parquet({files!r}) "
        f"WHERE similarity_center BETWEEN {low!r} AND {high!r}").fetch_arrow_table()
    assert 0 < len(by_pyarrow) < 14
    assert by_pyarrow == by_pandas.to_dict("records") == by_duckdb.to_pylist()


def test_hugging_face_datasets_still_loads_the_shards(dataset, tmp_path, monkeypatch):
    """The card's snippet reads a shards folder that holds the Parquet files too. Its folder
    keeps the shards without identity mixup (found from their Parquet files): `datasets`
    takes the json's types from the first samples it reads, so a ``mixup`` object after only
    nulls fails its cast, with or without these files."""
    from datasets import load_dataset

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    table = read_dataset_metadata(str(dataset), ["shard", "key", "label", "mixup_parents"])
    mixed = {row["shard"] for row in table.to_pylist() if row["mixup_parents"] is not None}
    plain = [shard for shard in range(SHARDS) if shard not in mixed]
    assert plain and mixed
    shards = tmp_path / "plain" / "shards"
    shards.mkdir(parents=True)
    for shard in plain:
        shutil.copy(dataset / "shards" / shard_name(shard), shards)
        shutil.copy(parquet(dataset, shard), shards)
    rows = list(load_dataset("webdataset", data_files={"train": f"{shards}/*.tar"},
                             split="train", cache_dir=str(tmp_path / "cache")))
    assert sorted((row["__key__"], row["cls"]) for row in rows) == sorted(
        (row["key"], row["label"]) for row in table.to_pylist() if row["shard"] in plain)


def copy_of(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "dataset"))


def verify_error(capsys, dataset: Path) -> str:
    code = main(["verify", str(dataset)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    return err[0]


def rewrite(path: Path, change) -> None:
    """Replace the Parquet file at ``path`` with ``change`` of its table (its schema kept)."""
    pq.write_table(change(pq.read_table(path)), path)


def test_verify_checks_each_parquet_against_its_tar(dataset, tmp_path, capsys):
    assert main(["verify", str(dataset)]) == 0
    assert "Parquet metadata" in capsys.readouterr().out
    copy = copy_of(dataset, tmp_path)
    parquet(copy, 1).unlink()
    line = verify_error(capsys, copy)
    assert "1 of 3 shards damaged" in line and "shard-000001.parquet: missing" in line

    copy = copy_of(dataset, tmp_path / "rows")
    rows = pq.read_table(parquet(copy, 0)).num_rows
    rewrite(parquet(copy, 0), lambda table: table.slice(1))
    line = verify_error(capsys, copy)
    assert f"shard-000000.parquet: holds {rows - 1} rows, the shard {rows} samples" in line

    copy = copy_of(dataset, tmp_path / "offset")
    offsets = pq.read_table(parquet(copy, 2))["jpg_offset"].to_pylist()
    key = pq.read_table(parquet(copy, 2))["key"][1].as_py()
    moved = [offset + 512 * (row == 1) for row, offset in enumerate(offsets)]
    rewrite(parquet(copy, 2), lambda table: table.set_column(
        table.schema.get_field_index("jpg_offset"), SHARD_SCHEMA.field("jpg_offset"),
        pa.array(moved, pa.int64())))
    line = verify_error(capsys, copy)
    assert (f"shard-000002.parquet: row 1 (key {key!r}): jpg_offset is {offsets[1] + 512}, "
            f"the shard's is {offsets[1]}") in line

    copy = copy_of(dataset, tmp_path / "unlisted")
    shutil.copy(parquet(copy, 0), copy / "shards" / "shard-000003.parquet")
    assert "shard-000003.parquet: not listed" in verify_error(capsys, copy)


def test_a_rerun_writes_a_lost_parquet_again_from_its_tar(dataset, world, tiny_generator,
                                                          tmp_path, capsys, monkeypatch):
    """A missing Parquet file, and a shard whose stats predate these files, get their file
    from the tar, the very bytes the writer wrote, without the shard being sampled again."""
    monkeypatch.chdir(tmp_path)
    copy = copy_of(dataset, tmp_path)
    originals = {shard: parquet(copy, shard).read_bytes() for shard in range(SHARDS)}
    tars = {shard: (copy / "shards" / shard_name(shard)).read_bytes() for shard in range(SHARDS)}
    parquet(copy, 1).unlink()
    stats = copy / "stats" / "shard-000002.json"
    record = json.loads(stats.read_text())
    del record["metadata"]
    stats.write_text(json.dumps(record))
    parquet(copy, 2).unlink()
    assert synthesize_here(monkeypatch, overrides(world, tiny_generator, copy)) == 0
    out = capsys.readouterr().out
    assert "shard-000001.parquet (missing); writing it again from its shard" in out
    assert "shard-000002.parquet (its stats record no Parquet metadata)" in out
    assert "0 to write, 3 already complete" in out
    for shard in range(SHARDS):
        assert parquet(copy, shard).read_bytes() == originals[shard]
        assert (copy / "shards" / shard_name(shard)).read_bytes() == tars[shard]
    assert main(["verify", str(copy)]) == 0


def test_an_export_carries_the_rows_it_exported(dataset, tmp_path):
    import pandas as pd

    low, high = similarity_range(dataset)
    result = export_dataset(str(dataset), str(tmp_path / "rec"), "rec",
                            similarity_range=(low, high))
    exported = pd.read_parquet(tmp_path / "rec" / METADATA_TABLE_FILE)
    lines = [json.loads(line) for line in (tmp_path / "rec" / "metadata.jsonl").open()]
    assert len(exported) == len(lines) == result.images
    assert exported["record"].tolist() == list(range(1, result.images + 1))
    assert exported["key"].tolist() == [line["key"] for line in lines]
    assert exported["label"].tolist() == [line["label"] for line in lines]
    assert exported["similarity_center"].between(low, high).all()
    source = read_dataset_metadata(str(dataset)).to_pandas().set_index("key")
    assert (exported.set_index("key")["m"] == source.loc[exported["key"], "m"]).all()


def test_similarity_groups_read_the_parquet_not_the_tars(dataset, tmp_path):
    """The similarity-group study's bounds come from the Parquet files: with every tar gone
    they are still the pool's quantiles."""
    from factory.sweep.space import similarity_groups

    copy = copy_of(dataset, tmp_path)
    for tar in (copy / "shards").glob("*.tar"):
        tar.unlink()
    values = np.sort(read_dataset_metadata(str(copy), ["similarity_center"])
                     ["similarity_center"].to_numpy())
    groups = similarity_groups(str(copy), 2)
    assert groups[0][0] <= values[0] and groups[-1][1] >= values[-1]
    assert groups[0][1] == round(float(np.quantile(values, 0.5)), 4)


def test_analyze_with_a_judge_writes_its_sidecar_beside_the_report(dataset, world,
                                                                   tiny_generator, tmp_path,
                                                                   monkeypatch):
    """The judge's similarities per synthetic sample join the shards' rows on (shard, key);
    the shards' own Parquet files stay as written, so verify still passes."""
    import duckdb
    import torch

    from factory.models.iresnet import build_backbone
    from factory.synth.analyze import analyze

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    torch.save(build_backbone("ir-tiny", 32, 32).state_dict(), tmp_path / "judge.pt")
    copy = copy_of(dataset, tmp_path)
    config = load_config(None, [
        *overrides(world, tiny_generator, copy), f"judge.checkpoint={tmp_path / 'judge.pt'}",
        "judge.backbone={name: ir-tiny, input_size: 32, embedding_size: 32}"])
    report, _ = analyze(config, str(copy))
    assert report["judge"]["per_sample_file"] == "report/judge_similarity.parquet"
    joined = duckdb.sql(
        f"SELECT s.key, s.mixup_parents IS NULL AS plain, j.judge_similarity_inquiry, "
        f"j.judge_similarity_center FROM '{copy}/shards/*.parquet' s "
        f"JOIN '{copy}/report/judge_similarity.parquet' j USING (shard, key)").fetchall()
    synthetic = [row for row in read_dataset_metadata(str(copy), ["key", "real"]).to_pylist()
                 if not row["real"]]
    assert sorted(row[0] for row in joined) == sorted(row["key"] for row in synthetic)
    assert all((inquiry is None) == (not plain) for _, plain, inquiry, _ in joined)
    assert all(-1.0 <= center <= 1.0 for *_, center in joined)
    assert main(["verify", str(copy)]) == 0


def test_analyze_refuses_a_dataset_whose_manifest_disagrees_with_its_shards(dataset, world,
                                                                             tiny_generator,
                                                                             tmp_path, capsys):
    """The card copies the manifest's counts, so analyze verifies first: a sample count edited
    to 99999 is verify's one line and exit 2, and no card claims 99999 images."""
    copy = copy_of(dataset, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["counts"]["samples"] = 99999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    card = (copy / "README.md").read_text()
    capsys.readouterr()
    assert main(["analyze", str(copy), *overrides(world, tiny_generator, copy)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "counts.samples is 99999, expected 14" in error
    assert (copy / "README.md").read_text() == card
