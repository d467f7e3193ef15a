"""``factory pipeline``: every stage end to end from one config, then one results table.

Stages so far: the face world (training set, held-out inquiries and benchmarks), the raw-pixel
baseline, a recognizer trained on the face world's real training set (Ray Train) evaluated next
to a randomly initialised network of the same architecture, and the CemiFace generator: a short
training run continued from ``generator.init_from`` (to show the stage working) and the
m-compliance report of ``generator.checkpoint`` (the shipped face-world generator in the
quickstart); then, with that checkpoint, a synthetic dataset (Ray Data, WebDataset shards), its
analysis, and a recognizer of the same recipe trained on it, evaluated next to the real-trained
one with GtR. Each stage reads only what the previous one wrote, and a rerun reuses finished
stages (the face world, the recognizer's and generator's checkpoints).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from factory import layout, storage
from factory.config import FactoryConfig
from factory.eval.baseline import run_pixel_baseline
from factory.eval.benchmarks import backbone_embedder, evaluate_embedder, load_benchmarks
from factory.eval.evaluate import Evaluation, evaluate_checkpoint
from factory.eval.generator_report import generator_report, report_text, sampler_text
from factory.eval.verification import VerificationResult
from factory.faceworld.build import build_faceworld, print_summary
from factory.formats.dataset import open_training_data
from factory.models.iresnet import build_backbone
from factory.provenance import code_version, platform_record, platform_text
from factory.report import format_table
from factory.synth.analyze import analyze
from factory.synth.synthesize import synthesize
from factory.train.generator import train_generator
from factory.train.recognizer import train_recognizer


class StageClock:
    """Wall time per pipeline stage, printed as a table at the end (where the minutes went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def table(self) -> str:
        total = sum(self.seconds.values())
        rows = [[name, f"{value:.0f}", f"{100 * value / total:.0f}%"]
                for name, value in self.seconds.items()]
        rows.append(["total", f"{total:.0f}", "100%"])
        return format_table(["stage", "seconds", "share"], rows)


def random_init_results(config: FactoryConfig) -> list[VerificationResult]:
    """The configured backbone with random weights: what the architecture alone achieves."""
    torch.manual_seed(config.recognizer.seed)
    backbone = build_backbone(**config.recognizer.backbone.model_dump())
    benchmarks = load_benchmarks(layout.baseline_benchmark_uris(config),
                                 config.recognizer.backbone.input_size)
    return evaluate_embedder(backbone_embedder(backbone), benchmarks)


def average(results: list[VerificationResult]) -> float:
    """AVG: the mean 10-fold accuracy over the benchmarks, in percent."""
    return 100 * sum(r.accuracy for r in results) / len(results)


def results_table(columns: dict[str, list[VerificationResult]]) -> str:
    """Benchmarks as rows, one column per model, accuracy in percent, AVG last."""
    names = [r.name for r in next(iter(columns.values()))]
    rows = [[name, *(100 * results[i].accuracy for results in columns.values())]
            for i, name in enumerate(names)]
    rows.append(["AVG", *(average(results) for results in columns.values())])
    return format_table(["benchmark (10-fold acc %)", *columns], rows)


def run_generator_stage(config: FactoryConfig, cli_address: str | None,
                        clock: StageClock) -> dict:
    """A short training run continued from ``generator.init_from`` (when set), then the
    m-compliance report of ``generator.checkpoint``. Skipped when no checkpoint is named."""
    if not config.generator.checkpoint:
        print("== generator: skipped (no generator.checkpoint in this config)")
        return {}
    document = {}
    if config.generator.init_from:
        print(f"== train generator, continuing {config.generator.init_from} (Ray Train)")
        with clock.stage("generator training"):
            short_run = train_generator(config, cli_address)
        document["short_run"] = short_run.checkpoint
        print(f"continued run: step {short_run.metrics.get('step')}, loss "
              f"{short_run.metrics.get('loss', float('nan')):.4f}; loss curve "
              f"{storage.join(short_run.checkpoint, 'loss_curve.png')}")
    print(f"== generator m-compliance: {config.generator.checkpoint}")
    with clock.stage("generator report"):
        compliance, report_dir = generator_report(config)
    document.update(checkpoint=config.generator.checkpoint, report=report_dir,
                    compliance=compliance.summary(), printed=report_text(compliance, report_dir))
    return document


def synthetic_recognizer_config(config: FactoryConfig, dataset: str) -> FactoryConfig:
    """The real-data recognizer's recipe, trained on the synthetic dataset under its own run
    name."""
    synthetic = config.model_copy(deep=True)
    synthetic.recognizer.train_on(dataset)
    synthetic.recognizer.run_name = f"{config.recognizer.run_name}-synthetic"
    synthetic.recognizer.optimizer.epochs = config.pipeline.synthetic_epochs or \
        config.recognizer.optimizer.epochs
    return synthetic


def run_synthetic_stage(config: FactoryConfig, cli_address: str | None,
                        clock: StageClock) -> tuple[dict, Evaluation]:
    """Synthesise with the generator checkpoint, analyse, train and evaluate on the result."""
    print(f"== synthesize with {layout.synthesis_checkpoint_uri(config)} (Ray Data actors)")
    with clock.stage("synthesis"):
        run = synthesize(config, cli_address)
    print("== analyze the synthetic dataset")
    with clock.stage("analysis"):
        report, text = analyze(config, run.out)
    print(text)
    synthetic = synthetic_recognizer_config(config, run.out)
    print(f"== train recognizer on the synthetic dataset ({synthetic.recognizer.run_name})")
    with clock.stage("synthetic-trained recognizer"):
        trained = train_recognizer(synthetic, cli_address)
    with clock.stage("evaluation"):
        evaluation = evaluate_checkpoint(synthetic, trained.checkpoint)
    document = {"dataset": run.out, "counts": run.manifest["counts"],
                "images_per_s": run.images_per_s, "analysis": report,
                "recognizer_checkpoint": trained.checkpoint}
    return document, evaluation



EXPERIMENTS_PAGE = "docs/experiments/README.md"


def gtr_line(gtr: float, counts: dict, real_images: int, real_identities: int) -> str:
    """The printed GtR with what it compares: identities x images on each side. The quickstart's
    two sides differ in volume, so the line says so and points to the volume-matched figure."""
    synthetic_identities, synthetic_images = counts["identities"], counts["synthetic_images"]
    return (f"GtR (real-trained AVG - synthetic-trained AVG) = {gtr:.2f} points, comparing "
            f"{synthetic_identities} synthetic identities x "
            f"{synthetic_images / max(1, synthetic_identities):g} images ({synthetic_images} "
            f"images) with {real_identities} real identities x "
            f"{real_images / max(1, real_identities):g} images ({real_images} images): unequal "
            f"volumes, not CemiFace's volume-matched GtR, which is on {EXPERIMENTS_PAGE} "
            "(`make experiments`)")


def run_pipeline(config: FactoryConfig, cli_address: str | None = None) -> str:
    """Run every stage; returns the printed results table (also saved under ``workdir``)."""
    clock = StageClock()
    if config.faceworld is None:
        print(f"== no face world (faceworld: null; {code_version()}): real data throughout")
    else:
        print(f"== face world ({code_version()})")
        with clock.stage("face world"):
            print_summary(build_faceworld(config))

    print("== raw-pixel baseline")
    with clock.stage("baselines"):
        columns = {"raw pixels": run_pixel_baseline(config)}
        columns["random init"] = random_init_results(config)

    training_sets = " + ".join(layout.recognizer_data_uris(config))
    print(f"== train recognizer on {training_sets} ({config.recognizer.backbone.name}, Ray Train)")
    with clock.stage("real-trained recognizer"):
        real_run = train_recognizer(config, cli_address)
    with clock.stage("evaluation"):
        columns["real-trained"] = evaluate_checkpoint(config, real_run.checkpoint).results

    generator_document = run_generator_stage(config, cli_address, clock)
    synthetic_document: dict = {}
    if generator_document:
        synthetic_document, evaluation = run_synthetic_stage(config, cli_address, clock)
        columns["synthetic-trained"] = evaluation.results
        synthetic_document["gtr"] = average(columns["real-trained"]) - average(evaluation.results)

    table = (results_table(columns)
             + f"\ndriver platform: {platform_text(platform_record())}")
    print("\n== results (chance is 50%)")
    print(table)
    if synthetic_document:
        real = open_training_data(layout.recognizer_data_uris(config))
        line = gtr_line(synthetic_document["gtr"], synthetic_document["counts"], len(real),
                        real.num_classes)
        print(f"synthetic data: {sampler_text(config.synthesis.sampling.model_dump())}")
        print(line)
        table += "\n" + line
    if generator_document:
        print(f"\ngenerator checkpoint used downstream: {generator_document['checkpoint']}")
        print(generator_document.pop("printed"))
    print("\n== where the time went (wall clock)")
    print(clock.table())
    document = {
        "stage_seconds": clock.seconds,
        "code_version": code_version(),
        "platform": platform_record(),
        "recognizer_checkpoint": real_run.checkpoint,
        "generator": generator_document,
        "synthetic": synthetic_document,
        "columns": {name: [r.summary() for r in results] for name, results in columns.items()},
        "config": config.model_dump(mode="json"),
    }
    storage.write_text(storage.join(config.workdir, "results.json"), json.dumps(document, indent=2))
    storage.write_text(storage.join(config.workdir, "results.txt"), table + "\n")
    return table
