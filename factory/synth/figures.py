"""PNG figures of a synthetic dataset: similarity histograms and the per-bin statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from factory.eval.generator_figures import agg_figure


def similarity_histogram_png(histograms: dict[str, Any], path: str, title: str = "") -> str:
    """Counts per 0.1 similarity bin, to the inquiry embedding and to the identity center."""
    edges = np.asarray(histograms["edges"], float)
    centers, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    figure = agg_figure(6.5, 3.8)
    axes = figure.add_subplot()
    axes.bar(centers - width / 4, histograms["similarity_inquiry"], width=width / 2,
             label="to inquiry embedding", color="tab:blue")
    axes.bar(centers + width / 4, histograms["similarity_center"], width=width / 2,
             label="to identity center", color="tab:orange")
    axes.set_xlim(-1.0, 1.0)
    axes.set_xlabel("cosine similarity (E_id)")
    axes.set_ylabel("samples")
    axes.set_title(title or "similarity of every synthetic sample", fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
