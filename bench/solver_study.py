"""Solver x steps: m-compliance and quality against sampling speed, and the cheapest setting
within the run-to-run spread of the reference (DDIM 20).

Run: ``.venv/bin/python bench/solver_study.py [--config configs/quickstart.yaml] [--identities
16] [--seeds 2] [KEY=VALUE ...]`` (config overrides, as the factory commands take them). Needs
the config's face world (``factory faceworld``) and its generator and judge. For every (solver,
steps) it samples the compliance protocol (held-out inquiry identities x
``generator.compliance.m_values`` x seeds, the generator report's sampler path) and records, by
the judge and by E_id: Spearman(requested m, measured similarity) and the per-m mean similarity;
by the judge: the Frechet distance to as many real training images; and the sampling rate
(images/s, sampling only, this process's torch threads; on a shared machine a rough figure only:
bench/synthesis_speed.py measures speed, and the PNG plots against steps, which cost the same
for every solver). The reference is also drawn with ``--replicates`` other seed sets: the spread
of those draws is the tolerance. A setting is *within the spread* when its judge Spearman is at
least the lowest reference draw's, its Frechet distance at most the highest, and every per-m
judge mean lies within the reference draws' range widened by half that range. Writes
``solver_study.json``, ``solver_study.md`` and ``solver_study.png`` to ``--out``.

``--settings`` lists the settings as every benchmark does (``bench/sampler_settings.py``:
``ddim:5,10,unipc:8``, each ``[solver:]steps[@precision][+compile]``); a setting may name the
precision it samples in and ask for a compiled UNet (``ddim:20@bf16``: bf16 autocast, also on
a CPU; ``ddim:20@bf16+compile``: and ``torch.compile``). The study samples on the CPU, so
``auto``, the default, is float32; the reference is always float32 and eager, the old default.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch

from factory import layout
from factory.config import load_config
from factory.eval.compliance import (
    draw_samples,
    first_image_per_identity,
    frechet_against_real,
    measure,
)
from factory.formats.dataset import open_dataset
from factory.models.identity import inquiry_tensor
from factory.models.inference import resolve_precision
from factory.models.sampling import SOLVER_NAMES
from factory.report import format_table
from factory.checkpoints.recognizer import load_judge
from factory.checkpoints.generator import load_generator
from sampler_settings import SamplerSetting, settings_argument

REFERENCE = SamplerSetting("ddim", 20, "fp32", False)
"""The old default: DDIM 20 in float32 (``precision: auto`` on a CPU), not compiled."""
STUDY_DEVICE = torch.device("cpu")
"""Where every setting samples (``draw_samples``'s device): ``auto`` precision is float32."""
SEED_STRIDE = 1000  # seed_offset between replicate draws (seeds within a draw stay below it)


def label(result: dict) -> str:
    """``DDIM``, or ``DDIM bf16`` for a setting that does not sample in float32."""
    precision = result.get("precision", "fp32")
    return (SOLVER_NAMES[result["solver"]] + ("" if precision == "fp32" else f" {precision}")
            + (" compiled" if result.get("compile") else ""))


def run_setting(generator, judge, inquiries, images, real, m_values, seeds, sampling,
                seed_offset: int) -> dict:
    started = time.perf_counter()
    drawn = draw_samples(generator, inquiries, m_values, seeds, sampling, seed_offset=seed_offset)
    seconds = time.perf_counter() - started
    by = {name: measure(encoder, name, images, drawn, m_values)
          for name, encoder in (("judge", judge), ("E_id", generator.encoder))}
    frechet = frechet_against_real(judge, drawn.images, real, generator.image_size)
    return {"solver": sampling.solver, "steps": sampling.steps, "precision": sampling.precision,
            "compile": sampling.compile,
            "seed_offset": seed_offset,
            "images": len(drawn.images), "seconds": seconds,
            "images_per_s": len(drawn.images) / seconds,
            "spearman": {name: view.spearman for name, view in by.items()},
            "means": {name: view.mean for name, view in by.items()},
            "frechet": frechet["synthetic_vs_real"], "frechet_floor": frechet["real_vs_real"]}


def tolerance(references: list[dict]) -> dict:
    """The reference draws' range of each figure (what 'within the spread' is read against)."""
    means = np.array([r["means"]["judge"] for r in references])
    width = means.max(0) - means.min(0)
    return {"spearman_min": min(r["spearman"]["judge"] for r in references),
            "frechet_max": max(r["frechet"] for r in references),
            "means_low": (means.min(0) - width / 2).tolist(),
            "means_high": (means.max(0) + width / 2).tolist()}


def within(result: dict, tol: dict) -> bool:
    means = np.array(result["means"]["judge"])
    return bool(result["spearman"]["judge"] >= tol["spearman_min"]
                and result["frechet"] <= tol["frechet_max"]
                and np.all(means >= np.array(tol["means_low"]))
                and np.all(means <= np.array(tol["means_high"])))


def write_png(results: list[dict], references: list[dict], tol: dict, m_values: list[float],
              path: str) -> None:
    """Spearman, Frechet distance and the judge's mean at the m nearest 0 (where the cheaper
    settings drift first), each against steps, over the reference draws' band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    middle = int(np.argmin(np.abs(np.asarray(m_values))))
    panels = (
        ("Spearman(requested m, judge similarity)", lambda r: r["spearman"]["judge"]),
        ("Frechet distance to real (judge features)", lambda r: r["frechet"]),
        (f"judge mean similarity at m = {m_values[middle]:+.1f}",
         lambda r: r["means"]["judge"][middle]),
    )
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in dict.fromkeys(label(r) for r in results):
        rows = sorted((r for r in results if label(r) == name), key=lambda r: r["steps"])
        for axis, (_, value) in zip(axes, panels):
            axis.plot([r["steps"] for r in rows], [value(r) for r in rows],
                      "o-" if name in SOLVER_NAMES.values() else "D", label=name)
    for axis, (title, value) in zip(axes, panels):
        values = [value(r) for r in references]
        axis.axhspan(min(values), max(values), color="grey", alpha=0.25,
                     label="DDIM 20, seed spread")
        axis.set_xlabel("steps (UNet calls per image; cost is linear in them)")
        axis.set_ylabel(title)
    axes[2].axhspan(tol["means_low"][middle], tol["means_high"][middle], color="grey",
                    alpha=0.12, label="tolerance (spread widened by half)")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    figure.suptitle("Solver x steps against the seed spread of DDIM 20")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(results: list[dict], references: list[dict], tol: dict, m_values,
             choice: dict | None) -> str:
    headers = ["solver", "steps", "images/s", "Spearman judge", "Spearman E_id", "Frechet",
               *[f"judge m={m:+.1f}" for m in m_values], "within spread"]
    rows = [[label(r), r["steps"], r["images_per_s"],
             f"{r['spearman']['judge']:.3f}", f"{r['spearman']['E_id']:.3f}",
             f"{r['frechet']:.3f}", *[f"{v:+.3f}" for v in r["means"]["judge"]],
             "yes" if within(r, tol) else "no"] for r in results]
    rows += [[f"DDIM (seeds +{r['seed_offset']})", r["steps"], r["images_per_s"],
              f"{r['spearman']['judge']:.3f}", f"{r['spearman']['E_id']:.3f}",
              f"{r['frechet']:.3f}", *[f"{v:+.3f}" for v in r["means"]["judge"]], "reference"]
             for r in references]
    table = format_table(headers, rows)
    lines = ["```", table, "```"]
    if choice:
        lines.append(f"cheapest within the spread of DDIM 20: {label(choice)} "
                     f"{choice['steps']} steps ({choice['images_per_s']:.2f} images/s)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--identities", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--settings", default="ddim:5,10,15,dpmsolver++:5,8,10,15,20,"
                                              "unipc:5,8,10,15,20",
                        help="[solver:]steps[@precision][+compile] settings, comma-separated "
                             "(bench/sampler_settings.py; ddim:5,10,ddim:20@bf16+compile)")
    parser.add_argument("--replicates", type=int, default=2,
                        help="extra seed sets of DDIM 20 (the spread)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/solver-study")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, as the factory commands take them")
    args = parser.parse_args()
    settings = settings_argument(parser, "--settings", args.settings)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    cfg = config.generator
    generator = load_generator(layout.generator_checkpoint_uri(config))
    judge = load_judge(config.judge)
    if judge is None:
        raise SystemExit(f"{args.config}: the study needs judge.checkpoint")
    inquiries = first_image_per_identity(open_dataset(layout.inquiry_data_uri(config)),
                                         args.identities)
    images = inquiry_tensor(inquiries, generator.image_size)
    real = open_dataset(layout.generator_data_uri(config))
    m_values = cfg.compliance.m_values
    os.makedirs(args.out, exist_ok=True)
    results, references = [], []

    # every result is appended as it comes, and a rerun with the same protocol reuses them
    partial = os.path.join(args.out, "solver_study.partial.jsonl")
    protocol = {"config": args.config, "overrides": args.overrides,
                "identities": args.identities, "seeds": args.seeds}
    done = {}
    if os.path.exists(partial):
        with open(partial) as stream:
            for line in stream:
                record = json.loads(line)
                if record.pop("protocol") == protocol:
                    record.setdefault("precision", "fp32")  # recorded before these options
                    record.setdefault("compile", False)
                    done[(record["solver"], record["steps"], record["precision"],
                          record["compile"], record["seed_offset"])] = record

    def one(solver: str, steps: int, precision: str, compiled: bool, offset: int) -> dict:
        if (solver, steps, precision, compiled, offset) in done:
            return done[(solver, steps, precision, compiled, offset)]
        sampling = cfg.sampling.model_copy(update={"solver": solver, "steps": steps,
                                                   "precision": precision, "compile": compiled})
        # compiling wraps the UNet in place: a compiled setting gets its own copy
        model = copy.deepcopy(generator) if compiled else generator
        result = run_setting(model, judge, inquiries, images, real, m_values, args.seeds,
                             sampling, offset)
        with open(partial, "a") as stream:
            stream.write(json.dumps({**result, "protocol": protocol}) + "\n")
        print(f"{label(result):24s} {steps:3d} steps seeds+{offset:<5d} "
              f"{result['images_per_s']:6.2f} img/s  Spearman judge "
              f"{result['spearman']['judge']:.3f} E_id {result['spearman']['E_id']:.3f}  "
              f"Frechet {result['frechet']:.3f}", flush=True)
        return result

    warm_up = cfg.sampling.model_copy(update={"steps": 2})  # first-call costs out of the timing
    draw_samples(generator, inquiries[:2], m_values[:1], 1, warm_up)
    for replicate in range(args.replicates + 1):
        references.append(one(*REFERENCE, replicate * SEED_STRIDE))
    for setting in settings:
        results.append(one(setting.solver, setting.steps,
                           resolve_precision(setting.precision, STUDY_DEVICE), setting.compile,
                           0))
    results.insert(0, references[0])
    tol = tolerance(references)
    candidates = [r for r in results if within(r, tol)]
    # cheapest: fewest model calls (one per step for every solver), then the faster measured
    choice = min(candidates, key=lambda r: (r["steps"], -r["images_per_s"])) if candidates else None
    document = {"config": args.config, "identities": args.identities, "seeds": args.seeds,
                "m_values": m_values, "threads": args.threads, "reference": REFERENCE,
                "tolerance": tol, "results": results, "references": references,
                "choice": choice and {key: choice[key]
                                      for key in ("solver", "steps", "precision", "compile")}}
    with open(os.path.join(args.out, "solver_study.json"), "w") as stream:
        json.dump(document, stream, indent=2)
    text = markdown(results, references[1:], tol, m_values, choice)
    with open(os.path.join(args.out, "solver_study.md"), "w") as stream:
        stream.write(text)
    write_png(results, references, tol, m_values, os.path.join(args.out, "solver_study.png"))
    print(text)


if __name__ == "__main__":
    main()
