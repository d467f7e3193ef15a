"""Synthesis pieces that need no actor pool: sampling now or encoding later gives the same
samples, and a rerun's clean-up of temporaries tolerates one vanishing under it (whole runs of
``factory synthesize`` and ``factory analyze``: tests/integration/test_synthesize.py)."""

from __future__ import annotations

from factory import layout
from factory.formats.dataset import open_dataset
from factory.models.inference import prepare
from factory.synth import synthesize as synthesize_module
from factory.synth.plan import shard_items
from factory.synth.sampler import encode_samples, sample_shard
from factory.synth.synthesize import make_plan
from factory.checkpoints.generator import load_generator
from helpers import synthesis_config


def test_encoding_later_gives_the_same_samples_inquiry_copies_included(world, tiny_generator):
    config = synthesis_config(world, tiny_generator, world / "unused",
                              "synthesis.include_inquiry_images=true")
    generator = load_generator(str(tiny_generator))
    identities, _ = make_plan(config, generator)
    item = shard_items(identities, 2)[0]
    settings = prepare(generator, config.synthesis.sampling, "cpu")
    inquiries = open_dataset(layout.synthesis_inquiry_uri(config))
    now = sample_shard(generator, item, config.synthesis, settings, inquiries)
    later = sample_shard(generator, item, config.synthesis, settings, inquiries, encode=False)
    assert later.pixels is not None and not any(sample.jpg for sample in later.samples)
    encoded = encode_samples(later, config.synthesis.jpeg_quality)
    assert encoded.pixels is None
    assert any(sample.meta["real"] for sample in now.samples)
    assert encoded.samples == now.samples


def test_a_temporary_that_vanishes_while_a_rerun_cleans_up_is_not_an_error(tmp_path,
                                                                           monkeypatch):
    # a writer of the killed run, a moment from exiting, renames its own temporary between
    # the rerun's listing of the folder and its delete (seen on the object store in CI)
    from factory import storage

    for folder in ("shards", "stats"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{storage.TEMP_MARKER}left-shard-000003.tar").write_bytes(b"x")
    (tmp_path / "stats" / "shard-000001.json").write_text("{}")
    listdir = storage.listdir
    monkeypatch.setattr(storage, "listdir", lambda uri: [
        *listdir(uri), f"{storage.TEMP_MARKER}gone-shard-000002.tar"])
    assert synthesize_module.remove_stale_temporaries(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["shard-000001.json"]
