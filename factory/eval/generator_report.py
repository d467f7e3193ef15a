"""``factory generator-report``: m-compliance numbers, the curve and the CemiFace figure.

For a generator checkpoint (default: this config's published ``final/``) and the held-out
inquiry identities, writes to ``<workdir>/generator-report/`` (or to ``evaluate.out``; never
into the checkpoint, which may be the shipped one):

* ``compliance.json``: mean and std of the measured similarity per requested m, Spearman,
  monotonicity, the between-identity similarity, and which checkpoint and code made them;
* ``compliance.png``: requested m against measured similarity, with spread;
* ``trajectory.png``: per m, the similarity of each DDIM step's x0 estimate, against the
  L_SimMat optimum at that noise level (where along sampling the similarity is decided);
* ``cemiface_grid.png``: rows identities (inquiry first), columns m from 1 to -1, one noise per
  row;

and logs all three to an MLflow run.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch

from factory import storage
from factory.config import FactoryConfig, SamplingConfig
from factory.eval.compliance import (
    Compliance,
    first_image_per_identity,
    measure_compliance,
)
from factory.eval.generator_figures import compliance_png, similarity_grid_png, trajectory_png
from factory.formats.dataset import open_dataset
from factory.models.identity import inquiry_tensor
from factory.models.sampling import ddim_sample
from factory.provenance import code_version
from factory.report import format_table
from factory.runtime import mlflow_tracking_uri
from factory.tracking import RunTracker
from factory.train.generator_checkpoint import LoadedGenerator, load_generator

GRID_SEED = 77


def cemiface_grid(generator: LoadedGenerator, inquiries: np.ndarray, columns: int,
                  sampling: SamplingConfig, path: str) -> str:
    """The CemiFace figure: each row one identity at m = 1 .. -1, the same noise along a row."""
    m_values = np.linspace(1.0, -1.0, columns)
    images = inquiry_tensor(inquiries, generator.image_size)
    identity = generator.encoder(images)
    rows = len(identity)
    with torch.no_grad():
        samples = ddim_sample(
            generator.model, generator.scheduler,
            identity.repeat_interleave(columns, dim=0),
            torch.tensor(np.tile(m_values, rows), dtype=torch.float32),
            [GRID_SEED + row for row in range(rows) for _ in range(columns)],
            generator.image_size, sampling.steps, sampling.eta, sampling.identity_handoff,
            generator.encoder)
    return similarity_grid_png(samples, columns, path, [f"{m:+.2f}" for m in m_values],
                               inquiries=images)


def compliance_table(result: Compliance) -> str:
    rows = [[f"{m:+.2f}", mean, std] for m, mean, std in
            zip(result.m_values, result.mean, result.std)]
    return format_table(["requested m", "measured cos (mean)", "std"], rows)


def generator_report(config: FactoryConfig) -> tuple[Compliance, str]:
    """Measure, draw and record; returns the compliance and the folder it was written to."""
    cfg = config.generator
    uri = config.generator_checkpoint_uri()
    generator = load_generator(uri)
    compliance_cfg = cfg.compliance
    dataset = open_dataset(config.inquiry_data_uri())
    inquiries = first_image_per_identity(dataset, compliance_cfg.identities)
    with torch.no_grad():
        result = measure_compliance(generator, inquiries, compliance_cfg.m_values,
                                    compliance_cfg.seeds, cfg.sampling)
    out = config.evaluate.out or storage.join(config.workdir, "generator-report")
    document = {"checkpoint": uri, "step": generator.meta.get("step"),
                "checkpoint_code_version": generator.meta.get("code_version"),
                "code_version": code_version(), "inquiries": config.inquiry_data_uri(),
                "seeds_per_m": compliance_cfg.seeds,
                **result.summary()}
    tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment)
    tracker.start(f"{cfg.run_name}-report", params={"checkpoint": uri},
                  tags={"code_version": code_version(), "stage": "generator-report"})
    tracker.log_metrics({"spearman": result.spearman, "between_identities":
                         result.between_identities, "monotonic": float(result.monotonic),
                         **{f"similarity_at_m_{m:+.2f}": v
                            for m, v in zip(result.m_values, result.mean)}})
    with tempfile.TemporaryDirectory() as directory:
        files = {
            "compliance.json": None,
            "compliance.png": compliance_png(
                np.array(result.requested), np.array(result.measured),
                result.between_identities, os.path.join(directory, "compliance.png"),
                f"step {generator.meta.get('step')}: Spearman {result.spearman:.3f}"),
            "trajectory.png": trajectory_png(
                result.trajectory_t, result.trajectory, result.m_values,
                generator.scheduler.config.num_train_timesteps,
                os.path.join(directory, "trajectory.png"), cfg.sampling.identity_handoff),
            "cemiface_grid.png": cemiface_grid(
                generator, inquiries[:compliance_cfg.grid_identities],
                compliance_cfg.grid_columns, cfg.sampling,
                os.path.join(directory, "cemiface_grid.png")),
        }
        with open(os.path.join(directory, "compliance.json"), "w") as stream:
            json.dump(document, stream, indent=2)
        for name in files:
            local = os.path.join(directory, name)
            tracker.log_artifact(local)
            with open(local, "rb") as stream:
                storage.write_bytes(storage.join(out, name), stream.read())
    tracker.end()
    return result, out


def sampler_text(sampling: dict) -> str:
    """One line naming the sampler, e.g. for the report and the quickstart's results."""
    handoff = sampling.get("identity_handoff")
    return (f"DDIM {sampling['steps']} steps, eta {sampling['eta']:g}, "
            + (f"identity hand-off below t/T = {handoff:g}" if handoff is not None
               else "no identity hand-off (CemiFace's sampler)"))


def report_text(result: Compliance, out: str) -> str:
    return "\n".join([
        f"sampler: {sampler_text(result.sampling)}",
        compliance_table(result),
        f"Spearman(requested m, measured) = {result.spearman:.3f}; means fall monotonically "
        f"with m: {'yes' if result.monotonic else 'no'}; different identities: "
        f"{result.between_identities:.3f}",
        f"written to {out}: compliance.json, compliance.png, trajectory.png, cemiface_grid.png",
    ])
