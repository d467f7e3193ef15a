"""``factory evaluate``: a recognizer checkpoint against .bin benchmarks, with GtR.

Writes ``results.json`` and ``roc.png`` next to the checkpoint (or to ``evaluate.out``), logs
them to an MLflow run, and prints per-benchmark accuracy. GtR (gap to real) is the AVG of a
named real-data run, read from MLflow, minus this model's AVG, in points.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import torch

from factory import layout, storage
from factory.checkpoints.recognizer import load_backbone
from factory.config import FactoryConfig
from factory.errors import UserError
from factory.eval.benchmarks import (
    accuracy_metrics,
    backbone_embedder,
    evaluate_embedder,
    evaluation_benchmarks,
    load_benchmarks,
)
from factory.eval.verification import VerificationResult, plot_roc
from factory.provenance import code_version, platform_record
from factory.report import format_table
from factory.runtime import mlflow_tracking_uri
from factory.tracking import RunTracker


@dataclass
class Evaluation:
    """Per-benchmark results of one model plus AVG and, with a reference, GtR."""

    checkpoint: str
    results: list[VerificationResult]
    metrics: dict[str, float] = field(default_factory=dict)
    gap_to_real: float | None = None


def default_checkpoint(config: FactoryConfig) -> str:
    return layout.recognizer_final_uri(config)


def reference_average(config: FactoryConfig, run_name: str) -> float:
    """AVG accuracy of the latest finished MLflow run with this name in the experiment."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri(config.runtime))
    runs = mlflow.search_runs(
        experiment_names=[config.runtime.experiment],
        filter_string=f"attributes.run_name = '{run_name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    if runs.empty or "metrics.avg_acc" not in runs or runs["metrics.avg_acc"].isna().all():
        raise UserError(
            f"evaluate.reference_run: no finished run named {run_name!r} with avg_acc in "
            f"experiment {config.runtime.experiment!r}"
        )
    return float(runs["metrics.avg_acc"].dropna().iloc[0])


def evaluate_checkpoint(config: FactoryConfig, checkpoint: str | None = None) -> Evaluation:
    """Evaluate a checkpoint (default: the configured recognizer run's final one)."""
    cfg = config.evaluate
    checkpoint = checkpoint or cfg.checkpoint or default_checkpoint(config)
    if not storage.exists(checkpoint):
        raise UserError(f"{checkpoint}: checkpoint not found (train a recognizer first)")
    uris = evaluation_benchmarks(config)
    if not uris:
        raise UserError("evaluate.benchmarks: none given and no face-world benchmarks found")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_backbone(checkpoint, cfg.backbone).to(device)
    benchmarks = load_benchmarks(uris, backbone.config["input_size"])
    results = evaluate_embedder(backbone_embedder(backbone, device), benchmarks, cfg.batch_size)
    evaluation = Evaluation(checkpoint, results, accuracy_metrics(results))
    if cfg.reference_run:
        reference = reference_average(config, cfg.reference_run)
        evaluation.gap_to_real = reference - evaluation.metrics["avg_acc"]
        evaluation.metrics["gtr"] = evaluation.gap_to_real
    _save(config, evaluation)
    return evaluation


def _save(config: FactoryConfig, evaluation: Evaluation) -> None:
    checkpoint = evaluation.checkpoint
    out = config.evaluate.out or storage.join(
        checkpoint if storage.is_dir(checkpoint) else os.path.dirname(checkpoint), "evaluation"
    )
    document = {
        "checkpoint": checkpoint,
        "metrics": evaluation.metrics,
        "benchmarks": [r.summary() for r in evaluation.results],
        "code_version": code_version(),
        "platform": platform_record(),
        "config": config.evaluate.model_dump(mode="json"),
    }
    storage.write_text(storage.join(out, "results.json"),
                       json.dumps(document, indent=2, allow_nan=False))
    tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment,
                         config.runtime.mlflow_artifact_location)
    tracker.start(
        "evaluate", params={"evaluate": document["config"], "checkpoint": checkpoint},
        tags={"code_version": document["code_version"], "stage": "evaluate"},
    )
    tracker.log_metrics(evaluation.metrics)
    with tempfile.TemporaryDirectory() as directory:
        png = plot_roc(evaluation.results, os.path.join(directory, "roc.png"))
        with open(png, "rb") as stream:
            storage.write_bytes(storage.join(out, "roc.png"), stream.read())
        tracker.log_artifact(png)
    tracker.end()


def print_evaluation(evaluation: Evaluation) -> None:
    rows = [[r.name, 100 * r.accuracy, 100 * r.accuracy_std,
             100 * r.tar_at_far.get(1e-3, float("nan"))] for r in evaluation.results]
    rows.append(["AVG", evaluation.metrics["avg_acc"], None, None])
    print(f"evaluation of {evaluation.checkpoint}")
    print(format_table(["benchmark", "acc %", "std", "TAR@FAR=1e-3 %"], rows))
    if evaluation.gap_to_real is not None:
        print(f"GtR (gap to real): {evaluation.gap_to_real:.2f} points")
