"""Ray Data reads the shards' Parquet metadata with a filter pushed down to the scan, and the
tars alone with the documented ``file_extensions``; the dataset and the other readers' checks
are the unit tests' (tests/unit/synth/test_parquet_metadata.py)."""

from __future__ import annotations

import pyarrow.dataset as pads

from factory.formats.shard_metadata import read_dataset_metadata
from unit.synth.test_parquet_metadata import COLUMNS, dataset, similarity_range  # noqa: F401


def test_ray_data_read_parquet_with_a_filter_gives_the_same_rows(ray_two_cpus, dataset):
    import ray
    from ray.data.expressions import col, lit

    low, high = similarity_range(dataset)
    selected = ray.data.read_parquet(str(dataset / "shards")).filter(  # pushed down to the scan
        expr=(col("similarity_center") >= lit(low)) & (col("similarity_center") <= lit(high))
    ).select_columns(COLUMNS).take_all()
    expected = read_dataset_metadata(str(dataset), COLUMNS).filter(
        (pads.field("similarity_center") >= low) & (pads.field("similarity_center") <= high))
    assert sorted(selected, key=lambda row: row["key"]) == sorted(expected.to_pylist(),
                                                                key=lambda row: row["key"])
    tars = ray.data.read_webdataset(str(dataset / "shards"), file_extensions=["tar"])
    assert tars.count() == 14  # the documented read of the tars skips the Parquet files
