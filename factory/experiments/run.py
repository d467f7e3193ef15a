"""``factory experiments``: the face-world studies, cell by cell and seed by seed, resumably.

Order: the m study first (its best m, chosen on the validation benchmarks' AVG, is what the
SynFace and GtR studies synthesise at, and its best m below +1 the lambda = 0 study's), then the
similarity groups, lambda = 0, SynFace and GtR. The m study's cells named by measured
similarity are resolved first (:mod:`factory.experiments.targets`) and kept in results.json
with the real scale they were read on. Every replicate synthesises its own data (synthesis seed
= the replicate's seed) and trains with its own seed; every synthetic set is measured by the
judge, which places its cells on the measured axis. Each finished run's figures, with the code
version that made them, go into ``<workdir>/results.json`` at once (written atomically), and a
rerun skips every run found there; a run interrupted mid-training resumes from its own Ray
Train checkpoints. The page's folder gets a copy of that file beside
the page, the published record; it is never read back, so a clean checkout reproduces every
run instead of returning the committed figures. Every run trains the config's ``recognizer``
recipe with its own seed, selects nothing, and is evaluated on the validation benchmarks during
training and on the test benchmarks once, at its final epoch.
"""

from __future__ import annotations

import json
import time
from typing import Any

from factory import layout, storage
from factory.config import EXPERIMENT_STUDIES, FactoryConfig
from factory.errors import UserError
from factory.eval.benchmarks import TEST_AVERAGE, VALIDATION_AVERAGE
from factory.experiments.cells import (
    Cell,
    SyntheticSet,
    group_study,
    gtr_study,
    lambda0_study,
    m_study,
    synface_study,
)
from factory.experiments.data import (
    data_uri,
    judged_similarity,
    make_dataset,
    make_real_subset,
    synthetic_identities,
)
from factory.eval.compliance_curve import CURVE_FILE
from factory.experiments.targets import ResolvedTarget, from_records, resolve_targets, spec_text
from factory.faceworld.build import build_faceworld
from factory.formats.shard_metadata import read_dataset_metadata
from factory.provenance import code_version
from factory.sweep.space import similarity_groups
from factory.train.recognizer import train_recognizer

RESULTS_FILE = "results.json"
LAMBDA0_TRAINING = "factory train-generator --config configs/faceworld-generator-lambda0.yaml"
"""What makes the lambda = 0 study's generator (no checkpoint of it is shipped)."""
SMALL_FOLDER = "small"


def small_preset(config: FactoryConfig) -> FactoryConfig:
    """The config with ``experiments.small`` applied: its own workdir and results folder, so a
    small run never mixes with the full one."""
    small = config.model_copy(deep=True)
    exp, preset = small.experiments, config.experiments.small
    exp.seeds, exp.volumes, exp.m_values = list(preset.seeds), list(preset.volumes), \
        list(preset.m_values)
    exp.m_targets = [target.model_copy() for target in preset.m_targets]
    exp.m_mixtures = [list(mixture) for mixture in preset.m_mixtures]
    exp.similarity_groups = preset.similarity_groups
    exp.out = storage.join(config.experiments.out, SMALL_FOLDER)
    small.recognizer.optimizer.epochs = preset.epochs
    small.recognizer.eval_every = 0
    small.workdir = config.workdir.rstrip("/") + "-" + SMALL_FOLDER
    return small


class Results:
    """``results.json``: every finished run's figures by run name, plus what the studies chose.
    The working copy lives in the workdir, beside the runs it describes; :meth:`publish` copies
    it beside the page."""

    def __init__(self, config: FactoryConfig) -> None:
        self.uri = storage.join(config.workdir, RESULTS_FILE)
        self.published = storage.join(config.experiments.out, RESULTS_FILE)
        self.document: dict[str, Any] = {"runs": {}, "cells": [], "chosen": {}}
        if storage.exists(self.uri):
            self.document = storage.read_json_object(self.uri)
        self.document["config"] = config.model_dump(mode="json")
        self.document["code_version"] = code_version()

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        return self.document["runs"]

    @property
    def measured(self) -> dict[str, dict[str, Any]]:
        """The judge's similarity to the inquiry per requested m, per synthetic data folder."""
        return self.document.setdefault("measured", {})

    def record_cell(self, cell: Cell, data: dict[int, str], seeds: list[int],
                    judge: dict[str, float] | None = None) -> None:
        entry = {"study": cell.study, "name": cell.name, "key": cell.key,
                 "data": {str(seed): uri for seed, uri in data.items()},
                 "position": cell.position, "tags": cell.tags, "judge_similarity": judge,
                 "runs": [run_name(cell, seed) for seed in seeds]}
        cells = self.document["cells"]
        at = next((i for i, c in enumerate(cells)
                   if (c["study"], c["name"]) == (cell.study, cell.name)), None)
        if at is None:
            cells.append(entry)
        else:
            cells[at] = entry
        self.save()

    def record_run(self, name: str, figures: dict[str, Any]) -> None:
        self.runs[name] = figures
        self.save()

    def save(self) -> None:
        storage.write_text(self.uri, self.text())

    def publish(self) -> None:
        storage.write_text(self.published, self.text())

    def text(self) -> str:
        return json.dumps(self.document, indent=2, allow_nan=False)


def run_name(cell: Cell, seed: int) -> str:
    return f"{cell.key}-seed{seed}"


def figures_of(metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the page needs of a run's final metrics: the two AVGs, every benchmark's accuracy."""
    kept = {key: float(value) for key, value in metrics.items()
            if key in (TEST_AVERAGE, VALIDATION_AVERAGE) or key.endswith("/acc")}
    if TEST_AVERAGE not in kept or VALIDATION_AVERAGE not in kept:
        raise UserError("experiments: a run ended without validation and test accuracies "
                        "(does the face world have both benchmark sets?)")
    return {**kept, "epoch": int(metrics.get("epoch", -1)), "seconds": round(seconds, 1),
            "code_version": code_version()}


def train_cell(config: FactoryConfig, cell: Cell, uri: str, seed: int,
               cli_address: str | None) -> dict[str, Any]:
    """Train the experiments' recipe on the cell's data with ``seed``; its figures."""
    run = config.model_copy(deep=True)
    recognizer = run.recognizer
    recognizer.train_on(uri)
    recognizer.seed = seed
    recognizer.run_name = run_name(cell, seed)
    recognizer.storage = storage.join(config.workdir, "recognizers")
    recognizer.select.m = cell.m
    recognizer.select.similarity = cell.similarity
    if cell.real is not None:
        recognizer.domain_mixup.real_data = make_real_subset(config, cell.real)
        recognizer.domain_mixup.psi = "grid"
    started = time.perf_counter()
    result = train_recognizer(run, cli_address=cli_address)
    return figures_of(result.metrics, time.perf_counter() - started)


def best_m(results: Results, config: FactoryConfig, below_top: bool = False) -> float:
    """The single m whose m-study cells have the best mean validation AVG (never test); with
    ``below_top``, the best below the most similar m (the lambda = 0 study's: at m = +1 the two
    objectives coincide)."""
    cells = [cell for cell in m_study(config.experiments, targets_of(results))
             if cell.position is not None]
    top = max((cell.position for cell in cells), default=None)
    best: tuple[float, float] | None = None
    for cell in cells:
        runs = [results.runs.get(run_name(cell, seed)) for seed in config.experiments.seeds]
        if not all(runs) or (below_top and cell.position == top):
            continue
        mean = sum(r[VALIDATION_AVERAGE] for r in runs) / len(runs)
        if best is None or mean > best[0]:
            best = (mean, cell.position)
    if best is None:
        raise UserError("experiments.studies: the later studies synthesise at the m study's best "
                        "m; run the m study first (add 'm' to experiments.studies)")
    key = "best_m_below_top" if below_top else "best_m"
    results.document["chosen"][key] = {"m": best[1], "validation_avg": best[0]}
    return best[1]


def top_m(results: Results, config: FactoryConfig) -> float:
    """The m study's most similar m (its highest)."""
    return max(cell.position for cell in m_study(config.experiments, targets_of(results))
               if cell.position is not None)


def targets_of(results: Results) -> list[ResolvedTarget]:
    return from_records(results.document.get("targets", {}).get("resolved", []))


def resolve_once(config: FactoryConfig, results: Results) -> None:
    """Resolve the m study's targets (and measure the real scale) unless results.json holds
    them for the same targets, generator and compliance curve: the cells' m, hence their data,
    stay fixed."""
    checkpoint = layout.synthesis_checkpoint_uri(config)
    curve = storage.join(checkpoint, CURVE_FILE)
    asked = {"checkpoint": checkpoint,
             "targets": [[t.axis, spec_text(t)] for t in config.experiments.m_targets],
             "curve": storage.read_json_object(curve) if storage.exists(curve) else None}
    held = results.document.get("targets", {})
    if {key: held.get(key) for key in asked} == asked:
        return
    resolved, scale = resolve_targets(config, config.experiments.m_targets, checkpoint)
    results.document["targets"] = {**asked, "resolved": [t.record() for t in resolved]}
    results.document["scale"] = scale
    for target in resolved:
        reach = (f"m = {target.m:+.2f}" if target.m is not None else
                 f"out of reach ({target.reachable[0]:.2f} .. {target.reachable[1]:.2f})")
        print(f"experiments: target {target.label}: {reach}", flush=True)
    results.save()


def cell_similarity(cell: Cell, measured: list[dict[str, Any]]) -> dict[str, float] | None:
    """The judge's mean similarity to the inquiry of the images a synthetic cell trains on,
    over its replicates (the within-set std averaged), from each replicate's per-m figures."""
    picked = []
    for per_m in measured:
        entries = ([per_m[f"{cell.position:+.2f}"]] if cell.m is not None
                   else list(per_m.values()))
        n = sum(e["n"] for e in entries)
        if n:
            picked.append((sum(e["mean"] * e["n"] for e in entries) / n,
                           sum(e["std"] * e["n"] for e in entries) / n))
    if not picked:
        return None
    return {"mean": round(sum(p[0] for p in picked) / len(picked), 4),
            "std": round(sum(p[1] for p in picked) / len(picked), 4), "replicates": len(picked)}


def group_similarity(uri: str, bounds: tuple[float, float]) -> dict[str, float]:
    """The judge's mean similarity to center of a similarity group's samples."""
    values = read_dataset_metadata(uri, ["similarity_center"])["similarity_center"].to_numpy()
    chosen = values[(values >= bounds[0]) & (values <= bounds[1])]
    return {"mean": round(float(chosen.mean()), 4), "std": round(float(chosen.std()), 4),
            "replicates": 1}


def run_cells(config: FactoryConfig, cells: list[Cell], results: Results,
              cli_address: str | None) -> None:
    exp = config.experiments

    def measure(data: SyntheticSet, uri: str) -> dict[str, Any]:
        if data.folder not in results.measured:
            results.measured[data.folder] = judged_similarity(config, uri)
        return results.measured[data.folder]

    prepared = []
    for cell in cells:
        similarity = None
        if cell.group is not None:
            uri = make_dataset(config, cell.data, cli_address)
            bounds = similarity_groups(uri, exp.similarity_groups)[cell.group]
            similarity = group_similarity(uri, (bounds[0], bounds[1]))
            cell = Cell(cell.study, f"{cell.name}: similarity {bounds[0]:.2f} .. {bounds[1]:.2f}",
                        cell.data, similarity=(bounds[0], bounds[1]), group=cell.group,
                        position=similarity["mean"])
        prepared.append((cell, {}, [], similarity))
    # replicate by replicate: the m study's cells share one pool per replicate, so a study
    # stopped part-way has whole replicates rather than every pool and few runs
    for seed in exp.seeds:
        for at, (cell, data, measured, similarity) in enumerate(prepared):
            replicate = cell.data_for(seed)
            synthetic = isinstance(replicate, SyntheticSet)
            name = run_name(cell, seed)
            if name in results.runs and (not synthetic or replicate.folder in results.measured):
                data[seed] = data_uri(config, replicate)  # all it was needed for is recorded
            else:
                data[seed] = make_dataset(config, replicate, cli_address)
            if synthetic:
                measured.append(measure(replicate, data[seed]))
                similarity = cell_similarity(cell, measured)
                prepared[at] = (cell, data, measured, similarity)
            results.record_cell(cell, data, exp.seeds, similarity)
            if name in results.runs:
                continue
            print(f"== experiments: {cell.study}: {cell.name}, seed {seed}", flush=True)
            results.record_run(name, train_cell(config, cell, data[seed], seed, cli_address))


def study_cells(config: FactoryConfig, study: str, results: Results,
                cli_address: str | None) -> list[Cell]:
    exp, targets = config.experiments, targets_of(results)
    if study == "m":
        return m_study(exp, targets)
    if study == "similarity_groups":
        return group_study(exp)
    if study == "lambda0":
        return lambda0_study(exp, targets, best_m(results, config, below_top=True))
    chosen = best_m(results, config)
    if study == "synface":
        return synface_study(exp, targets, chosen)
    top = top_m(results, config)
    got = {}
    for cell in gtr_study(exp, targets, chosen, top, {}):
        if cell.tags.get("side") == "synthetic":
            uri = make_dataset(config, cell.data_for(exp.seeds[0]), cli_address)
            got[cell.data.identities] = synthetic_identities(uri)
    results.document["chosen"]["gtr_identities"] = {str(k): v for k, v in got.items()}
    return gtr_study(exp, targets, chosen, top, got)


def describe_generators(config: FactoryConfig) -> dict[str, Any]:
    """Each generator the studies synthesise with: its objective, steps and code version (from
    its generator.json) and the sampler synthesis runs it with."""
    from factory.checkpoints.encoder import checkpoint_meta

    exp = config.experiments
    roles = {"experiments": layout.synthesis_checkpoint_uri(config)}
    if "lambda0" in exp.studies:
        roles |= {"lambda0": exp.lambda0_checkpoint, "equal budget":
                  exp.lambda0_reference_checkpoint}
    described = {}
    for role, uri in roles.items():
        if not uri or not storage.exists(uri):
            continue
        record = checkpoint_meta(uri)
        described[role] = {"checkpoint": uri, "step": record.get("step"),
                           "objective": record.get("objective"),
                           "code_version": record.get("code_version"),
                           "sampling": config.synthesis.sampling.model_dump(mode="json")}
    return described


def run_experiments(config: FactoryConfig, cli_address: str | None = None,
                    small: bool = False, only: list[str] | None = None,
                    page_only: bool = False) -> str:
    """Run (or resume) the configured studies; returns the results page's path. With
    ``page_only``, run nothing and write the page from the workdir's results.json (a run in
    progress, or one whose pieces ran elsewhere)."""
    from factory.experiments.page import write_page

    if small:
        config = small_preset(config)
    if page_only:
        results = Results(config)
        if not results.runs:
            raise UserError(f"{results.uri}: no finished runs to write a page from")
        storage.ensure_writable(config.experiments.out)
        results.publish()
        return write_page(config, results.document)
    exp = config.experiments
    running_lambda0 = "lambda0" in exp.studies and (not only or "lambda0" in only)
    have_lambda0 = bool(exp.lambda0_checkpoint) and storage.exists(exp.lambda0_checkpoint)
    left_out = {}
    if small and running_lambda0 and not have_lambda0 and not only:
        # the small variant is the quick look: it runs what it can and says what it left out
        checkpoint = exp.lambda0_checkpoint or "(empty)"
        left_out["lambda0"] = (f"experiments.lambda0_checkpoint {checkpoint} not found; train "
                               f"it with {LAMBDA0_TRAINING}")
        print(f"experiments --small: leaving out the lambda = 0 study: {left_out['lambda0']}",
              flush=True)
        exp.studies = [study for study in exp.studies if study != "lambda0"]
        running_lambda0 = False
    if running_lambda0 and not have_lambda0:
        raise UserError(f"experiments.lambda0_checkpoint: {exp.lambda0_checkpoint or 'empty'}: "
                        "the lambda = 0 study needs a generator trained with lambda = 0 "
                        f"({LAMBDA0_TRAINING}), or leave 'lambda0' out of experiments.studies")
    reference = exp.lambda0_reference_checkpoint
    if running_lambda0 and reference and not storage.exists(reference):
        raise UserError(f"experiments.lambda0_reference_checkpoint: {reference}: not found; "
                        "train it as configs/experiments/faceworld.yaml says, or set it empty")
    for name in only or []:
        if name not in EXPERIMENT_STUDIES:
            raise UserError(f"--study {name}: expected one of {', '.join(EXPERIMENT_STUDIES)}")
    storage.ensure_writable(exp.out)
    build_faceworld(config)
    results = Results(config)
    results.document["left_out"] = left_out
    results.document["generators"] = describe_generators(config)
    resolve_once(config, results)
    started = time.perf_counter()
    for study in EXPERIMENT_STUDIES:
        if study not in exp.studies or (only and study not in only):
            continue
        run_cells(config, study_cells(config, study, results, cli_address), results, cli_address)
    results.document.setdefault("wall_seconds", {})[time.strftime("%Y-%m-%dT%H:%M:%S")] = \
        round(time.perf_counter() - started, 1)
    results.save()
    results.publish()
    return write_page(config, results.document)

