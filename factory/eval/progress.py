"""``factory generator-progress``: m-compliance against training steps, for both samplers.

Measures every checkpoint of a generator run (each sub-folder of ``DIR`` holding a generator
checkpoint; default: this config's run folder, which keeps them all when
``generator.keep_checkpoints`` is null) and the checkpoint the run started from
(``generator.init_from``, step 0), with CemiFace's sampler and with the identity hand-off
(``generator.compliance.progress_handoff``), under the compliance protocol of the config, by E_id
and the judge. Writes ``progress.json`` and ``progress.png`` (Spearman and the mean similarity at
m = 1 against steps) to ``<workdir>/generator-progress`` (or ``evaluate.out``) and MLflow.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

from factory import layout, storage
from factory.config import FINAL_DIR, FactoryConfig
from factory.eval.compliance import first_image_per_identity, measure_compliance
from factory.eval.generator_figures import agg_figure
from factory.formats.dataset import open_dataset
from factory.provenance import code_version
from factory.runtime import mlflow_tracking_uri
from factory.tracking import RunTracker
from factory.checkpoints.recognizer import load_judge
from factory.checkpoints.encoder import META_FILE
from factory.checkpoints.generator import load_generator


def run_checkpoints(folder: str) -> list[str]:
    """The generator checkpoints directly under ``folder``, by training step (``final/``, a
    copy of the last one, is skipped)."""
    found = []
    for name in storage.listdir(folder):
        if name == FINAL_DIR:
            continue
        meta = storage.join(folder, name, META_FILE)
        if storage.exists(meta):
            found.append((int(json.loads(storage.read_text(meta))["step"]),
                          storage.join(folder, name)))
    return [uri for _, uri in sorted(found)]


def progress_png(rows: list[dict[str, Any]], path: str, started_from: str) -> str:
    """Spearman (left) and the mean similarity at m = 1 (right) against steps, one line per
    sampler and recognizer (judge solid, E_id dashed)."""
    figure = agg_figure(10, 3.8)
    spearman_axes, similarity_axes = figure.subplots(1, 2)
    series = sorted({(row["sampler"], row["recognizer"]) for row in rows})
    for sampler, recognizer in series:
        points = [row for row in rows if (row["sampler"], row["recognizer"]) == (sampler, recognizer)]
        steps = [row["step"] for row in points]
        style = {"linestyle": "-" if recognizer == "judge" else "--", "marker": "o",
                 "markersize": 3, "label": f"{sampler}, {recognizer}"}
        spearman_axes.plot(steps, [row["spearman"] for row in points], **style)
        similarity_axes.plot(steps, [row["similarity_at_m1"] for row in points], **style)
    spearman_axes.axhline(0.8, color="gray", linestyle=":", linewidth=1)
    similarity_axes.axhline(0.6, color="gray", linestyle=":", linewidth=1)
    spearman_axes.set_title("Spearman(requested m, measured similarity)", fontsize=9)
    similarity_axes.set_title("mean similarity to the inquiry at m = 1", fontsize=9)
    for axes in (spearman_axes, similarity_axes):
        axes.set_xlabel(f"steps after {os.path.basename(started_from.rstrip('/')) or 'start'}")
        axes.set_ylim(-0.2, 1.0)
        axes.grid(True, alpha=0.3)
    similarity_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def generator_progress(config: FactoryConfig, folder: str | None = None
                       ) -> tuple[list[dict[str, Any]], str]:
    """Measure every checkpoint; returns one row per (checkpoint, sampler, recognizer)."""
    cfg = config.generator
    folder = folder or storage.join(layout.generator_storage_uri(config), cfg.run_name)
    checkpoints = ([cfg.init_from] if cfg.init_from else []) + run_checkpoints(folder)
    if not checkpoints:
        raise ValueError(f"{folder}: no generator checkpoints")
    inquiries = first_image_per_identity(open_dataset(layout.inquiry_data_uri(config)),
                                         cfg.compliance.validation_identities)
    judge = load_judge(config.judge)
    samplers = {"CemiFace's sampler": cfg.sampling.model_copy(update={"identity_handoff": None})}
    if cfg.compliance.progress_handoff is not None:
        samplers[f"hand-off {cfg.compliance.progress_handoff:g}"] = cfg.sampling.model_copy(
            update={"identity_handoff": cfg.compliance.progress_handoff})
    rows = []
    for index, uri in enumerate(checkpoints):
        generator = load_generator(uri)
        step = 0 if index == 0 and cfg.init_from else int(generator.meta["step"])
        for sampler, sampling in samplers.items():
            with torch.no_grad():
                result = measure_compliance(generator, inquiries, cfg.compliance.m_values,
                                            cfg.compliance.seeds, sampling, judge=judge)
            for recognizer, view in result.by.items():
                at_one = view.at(1.0)
                rows.append({"checkpoint": uri, "step": step, "sampler": sampler,
                             "recognizer": recognizer, "spearman": view.spearman,
                             "monotonic": view.monotonic, "means": view.mean,
                             "similarity_at_m1": None if at_one is None else at_one["mean"],
                             "rank1_at_m1": None if at_one is None else at_one["rank1"]})
            print(f"step {step:>6} {sampler:<20} " + "  ".join(
                f"{row['recognizer']}: Spearman {row['spearman']:+.3f}, m=1 "
                f"{row['similarity_at_m1']:.3f}" for row in rows[-len(result.by):]))
    out = config.evaluate.out or storage.join(config.workdir, "generator-progress")
    _record(config, rows, out, cfg.init_from or folder)
    return rows, out


def _record(config: FactoryConfig, rows: list[dict[str, Any]], out: str, started_from: str) -> None:
    tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment,
                         config.runtime.mlflow_artifact_location)
    tracker.start(f"{config.generator.run_name}-progress",
                  tags={"code_version": code_version(), "stage": "generator-progress"})
    document = {"code_version": code_version(), "config": config.model_dump(mode="json"),
                "rows": rows}
    with tempfile.TemporaryDirectory() as directory:
        files = {"progress.png": progress_png(rows, os.path.join(directory, "progress.png"),
                                              started_from),
                 "progress.json": os.path.join(directory, "progress.json")}
        with open(files["progress.json"], "w") as stream:
            json.dump(document, stream, indent=2)
        for name, local in files.items():
            tracker.log_artifact(local)
            with open(local, "rb") as stream:
                storage.write_bytes(storage.join(out, name), stream.read())
    tracker.end()
