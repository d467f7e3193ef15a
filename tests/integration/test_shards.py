"""Ray Data's WebDataset reader agrees with the factory's shard layout (the writer and the other
readers: tests/unit/formats/test_shards.py)."""

import numpy as np
import pytest

from factory import storage
from helpers import ORIGINAL_LABELS, shard_meta, write_two_shards


@pytest.fixture
def root(tmp_path):
    """A dataset of two shards, samples 0-3 and 4-7."""
    return write_two_shards(tmp_path / "synthetic")


def test_ray_data_reads_the_shards(ray_two_cpus, root):
    import ray

    # A leftover temporary file is skipped: Ray ignores names starting with "." or "_".
    (root / "shards" / f"{storage.TEMP_MARKER}x-shard-000002.tar").write_bytes(b"partial")
    rows = ray.data.read_webdataset(str(root / "shards")).take_all()
    by_key = {row["__key__"]: row for row in rows}
    assert sorted(by_key) == [f"{index:06d}" for index in range(8)] and len(rows) == 8
    for index in range(8):
        row = by_key[f"{index:06d}"]
        # Ray decodes by default: json to a dict, cls to an int, jpg to an HxWx3 uint8 array.
        assert row["json"] == shard_meta(index) and row["cls"] == ORIGINAL_LABELS[index]
        assert row["jpg"].shape == (16, 16, 3) and row["jpg"].dtype == np.uint8
