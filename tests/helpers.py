"""What test modules of both kinds (``tests/unit``, ``tests/integration``) share that is not a
fixture: the repository's root, the CLI's one-line-error check, the tiny synthesis config and the
two-shard dataset. Importable as ``helpers`` because ``tests/`` is on ``sys.path`` (it is not a
package; see ``tests/unit/__init__.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
"""The repository's root: test modules sit at different depths under tests/."""


# -- the CLI's errors ------------------------------------------------------------------------------

def run_main(capsys, *argv):
    """``factory *argv`` in this process: its exit code and what it wrote to stderr."""
    from factory.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *needles):
    """Exit code 2 and one line on stderr, no traceback, containing every needle."""
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


# -- synthesis on the tiny face world ------------------------------------------------------------

def synthesis_config(world, generator, out, *extra):
    """A 3-shard synthesis of the tiny face world (6 identities x 3 images, 2 actors, 2 steps)
    with ``generator``, into ``out``; ``extra`` overrides come last."""
    from factory.config import load_config

    return load_config(None, [
        f"workdir={world}", f"synthesis.checkpoint={generator}", f"synthesis.out={out}",
        "synthesis.inquiry.identities=4", "synthesis.inquiry.max_similarity=1.0",
        "synthesis.inquiry.mixup_identities=2", "synthesis.images_per_identity=3",
        "synthesis.identities_per_shard=2", "synthesis.sampling.steps=2",
        "synthesis.sampling.batch_size=4", "synthesis.m.kind=values",
        "synthesis.m.values=[1.0,0.0,-0.5]", "synthesis.actors.num_actors=2",
        "synthesis.actors.cpus_per_actor=0.5", "synthesis.actors.threads_per_actor=1",
        "synthesis.privacy.threshold=0.9", "synthesis.privacy.false_match_fpr=1e-3",
        "faceworld.validation_benchmarks=[{name: val_tiny, identities: 20, pairs: 40}]",
        f"runtime.mlflow_tracking_uri=sqlite:///{world}/mlflow.db", *extra])


# -- a two-shard dataset ---------------------------------------------------------------------------

ORIGINAL_LABELS = [30, 10, 20, 30, 10, 20, 30, 10]  # sample i has ORIGINAL_LABELS[i]
SHARD_M_VALUES = [0.0, 0.3, 0.6, 0.9]  # sample i has m = SHARD_M_VALUES[i % 4]


def shard_meta(index: int) -> dict:
    """The metadata of sample ``index`` (0-7) of :func:`write_two_shards`' dataset."""
    return {"label": ORIGINAL_LABELS[index], "inquiry": f"real-{index % 3}",
            "m": SHARD_M_VALUES[index % 4], "similarity_inquiry": 0.5,
            "similarity_center": index / 10, "seed": 1000 + index,
            "mixup": None if index % 2 else {"partner": "p", "phi": 0.25},
            "generator": "test", "sampler": "ddim", "steps": 3}


def shard_samples(indices, seed=0):
    """Samples ``indices`` with random 16 px JPEGs drawn from ``seed``."""
    from factory.formats.images import encode_jpeg
    from factory.formats.shards import ShardSample

    rng = np.random.default_rng(seed)
    return [ShardSample(f"{index:06d}", encode_jpeg(rng.integers(0, 256, (16, 16, 3), np.uint8)),
                        ORIGINAL_LABELS[index], shard_meta(index)) for index in indices]


def write_two_shards(root: Path) -> Path:
    """A dataset of two shards at ``root``, samples 0-3 (seed 0) and 4-7 (seed 1)."""
    from factory.formats.shards import shard_name, write_shard

    write_shard(str(root / "shards" / shard_name(0)), shard_samples(range(4), seed=0))
    write_shard(str(root / "shards" / shard_name(1)), shard_samples(range(4, 8), seed=1))
    return root


# -- synthesis in the test's own process (no Ray) ------------------------------------------------

def small_synthesis_overrides(world, generator, out, *extra):
    """A 2-shard synthesis (4 identities x 2 images, m 1 and 0, 2 DDIM steps) of the tiny
    world with ``generator``, its MLflow store beside ``out``; ``extra`` overrides follow."""
    return [f"workdir={world}", f"synthesis.checkpoint={generator}", f"synthesis.out={out}",
            "synthesis.inquiry.identities=4", "synthesis.inquiry.max_similarity=1.0",
            "synthesis.images_per_identity=2", "synthesis.identities_per_shard=2",
            "synthesis.sampling.steps=2", "synthesis.sampling.batch_size=4",
            "synthesis.m.values=[1.0, 0.0]", "synthesis.actors.threads_per_actor=1",
            f"runtime.mlflow_tracking_uri=sqlite:///{out.parent}/mlflow.db", *extra]


def shards_in_this_process(config, todo, checkpoint, out, cli_address):
    """The actor pool's work without Ray: the same actor class, one shard at a time (stands in
    for ``factory.synth.synthesize.run_actor_pool``)."""
    from factory import layout
    from factory.synth import pool

    actor = pool.ShardSynthesizer(config.synthesis.model_dump(mode="json"), checkpoint, out,
                                  layout.synthesis_inquiry_uri(config))
    images = sum(int(actor({key: np.array([value]) for key, value in item.to_row().items()})
                     ["images"][0]) for item in todo)
    return pool.PoolRun(images=images, seconds=1.0, shard_seconds=1.0, startup_seconds=0.0)


def inquiries_in_this_process(config, cli_address=None):
    """The inquiry-embedding stage without Ray: the same embeddings, computed here (stands in
    for ``factory.synth.synthesize.embed_inquiries_on_actors``)."""
    from factory import layout
    from factory.checkpoints.generator import load_generator
    from factory.synth.inquiries import embed_inquiries_here

    return embed_inquiries_here(config, load_generator(layout.synthesis_checkpoint_uri(config)))


def synthesize_in_this_process(patch):
    """Make ``factory synthesize`` run its Ray stages in this process (``patch``: a
    ``pytest.MonkeyPatch``)."""
    from factory.synth import synthesize as synthesize_module

    patch.setattr(synthesize_module, "run_actor_pool", shards_in_this_process)
    patch.setattr(synthesize_module, "embed_inquiries_on_actors", inquiries_in_this_process)
