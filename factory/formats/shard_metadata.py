"""Every shard's per-sample metadata as a Parquet file beside its tar: ``shard-000000.parquet``.

The metadata of a sample lives in its tar's ``.json`` member, so selecting the samples of some
measured similarity from a million-image set would mean reading every tar. WebDataset image
datasets (img2dataset, and the tools built on its output) keep a Parquet file beside each tar
instead, one row per sample, so that pandas, pyarrow, DuckDB and Ray Data's ``read_parquet``
filter the metadata without touching an image; these files follow that convention.

One row per sample, in tar order, with the columns of :data:`SHARD_SCHEMA`: the shard's
number, the sample's key and ``.cls`` label, the fields of its ``.json`` (:data:`SAMPLE_COLUMNS`:
the inquiry, the requested m, the similarities E_id measured, identity mixup's parents and
weights, the real-copy flag, the seed, the sampler settings; null where a sample has none) and
where its ``.jpg`` data lies in the tar (``jpg_offset``, ``jpg_size``), so a reader can read
the image with one ranged read. Every row is built from the sample as a reader locates it in
the tar (:class:`~factory.formats.shards.LocatedSample`), so the writer, a rerun that writes a
lost file again from its tar, and ``factory verify``, which compares each file with its tar,
build the same table. The file is written under a temporary name and renamed
(:func:`factory.storage.write_bytes`), before the shard counts as complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory import storage
from factory.errors import FormatError
from factory.formats.confined import ConfinedFolder
from factory.formats.shards import (
    SHARD_DIR,
    LocatedSample,
    dataset_shard_names,
    shard_name,
    shard_pattern,
)

METADATA_FORMAT = "facefactory-sample-metadata/1"
"""What a file of :data:`SHARD_SCHEMA` records itself as (schema metadata ``facefactory``)."""


def _field(*path: str) -> Callable[[dict], Any]:
    """The value at ``path`` in a sample's json (None where any step of it is missing)."""
    def value(meta: dict) -> Any:
        for key in path:
            meta = meta.get(key) if isinstance(meta, dict) else None
        return meta
    return value


def _mixup_weights(meta: dict) -> list[float] | None:
    """The two parents' weights, ``[phi, 1 - phi]`` (SynFace's two-hot target)."""
    phi = _field("mixup", "phi")(meta)
    return None if phi is None else [phi, 1.0 - phi]


SAMPLE_COLUMNS: tuple[tuple[str, pa.DataType, Callable[[dict], Any]], ...] = (
    ("inquiry", pa.string(), _field("inquiry")),
    ("m", pa.float64(), _field("m")),
    ("target_similarity", pa.float64(), _field("target_similarity")),
    ("target_measured_by", pa.string(), _field("target_measured_by")),
    ("similarity_inquiry", pa.float64(), _field("similarity_inquiry")),
    ("similarity_center", pa.float64(), _field("similarity_center")),
    ("real", pa.bool_(), lambda meta: bool(meta.get("real"))),
    ("seed", pa.int64(), _field("seed")),
    ("mixup_partner", pa.string(), _field("mixup", "partner")),
    ("mixup_parents", pa.list_(pa.int64()), _field("mixup", "parents")),
    ("mixup_weights", pa.list_(pa.float64()), _mixup_weights),
    ("mixup_labels", pa.string(), _field("mixup", "labels")),
    ("generator", pa.string(), _field("generator")),
    ("sampler", pa.string(), _field("sampler")),
    ("steps", pa.int32(), _field("steps")),
    ("eta", pa.float64(), _field("eta")),
    ("identity_handoff", pa.float64(), _field("identity_handoff")),
    ("guidance_scale", pa.float64(), _field("guidance_scale")),
    ("guidance_interval", pa.list_(pa.float64()), _field("guidance_interval")),
    ("precision", pa.string(), _field("inference", "precision")),
    ("source_index", pa.int64(), _field("source_index")),
)
"""The columns taken from a sample's json: name, type, and how the value is found there.

``m`` is the requested similarity (null in a measured pool), ``similarity_inquiry`` and
``similarity_center`` what E_id measured (the judge's are in ``factory analyze``'s sidecar,
:mod:`factory.synth.judged`), ``real`` marks an inquiry image copied in, ``mixup_weights`` are
``[phi, 1 - phi]`` on ``mixup_parents``, ``precision`` is the resolved inference precision and
``source_index`` a measured pool's index into its source dataset."""

SHARD_SCHEMA = pa.schema(
    [pa.field("shard", pa.int32(), nullable=False), pa.field("key", pa.string(), nullable=False),
     pa.field("label", pa.int64(), nullable=False),
     *(pa.field(name, kind, nullable=name != "real") for name, kind, _ in SAMPLE_COLUMNS),
     pa.field("jpg_offset", pa.int64(), nullable=False),
     pa.field("jpg_size", pa.int64(), nullable=False)],
    metadata={"facefactory": METADATA_FORMAT})
"""A shard's Parquet file: one row per sample, in tar order."""


def metadata_name(shard_file: str) -> str:
    """The Parquet file beside the shard ``shard_file``: ``shard-000042.parquet``."""
    return shard_file.removesuffix(".tar") + ".parquet"


def metadata_uri(root: str, shard: int) -> str:
    """Where shard ``shard`` of the dataset at ``root`` keeps its per-sample metadata."""
    return storage.join(root, SHARD_DIR, metadata_name(shard_name(shard)))


def sample_columns(metas: Sequence[dict], source: str) -> dict[str, pa.Array]:
    """The :data:`SAMPLE_COLUMNS` of samples whose json objects are ``metas``; FormatError,
    naming ``source`` and the field, for a value the column's type cannot hold."""
    columns = {}
    for name, kind, value in SAMPLE_COLUMNS:
        try:
            columns[name] = pa.array([value(meta) for meta in metas], type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise FormatError(f"{source}: a sample's json does not fit the metadata column "
                              f"{name!r} ({kind}): {str(exc).splitlines()[0]}") from None
    return columns


def metadata_table(shard: int, samples: Sequence[LocatedSample], source: str) -> pa.Table:
    """Shard ``shard``'s rows (:data:`SHARD_SCHEMA`) from its samples as located in its tar,
    ``source``, which errors name."""
    return pa.Table.from_pydict({
        "shard": pa.array([shard] * len(samples), pa.int32()),
        "key": pa.array([sample.key for sample in samples], pa.string()),
        "label": pa.array([sample.label for sample in samples], pa.int64()),
        **sample_columns([sample.meta for sample in samples], source),
        "jpg_offset": pa.array([sample.offset for sample in samples], pa.int64()),
        "jpg_size": pa.array([sample.size for sample in samples], pa.int64()),
    }, schema=SHARD_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as a Parquet file (one row group, column statistics for filter push-down);
    the same table always gives the same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@dataclass
class MetadataWritten:
    """A written metadata file as shard stats and the manifest record it."""

    rows: int
    size_bytes: int
    sha256: str

    def record(self) -> dict[str, Any]:
        return {"rows": self.rows, "size_bytes": self.size_bytes, "sha256": self.sha256}


def write_metadata(uri: str, table: pa.Table) -> MetadataWritten:
    """Write ``table`` to ``uri`` atomically (temporary name, then renamed)."""
    data = parquet_bytes(table)
    storage.write_bytes(uri, data)
    return MetadataWritten(table.num_rows, len(data), hashlib.sha256(data).hexdigest())


def written_metadata(uri: str) -> MetadataWritten:
    """The record of the metadata file already at ``uri`` (a rerun that keeps it)."""
    data = storage.read_bytes(uri)
    try:
        rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{uri}: not a readable Parquet file ({str(exc).splitlines()[0]}); "
                          "remove it to have its shard written again") from None
    return MetadataWritten(rows, len(data), hashlib.sha256(data).hexdigest())


def metadata_listing(files: Sequence[MetadataWritten]) -> dict[str, Any]:
    """A manifest's ``metadata`` entry: the format, the brace pattern of the files, and each
    shard's file (in shard order) with its rows, size and sha256."""
    return {"format": METADATA_FORMAT,
            "pattern": f"{SHARD_DIR}/{metadata_name(shard_pattern(len(files)))}",
            "files": [{"file": metadata_name(shard_name(shard)), **written.record()}
                      for shard, written in enumerate(files)]}


def read_metadata(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The shard metadata file at ``uri`` (only ``columns`` when given), its schema checked;
    FormatError of one line naming the file when it is missing, unreadable or another
    schema's."""
    if not storage.exists(uri):
        raise FormatError(f"{uri}: missing (a shard's per-sample metadata, written with it; a "
                          "rerun of the stage that wrote the dataset writes it again)")
    names = list(columns or SHARD_SCHEMA.names)
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=names)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{uri}: not a readable Parquet file of per-sample metadata "
                          f"({str(exc).splitlines()[0]})") from None
    expected = pa.schema([SHARD_SCHEMA.field(name) for name in names])
    if not table.schema.equals(expected, check_metadata=False):
        found = ", ".join(f"{field.name}: {field.type}" for field in table.schema)
        raise FormatError(f"{uri}: expected the columns of {METADATA_FORMAT}, found {found}")
    return table


def read_dataset_metadata(root: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every sample's metadata row of the dataset at ``root`` (only ``columns`` when given):
    the files beside the shards every reader reads (the manifest's, in its order), whose
    links may not lead out of the dataset."""
    folder = ConfinedFolder(root)
    return pa.concat_tables([
        read_metadata(folder.join(SHARD_DIR, metadata_name(name)), columns)
        for name in dataset_shard_names(root)])


def metadata_difference(stored: pa.Table, expected: pa.Table) -> str | None:
    """Why a shard's metadata file ``stored`` is not the table its tar gives, ``expected``:
    another row count, or the first row whose key, image location or any other column differs
    (None when they are the same)."""
    if stored.num_rows != expected.num_rows:
        return f"holds {stored.num_rows} rows, the shard {expected.num_rows} samples"
    keys = expected["key"].to_pylist()
    first = ["key", "jpg_offset", "jpg_size"]
    for name in first + [name for name in SHARD_SCHEMA.names if name not in first]:
        if stored[name].equals(expected[name]):
            continue
        for row, (found, wanted) in enumerate(zip(stored[name].to_pylist(),
                                                  expected[name].to_pylist())):
            if found != wanted:
                return (f"row {row} (key {keys[row]!r}): {name} is {found!r}, the shard's is "
                        f"{wanted!r}")
    return None
