"""The experiments' results page: per-study tables (mean +- std over seeds), a verdict per
finding of the papers, and PNGs, written from ``results.json`` alone.

Every figure on the page is the test benchmarks' AVG at each run's final epoch unless it says
validation; choices (the best m, the middle similarity group) were made on validation. A
finding is *reproduced* when the difference has the papers' sign and is at least twice its
standard error over seeds, *not reproduced* when it has the other sign at that size, and *not
separable from noise* otherwise.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from factory import storage
from factory.config import FactoryConfig
from factory.eval.benchmarks import TEST_AVERAGE, VALIDATION_AVERAGE
from factory.experiments.cells import LAMBDA0_ROLES

PAGE_FILE = "README.md"
STUDY_TITLES = {
    "m": "CemiFace's m study (requested similarity m, equal volume)",
    "similarity_groups": "CemiFace's similarity-group study (the real face world split by "
                         "similarity to center, equal sizes)",
    "lambda0": "CemiFace's ablation: no similarity matching (lambda = 0)",
    "synface": "SynFace: identity mixup and domain mixup",
    "gtr": "Gap to real at equal volume",
}
GTR_GOAL = 5.0
"""Points of AVG the synthetic-trained recognizer may trail the real-trained one by."""


@dataclass(frozen=True)
class Summary:
    """One cell's figure over its finished seeds."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        return f"{self.mean:.2f} +- {self.std:.2f} (n={self.n})" if self.n else "-"


def summarise(values: list[float]) -> Summary:
    if not values:
        return Summary(math.nan, math.nan, 0)
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return Summary(mean, math.sqrt(var), len(values))


def cell_summary(document: dict[str, Any], cell: dict[str, Any], key: str) -> Summary:
    runs = [document["runs"][name] for name in cell["runs"] if name in document["runs"]]
    return summarise([run[key] for run in runs])


def verdict(claim: str, better: Summary, worse: Summary, numbers: str) -> str:
    """One line: the claim that ``better`` beats ``worse``, and what the seeds say of it."""
    if not better.n or not worse.n:
        return f"- {claim}: not measured yet."
    diff = better.mean - worse.mean
    se = math.sqrt(better.std ** 2 / better.n + worse.std ** 2 / worse.n)
    if abs(diff) < 2 * se or diff == 0:
        word = "not separable from noise"
    elif diff > 0:
        word = "reproduced"
    else:
        word = "not reproduced"
    return (f"- {claim}: **{word}** on the face world ({better.mean:.2f} vs {worse.mean:.2f}, "
            f"difference {diff:+.2f} +- {se:.2f} s.e.; {numbers})")


def cells_of(document: dict[str, Any], study: str) -> list[dict[str, Any]]:
    return [c for c in document["cells"] if c["study"] == study]


def by_position(cells: list[dict[str, Any]], position: float) -> dict[str, Any] | None:
    return next((c for c in cells if c["position"] is not None
                 and abs(c["position"] - position) < 1e-6), None)


def study_table(document: dict[str, Any], study: str) -> str:
    rows = ["| cell | validation AVG | test AVG | seconds per run |", "|---|---|---|---|"]
    for cell in cells_of(document, study):
        runs = [document["runs"][n] for n in cell["runs"] if n in document["runs"]]
        seconds = f"{sum(r['seconds'] for r in runs) / len(runs):.0f}" if runs else "-"
        rows.append(f"| {cell['name']} | {cell_summary(document, cell, VALIDATION_AVERAGE).text()}"
                    f" | {cell_summary(document, cell, TEST_AVERAGE).text()} | {seconds} |")
    return "\n".join(rows)


def findings(document: dict[str, Any]) -> list[str]:
    """A verdict per finding of the papers the studies can check."""
    lines: list[str] = []
    test = TEST_AVERAGE

    def s(cell: dict[str, Any] | None) -> Summary:
        return cell_summary(document, cell, test) if cell else Summary(math.nan, math.nan, 0)

    m_cells = cells_of(document, "m")
    zero, one, negative = (by_position(m_cells, 0.0), by_position(m_cells, 1.0),
                           min((c for c in m_cells if c["position"] is not None
                                and c["position"] < 0), key=lambda c: c["position"],
                               default=None))
    lines.append(verdict("CemiFace: semi-hard m = 0 trains a better recognizer than easy m = 1",
                         s(zero), s(one), "CemiFace 10k x 10: 89.57 vs 84.13"))
    if negative:
        lines.append(verdict(f"CemiFace: m = 0 beats negative m ({negative['name']})", s(zero),
                             s(negative), "CemiFace: m = -0.1 87.71, m = -0.5 69.40"))
    for mixture in (c for c in m_cells if c["position"] is None):
        lines.append(verdict(f"CemiFace: adding easy samples hurts (m = 0 against "
                             f"{mixture['name']})", s(zero), s(mixture),
                             "CemiFace: 91.64 against 90.36 .. 89.57"))
    groups = cells_of(document, "similarity_groups")
    if len(groups) >= 3:
        ordered = sorted(groups, key=lambda c: c["position"])
        middle = max(ordered[1:-1], key=lambda c: cell_summary(document, c, VALIDATION_AVERAGE)
                     .mean if cell_summary(document, c, VALIDATION_AVERAGE).n else -math.inf)
        lines.append(verdict(f"CemiFace: a middle similarity group ({middle['name']}, the best "
                             "middle one on validation) beats the most similar group",
                             s(middle), s(ordered[-1]), "CemiFace: 0.76 -> 91.78 vs 0.85 -> 89.48"))
        lines.append(verdict("CemiFace: ... and beats the least similar group", s(middle),
                             s(ordered[0]), "CemiFace: 0.53 -> 82.36"))
    ablation = {c["tags"].get("generator"): c for c in cells_of(document, "lambda0")}
    experiments, lambda0, equal = LAMBDA0_ROLES
    if equal in ablation and lambda0 in ablation:
        lines.append(verdict("CemiFace: similarity matching (lambda > 0) makes better data than "
                             "lambda = 0, both generators trained alike", s(ablation[equal]),
                             s(ablation[lambda0]), "the paper's ablation"))
    if experiments in ablation and lambda0 in ablation:
        lines.append(verdict("CemiFace: the experiments' generator makes better data than the "
                             "lambda = 0 one (their training may differ beyond lambda)",
                             s(ablation[experiments]), s(ablation[lambda0]),
                             "the paper's ablation"))
    synface = cells_of(document, "synface")
    if len(synface) == 3:
        lines.append(verdict("SynFace: identity mixup (soft labels) helps", s(synface[1]),
                             s(synface[0]), "SynFace: helps at equal identities"))
        lines.append(verdict("SynFace: domain mixup with a small real share helps",
                             s(synface[2]), s(synface[0]), "SynFace: a little real data helps"))
    return lines


def gtr_lines(document: dict[str, Any]) -> list[str]:
    """GtR per volume, with the goal beside it."""
    cells = cells_of(document, "gtr")
    lines = []
    for volume in dict.fromkeys(c["tags"]["volume"] for c in cells):
        pair = {c["tags"]["side"]: c for c in cells if c["tags"]["volume"] == volume}
        real = cell_summary(document, pair["real"], TEST_AVERAGE)
        synthetic = cell_summary(document, pair["synthetic"], TEST_AVERAGE)
        if not real.n or not synthetic.n:
            lines.append(f"- {volume}: not measured yet.")
            continue
        gtr = real.mean - synthetic.mean
        se = math.sqrt(real.std ** 2 / real.n + synthetic.std ** 2 / synthetic.n)
        met = "met" if gtr <= GTR_GOAL else "not met"
        lines.append(f"- {volume} (identities x images on both sides): real {real.mean:.2f}, "
                     f"synthetic {synthetic.mean:.2f}, **GtR {gtr:.2f} +- {se:.2f}** points; "
                     f"goal <= {GTR_GOAL:.0f}: {met}")
    return lines


def plot_study(document: dict[str, Any], study: str, path: str) -> bool:
    """Test and validation AVG per cell with +-1 std error bars; False when nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in cells_of(document, study)
             if cell_summary(document, c, TEST_AVERAGE).n]
    if not cells:
        return False
    curve = study == "m" and all(c["position"] is not None for c in cells)
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, (key, label) in enumerate(((TEST_AVERAGE, "test AVG"),
                                           (VALIDATION_AVERAGE, "validation AVG"))):
        stats = [cell_summary(document, c, key) for c in cells]
        xs = ([c["position"] for c in cells] if curve
              else [i + 0.2 * (offset - 0.5) for i in range(len(cells))])
        ax.errorbar(xs, [st.mean for st in stats], yerr=[st.std for st in stats], fmt="o-"
                    if curve else "o", capsize=4, label=label)
    if curve:
        ax.set_xlabel("requested m")
    else:
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c["name"] for c in cells], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("10-fold accuracy (%), mean +- std over seeds")
    ax.set_title(STUDY_TITLES[study], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def recipe(config: FactoryConfig) -> str:
    """The recognizer recipe every cell trains, in a few words."""
    r = config.recognizer
    margin = "" if r.head.margin_value is None else f" m {r.head.margin_value:g}"
    return (f"{r.backbone.name} at {r.backbone.input_size} px, {r.head.margin} s {r.head.scale:g}"
            f"{margin}, {r.optimizer.epochs} epochs, batch {r.optimizer.batch_size}, "
            f"{r.optimizer.schedule} schedule")


def write_page(config: FactoryConfig, document: dict[str, Any]) -> str:
    """Write ``<out>/README.md`` and one PNG per study; returns the page's URI."""
    out = config.experiments.out
    exp = config.experiments
    total = sum(run["seconds"] for run in document["runs"].values())
    chosen = document.get("chosen", {})
    parts = [
        "# Face-world experiments",
        "",
        f"Made by `factory experiments` ({document['code_version']}) from `results.json` beside "
        "this page. Every number is the test benchmarks' AVG (10-fold accuracy, %) of a "
        "recognizer at its final epoch, as mean +- std over seeds (n runs), unless marked "
        "validation; every choice (the best m, the middle similarity group) was made on the "
        "validation benchmarks, which share no identity with training, inquiries or test.",
        "",
        f"Recipe: {recipe(config)}; seeds {exp.seeds}; volumes "
        f"{', '.join(v.label() for v in exp.volumes)} (identities x images). Training time of "
        f"the runs on this page: {total / 3600:.2f} h.",
        "",
    ]
    if "best_m" in chosen:
        parts += [f"Best m on validation: **{chosen['best_m']['m']:+.2f}** (validation AVG "
                  f"{chosen['best_m']['validation_avg']:.2f}); the lambda = 0, SynFace and GtR "
                  "studies synthesise at it.", ""]
    for study, reason in document.get("left_out", {}).items():
        parts += [f"Left out: {STUDY_TITLES[study]} ({reason}).", ""]
    parts += ["## Findings", "", *findings(document), ""]
    if cells_of(document, "gtr"):
        parts += ["## GtR per volume", "", *gtr_lines(document), ""]
    with tempfile.TemporaryDirectory() as scratch:
        for study, title in STUDY_TITLES.items():
            if not cells_of(document, study):
                continue
            parts += [f"## {title}", "", study_table(document, study), ""]
            png = f"{study}.png"
            local = os.path.join(scratch, png)
            if plot_study(document, study, local):
                with open(local, "rb") as figure:
                    storage.write_bytes(storage.join(out, png), figure.read())
                parts += [f"![{title}]({png})", ""]
    page = storage.join(out, PAGE_FILE)
    storage.write_text(page, "\n".join(parts))
    return page
