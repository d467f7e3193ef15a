"""Where each stage reads and writes: the run folder layout, decided from a config.

A location the config leaves empty defaults to a folder under ``workdir``, or to a set of the
face world; every such default is decided here, so this is the whole tree::

    <workdir>/faceworld/                  faceworld.out
        train/ inquiry/ reference/        training set, held-out inquiries, real reference
        benchmarks/<name>.bin             test benchmarks
        validation/<name>.bin             validation benchmarks
    <workdir>/recognizer/<run_name>/final recognizer.storage; the published checkpoint
    <workdir>/generator/<run_name>/final  generator.storage; the published checkpoint
    <workdir>/synthetic/                  synthesis.out (inside it: factory.synth.layout)
    <workdir>/measured/                   a sweep's measured real pool (sweep.measure.data)
    <workdir>/sweeps/<sweep name>/        sweep.storage

With ``faceworld: null`` there is no face-world default: a function that needs one raises
:class:`ConfigError` naming the key to set. The config itself (:mod:`factory.config`) only
holds values; it never imports this module's functions, only its two folder names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from factory import storage
from factory.errors import ConfigError

if TYPE_CHECKING:  # the config re-exports the folder names below, so it is imported after us
    from factory.config import FactoryConfig

VALIDATION_DIR = "validation"
"""The face world's folder of validation benchmarks (beside ``benchmarks/``, the test ones)."""

FINAL_DIR = "final"
"""Where a training run publishes its last checkpoint: ``<storage>/<run_name>/final``."""


def faceworld_uri(config: FactoryConfig) -> str:
    if config.faceworld is None:
        raise ConfigError("faceworld: null in this config, so there is no face world to "
                          "build or read")
    return config.faceworld.out or storage.join(config.workdir, "faceworld")


def _given(config: FactoryConfig, key: str, value: str, default: Callable[[], str],
           what: str) -> str:
    """``value`` when set; else the face-world ``default``, unless the config has no face
    world (``faceworld: null``), where the key is required and the error names it."""
    if value:
        return value
    if config.faceworld is None:
        raise ConfigError(f"{key}: required, the URI of {what} (this config has "
                          "faceworld: null, so there is no face-world default)")
    return default()


def _faceworld_set(config: FactoryConfig, name: str) -> Callable[[], str]:
    """The face world's set ``name`` (train, inquiry), resolved only when called."""
    return lambda: storage.join(faceworld_uri(config), name)


def benchmark_uris(config: FactoryConfig) -> list[str]:
    """The face world's benchmark files, in config order."""
    root = storage.join(faceworld_uri(config), "benchmarks")
    return [storage.join(root, f"{spec.name}.bin") for spec in config.faceworld.benchmarks]


def validation_benchmark_uris(config: FactoryConfig) -> list[str]:
    """The face world's validation benchmark files, in config order; none without a face
    world (give ``evaluate.validation_benchmarks`` then)."""
    if config.faceworld is None:
        return []
    root = storage.join(faceworld_uri(config), VALIDATION_DIR)
    return [storage.join(root, f"{spec.name}.bin")
            for spec in config.faceworld.validation_benchmarks]


def evaluation_benchmark_uris(config: FactoryConfig) -> list[str]:
    """``evaluate.benchmarks``, else the face world's benchmark files."""
    if config.evaluate.benchmarks:
        return list(config.evaluate.benchmarks)
    _given(config, "evaluate.benchmarks", "", lambda: "", "your .bin benchmarks (a list)")
    return benchmark_uris(config)


def baseline_benchmark_uris(config: FactoryConfig) -> list[str]:
    """What the baselines (raw pixels, random init) measure: the face world's benchmarks,
    or with no face world ``evaluate.benchmarks``."""
    if config.faceworld is None:
        return evaluation_benchmark_uris(config)
    return benchmark_uris(config)


def recognizer_data_uri(config: FactoryConfig) -> str:
    return _given(config, "recognizer.data", config.recognizer.data,
                  _faceworld_set(config, "train"), "the recognizer's training set")


def recognizer_data_uris(config: FactoryConfig) -> list[str]:
    """The recognizer's whole training set: ``recognizer.data`` then ``extra_data``; a set
    named twice is refused (it would train every identity twice, as distinct classes)."""
    uris = [recognizer_data_uri(config), *config.recognizer.extra_data]
    repeated = [uri for index, uri in enumerate(uris) if uri in uris[:index]]
    if repeated:
        raise ConfigError(f"recognizer.extra_data: {repeated[0]} is already part of the "
                          "training set (recognizer.data or an earlier entry); name each "
                          "set once")
    return uris


def recognizer_storage_uri(config: FactoryConfig) -> str:
    return config.recognizer.storage or storage.join(config.workdir, "recognizer")


def recognizer_final_uri(config: FactoryConfig) -> str:
    """Where ``train-recognizer`` publishes this config's final checkpoint."""
    return storage.join(recognizer_storage_uri(config), config.recognizer.run_name, FINAL_DIR)


def generator_data_uri(config: FactoryConfig) -> str:
    return _given(config, "generator.data", config.generator.data,
                  _faceworld_set(config, "train"), "the generator's training images")


def inquiry_data_uri(config: FactoryConfig) -> str:
    return _given(config, "generator.compliance.data", config.generator.compliance.data,
                  _faceworld_set(config, "inquiry"), "held-out inquiry images for m-compliance")


def real_reference_uri(config: FactoryConfig) -> str:
    """``generator.compliance.real_reference``, else the face world's reference set; empty
    with neither (the report then says it has no real row)."""
    if config.generator.compliance.real_reference or config.faceworld is None:
        return config.generator.compliance.real_reference
    return storage.join(faceworld_uri(config), "reference")


def identity_encoder_uri(config: FactoryConfig) -> str:
    """E_id: named, or this config's recognizer run; with no face world it must be named
    (a recognizer checkpoint or model.pt), so the run cannot train on a default."""
    return _given(config, "generator.identity_encoder", config.generator.identity_encoder,
                  lambda: recognizer_final_uri(config),
                  "E_id (a recognizer checkpoint or model.pt)")


def generator_storage_uri(config: FactoryConfig) -> str:
    return config.generator.storage or storage.join(config.workdir, "generator")


def generator_final_uri(config: FactoryConfig) -> str:
    """Where ``train-generator`` publishes this config's final checkpoint."""
    return storage.join(generator_storage_uri(config), config.generator.run_name, FINAL_DIR)


def generator_checkpoint_uri(config: FactoryConfig) -> str:
    return config.generator.checkpoint or generator_final_uri(config)


def synthesis_checkpoint_uri(config: FactoryConfig) -> str:
    return config.synthesis.checkpoint or generator_checkpoint_uri(config)


def synthesis_inquiry_uri(config: FactoryConfig) -> str:
    return _given(config, "synthesis.inquiry.data", config.synthesis.inquiry.data,
                  _faceworld_set(config, "inquiry"), "the inquiry images to synthesise from")


def threshold_benchmark_uris(config: FactoryConfig) -> list[str]:
    return config.synthesis.threshold_benchmarks or validation_benchmark_uris(config)


def synthesis_out_uri(config: FactoryConfig) -> str:
    return config.synthesis.out or storage.join(config.workdir, "synthetic")


def sweep_pool_uri(config: FactoryConfig) -> str:
    if config.sweep.pool:
        return config.sweep.pool
    if config.sweep.measure.data:
        return storage.join(config.workdir, "measured")
    return synthesis_out_uri(config)


def sweep_storage_uri(config: FactoryConfig) -> str:
    return config.sweep.storage or storage.join(config.workdir, "sweeps")
