"""``factory generator-report``: m-compliance numbers, the curve and the CemiFace figure.

For a generator checkpoint (default: this config's published ``final/``) and the held-out
inquiry identities of the report (``generator.compliance.first_identity`` on; the ones before
are validation identities for progress checks and lever choices), writes to ``<workdir>/generator-report/`` (or to ``evaluate.out``; never
into the checkpoint, which may be the shipped one):

* ``compliance.json``: per recognizer (E_id and the independent judge, ``judge.checkpoint``):
  mean and std of the measured similarity per requested m, rank-1 identification and
  intra-identity spread per m, Spearman, monotonicity, the between-identity similarity; the
  m-blind controls (shuffled m, a lambda = 0 generator); the Frechet distance to real images in
  the judge's features; the real reference (real photos of held-out identities against their
  own reference image, per nuisance kind, by both recognizers: the scale every m is read on);
  and which checkpoint, config and code made them;
* ``compliance.png``: requested m against measured similarity by the judge (E_id's in
  ``compliance-e_id.png``), with spread and the real genuine band; ``controls.png``: the controls' curves;
* ``trajectory.png``: per m, the similarity of each DDIM step's x0 estimate, against the
  L_SimMat optimum at that noise level (where along sampling the similarity is decided);
* ``cemiface_grid.png``: rows identities (inquiry first), columns m from 1 to -1, one noise per
  row;
* ``compliance_curve.json``: per recognizer, the mean similarity at each m: copied beside a
  shipped checkpoint's weights, it lets ``synthesis.m.axis`` name targets by measured
  similarity (factory.eval.compliance_curve);

and logs them all to an MLflow run.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch

from factory import layout, storage
from factory.config import FactoryConfig, SamplingConfig
from factory.eval.compliance import (
    Compliance,
    first_image_per_identity,
    measure_compliance,
)
from factory.eval.compliance_curve import curve_document
from factory.eval.generator_figures import (
    compliance_png,
    controls_png,
    similarity_grid_png,
    trajectory_png,
)
from factory.eval.real_reference import load_reference, reference_text
from factory.formats.dataset import open_dataset
from factory.models.identity import inquiry_tensor
from factory.models.inference import prepare
from factory.models.sampling import SOLVER_NAMES, guidance_options, sample_images
from factory.provenance import code_version, platform_record
from factory.report import format_table
from factory.runtime import mlflow_tracking_uri
from factory.tracking import RunTracker
from factory.checkpoints.recognizer import load_judge
from factory.checkpoints.generator import LoadedGenerator, load_generator

GRID_SEED = 77


def cemiface_grid(generator: LoadedGenerator, inquiries: np.ndarray, columns: int,
                  sampling: SamplingConfig, path: str) -> str:
    """The CemiFace figure: each row one identity at m = 1 .. -1, the same noise along a row."""
    m_values = np.linspace(1.0, -1.0, columns)
    settings = prepare(generator, sampling, "cpu")
    images = inquiry_tensor(inquiries, generator.image_size)
    identity = generator.encoder(images)
    rows = len(identity)
    samples = sample_images(
        generator.model, generator.scheduler,
        identity.repeat_interleave(columns, dim=0),
        torch.tensor(np.tile(m_values, rows), dtype=torch.float32),
        [GRID_SEED + row for row in range(rows) for _ in range(columns)],
        generator.image_size, sampling.steps, sampling.eta, sampling.identity_handoff,
        generator.encoder, solver=sampling.solver, **guidance_options(sampling),
        **settings.sampler_options())
    return similarity_grid_png(samples, columns, path, [f"{m:+.2f}" for m in m_values],
                               inquiries=images)


def compliance_table(result: Compliance) -> str:
    """Per requested m: the judge's figures (when there is one), then E_id's."""
    views = [result.by[name] for name in ("judge", "E_id") if name in result.by]
    headers = ["requested m"]
    for view in views:
        headers += [f"{view.recognizer} mean", "std", "rank-1", "spread"]
    rows = []
    for column, m in enumerate(result.m_values):
        row: list = [f"{m:+.2f}"]
        for view in views:
            row += [view.mean[column], view.std[column], f"{100 * view.rank1[column]:.0f}%",
                    view.spread[column]]
        rows.append(row)
    if result.real:
        row = ["real genuine"]
        for view in views:
            real = result.real[view.recognizer].overall
            row += [real.mean, real.std, f"{100 * real.rank1:.0f}%", real.spread]
        rows.append(row)
    return format_table(headers, rows)


def load_controls(config: FactoryConfig) -> dict[str, LoadedGenerator]:
    """The other generators the report samples under the same protocol as controls."""
    uri = config.generator.compliance.lambda0_checkpoint
    return {"lambda = 0": load_generator(uri)} if uri else {}


def generator_report(config: FactoryConfig, validation: bool = False
                     ) -> tuple[Compliance, str]:
    """Measure, draw and record; returns the compliance and the folder it was written to.

    ``validation`` measures the validation identities instead of the report's (for choosing
    between levers, guidance scales or checkpoints) and writes to its own folder."""
    cfg = config.generator
    uri = layout.generator_checkpoint_uri(config)
    generator = load_generator(uri)
    compliance_cfg = cfg.compliance
    dataset = open_dataset(layout.inquiry_data_uri(config))
    first, count = ((0, compliance_cfg.validation_identities) if validation
                    else (compliance_cfg.first_identity, compliance_cfg.identities))
    inquiries = first_image_per_identity(dataset, count, skip=first)
    judge = load_judge(config.judge)
    reference_uri = layout.real_reference_uri(config)
    reference = load_reference(reference_uri, compliance_cfg.identities)
    with torch.no_grad():
        result = measure_compliance(
            generator, inquiries, compliance_cfg.m_values, compliance_cfg.seeds, cfg.sampling,
            judge=judge, shuffled_control=compliance_cfg.shuffled_m_control,
            control_generators=load_controls(config),
            real=open_dataset(layout.generator_data_uri(config)), reference=reference)
    out = config.evaluate.out or storage.join(
        config.workdir, "generator-report-validation" if validation else "generator-report")
    document = {"checkpoint": uri, "step": generator.meta.get("step"),
                "checkpoint_code_version": generator.meta.get("code_version"),
                "code_version": code_version(), "platform": platform_record(),
                "inquiries": layout.inquiry_data_uri(config),
                "judge": config.judge.checkpoint or None,
                "lambda0_checkpoint": compliance_cfg.lambda0_checkpoint or None,
                "seeds_per_m": compliance_cfg.seeds,
                "identities": "validation" if validation else "report",
                "inquiry_identities": [first, first + len(inquiries)],
                "real_reference_data": reference_uri or None,
                "config": config.model_dump(mode="json"),
                **result.summary()}
    tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment,
                         config.runtime.mlflow_artifact_location)
    tracker.start(f"{cfg.run_name}-{'validation' if validation else 'report'}",
                  params={"checkpoint": uri, "judge": config.judge.checkpoint,
                          "identities": "validation" if validation else "report"},
                  tags={"code_version": code_version(), "stage": "generator-report"})
    tracker.log_metrics(report_metrics(result))
    headline = result.headline
    # the per-noise-level optimum is m at every t under 'constant' and 'ramp'
    target_is_m = cfg.similarity_matching.target_schedule in ("constant", "ramp")
    with tempfile.TemporaryDirectory() as directory:
        files = {
            "compliance.json": None,
            "trajectory.png": trajectory_png(
                result.trajectory_t, result.trajectory, result.m_values,
                generator.scheduler.config.num_train_timesteps,
                os.path.join(directory, "trajectory.png"), cfg.sampling.identity_handoff,
                target_is_m),
            "cemiface_grid.png": cemiface_grid(
                generator, inquiries[:compliance_cfg.grid_identities],
                compliance_cfg.grid_columns, cfg.sampling,
                os.path.join(directory, "cemiface_grid.png")),
        }
        for name, view in result.by.items():
            png = "compliance.png" if view is headline else f"compliance-{name.lower()}.png"
            real = result.real.get(name)
            files[png] = compliance_png(
                np.array(result.requested), np.array(view.measured), view.between_identities,
                os.path.join(directory, png),
                f"step {generator.meta.get('step')}, measured by {name}: Spearman "
                f"{view.spearman:.3f}", recognizer=name,
                real_band=None if real is None else (real.overall.mean, real.overall.std))
        if result.controls:
            files["controls.png"] = controls_png(
                result.m_values, {"generator": headline.mean, **{
                    control: views[headline.recognizer].mean
                    for control, views in result.controls.items()}},
                headline.between_identities, os.path.join(directory, "controls.png"),
                headline.recognizer)
        with open(os.path.join(directory, "compliance.json"), "w") as stream:
            json.dump(document, stream, indent=2)
        files["compliance_curve.json"] = os.path.join(directory, "compliance_curve.json")
        with open(files["compliance_curve.json"], "w") as stream:
            json.dump(curve_document(
                {name: (view.m_values, view.mean) for name, view in result.by.items()},
                result.sampling, uri, document["inquiry_identities"], compliance_cfg.seeds),
                stream, indent=2)
        for name in files:
            local = os.path.join(directory, name)
            tracker.log_artifact(local)
            with open(local, "rb") as stream:
                storage.write_bytes(storage.join(out, name), stream.read())
    tracker.end()
    return result, out


def report_metrics(result: Compliance) -> dict[str, float]:
    """The MLflow metrics of a report: per recognizer and control, Spearman and per-m means."""
    metrics: dict[str, float] = {}
    views = {name: view for name, view in result.by.items()}
    for control, control_views in result.controls.items():
        views.update({f"{control}/{name}": view for name, view in control_views.items()})
    for name, view in views.items():
        prefix = name.replace(" ", "_").replace("=", "").replace("__", "_")
        metrics[f"{prefix}/spearman"] = view.spearman
        metrics[f"{prefix}/monotonic"] = float(view.monotonic)
        metrics.update({f"{prefix}/similarity_at_m_{m:+.2f}": mean
                        for m, mean in zip(view.m_values, view.mean)})
        metrics.update({f"{prefix}/rank1_at_m_{m:+.2f}": rank1
                        for m, rank1 in zip(view.m_values, view.rank1)})
    if result.frechet:
        metrics.update({f"frechet/{key}": value for key, value in result.frechet.items()})
    if result.frechet_matched:
        metrics.update({f"frechet_identity_matched/{key}": result.frechet_matched[key]
                        for key in ("synthetic_vs_real", "matched_real_vs_real")})
    for name, real in result.real.items():
        for kind, figures in real.kinds.items():
            metrics.update({f"real_reference/{name}/{kind}/{key}": getattr(figures, key)
                            for key in ("mean", "std", "rank1", "spread")})
    return metrics


def sampler_text(sampling: dict) -> str:
    """One line naming the sampler, e.g. for the report and the quickstart's results."""
    handoff = sampling.get("identity_handoff")
    guidance = sampling.get("guidance_scale", 1.0)
    solver = SOLVER_NAMES[sampling.get("solver", "ddim")]
    return (f"{solver} {sampling['steps']} steps, eta {sampling['eta']:g}, "
            + (f"identity hand-off below t/T = {handoff:g}" if handoff is not None
               else "no identity hand-off")
            + (f", guidance scale {guidance:g}{_interval_text(sampling)}" if guidance != 1.0
               else ", no guidance")
            + (" (CemiFace's sampler)" if handoff is None and guidance == 1.0 else ""))


def _interval_text(sampling: dict) -> str:
    low, high = sampling.get("guidance_interval", (0.0, 1.0))
    return "" if (low, high) == (0.0, 1.0) else f" at t/T in [{low:g}, {high:g})"


def _spearman_line(view) -> str:
    return (f"{view.recognizer}: Spearman(requested m, measured) = {view.spearman:.3f}; means "
            f"fall monotonically with m: {'yes' if view.monotonic else 'no'}; different "
            f"identities: {view.between_identities:.3f}")


def report_text(result: Compliance, out: str) -> str:
    lines = [f"sampler: {sampler_text(result.sampling)}; figures led by "
             f"{result.headline.recognizer}",
             compliance_table(result)]
    lines += reference_text(result.real)
    lines += [_spearman_line(result.by[name]) for name in ("judge", "E_id") if name in result.by]
    for control, views in result.controls.items():
        lines.append(f"control {control}: " + "; ".join(
            f"{name} Spearman {view.spearman:+.3f}, means "
            + " ".join(f"{mean:+.2f}" for mean in view.mean)
            for name, view in views.items()))
    if result.frechet:
        frechet = result.frechet
        lines.append(f"Frechet distance to {frechet['images']} real training images in "
                     f"{result.headline.recognizer}'s features: {frechet['synthetic_vs_real']:.3f}"
                     f" (two real sets of that size: {frechet['real_vs_real']:.3f})")
    if result.frechet_matched:
        matched = result.frechet_matched
        lines.append(f"Frechet distance at m = {matched['m']:+g} ({matched['identities']} "
                     f"inquiries x {matched['per_identity']}) to the same real images: "
                     f"{matched['synthetic_vs_real']:.3f}; real photos of as many held-out "
                     f"identities, as many each: {matched['matched_real_vs_real']:.3f} "
                     f"(ratio {matched['synthetic_vs_real'] / matched['matched_real_vs_real']:.1f})")
    lines.append(f"written to {out}: compliance.json, compliance_curve.json, compliance*.png, "
                 "controls.png, trajectory.png, cemiface_grid.png")
    return "\n".join(lines)
