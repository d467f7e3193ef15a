"""PNG figures of the generator: sample grids, loss curves, requested-m against measured similarity.

Drawn on matplotlib's Agg canvas without pyplot (no display, no global figure state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from factory.faceworld.montage import montage
from factory.models.sampling import to_uint8


def agg_figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def similarity_grid_png(images: torch.Tensor, columns: int, path: str,
                        column_labels: Sequence[str] = (),
                        inquiries: torch.Tensor | None = None) -> str:
    """Samples ``[rows * columns, 3, S, S]`` (row-major, in [-1, 1]) as a labelled grid PNG.

    With ``inquiries`` (``[rows, 3, S, S]``) each row starts with its inquiry image. This is the
    CemiFace figure when the columns run over m from 1 to -1 with one noise per row.
    """
    tiles = to_uint8(images).numpy()
    rows = [list(tiles[r * columns:(r + 1) * columns]) for r in range(len(tiles) // columns)]
    labels = list(column_labels)
    if inquiries is not None:
        for row, inquiry in zip(rows, to_uint8(inquiries).numpy()):
            row.insert(0, inquiry)
        labels = ["inquiry", *labels]
    sheet = montage(rows)
    side = tiles.shape[1] + 2
    figure = agg_figure(max(3.0, 0.9 * len(rows[0])), max(2.0, 0.9 * len(rows)) + 0.4)
    axes = figure.add_axes((0, 0, 1, 0.92 if labels else 1.0))
    axes.imshow(sheet, interpolation="nearest")
    axes.set_yticks([])
    if labels:
        axes.set_xticks([2 + side * i + side / 2 - 1 for i in range(len(labels))], labels,
                        fontsize=8)
        axes.xaxis.tick_top()
    else:
        axes.set_xticks([])
    figure.savefig(path, dpi=100)
    return path


def loss_curve_png(history: Sequence[dict[str, Any]], path: str) -> str:
    """MSE and SimMat (left), and the mean similarity s of x0_hat to its inquiry (right)."""
    steps = [h["step"] for h in history]
    figure = agg_figure(10, 3.6)
    losses, similarity = figure.subplots(1, 2)
    losses.plot(steps, [h["mse"] for h in history], label="L_MSE")
    losses.plot(steps, [h["simmat"] for h in history], label="L_SimMat")
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.set_title("loss terms")
    losses.legend()
    losses.grid(True, alpha=0.3)
    similarity.plot(steps, [h["similarity"] for h in history], color="tab:green")
    similarity.set_xlabel("step")
    similarity.set_title("mean cos(E_id(x), E_id(x0_hat))")
    similarity.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def compliance_png(requested: np.ndarray, measured: np.ndarray, between: float, path: str,
                   title: str = "", recognizer: str = "E_id",
                   real_band: tuple[float, float] | None = None) -> str:
    """Requested m against measured similarity to the inquiry: mean and std per m, every
    sample as a dot, the identity line, the between-identity similarity and, with
    ``real_band`` (mean, std), the real genuine similarities as a band: the scale to read on."""
    figure = agg_figure(5.5, 5)
    axes = figure.add_subplot()
    if real_band is not None:
        mean, std = real_band
        axes.axhspan(mean - std, mean + std, color="tab:orange", alpha=0.2,
                     label="real genuine, mean +- std")
        axes.axhline(mean, color="tab:orange", linewidth=1)
    values = np.unique(requested)
    means = np.array([measured[requested == v].mean() for v in values])
    stds = np.array([measured[requested == v].std() for v in values])
    axes.scatter(requested, measured, s=6, alpha=0.3, color="tab:blue", label="samples")
    axes.errorbar(values, means, yerr=stds, color="tab:red", marker="o", capsize=3,
                  label="mean +- std")
    axes.plot([-1, 1], [-1, 1], color="gray", linestyle="--", linewidth=1, label="measured = m")
    axes.axhline(between, color="tab:green", linestyle=":", label="different identities")
    axes.set_xlim(-1.05, 1.05)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("requested m")
    axes.set_ylabel(f"cos({recognizer}(inquiry), {recognizer}(sample))")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def controls_png(m_values: Sequence[float], curves: dict[str, Sequence[float]], between: float,
                 path: str, recognizer: str) -> str:
    """Mean measured similarity per requested m for the generator and its m-blind controls
    (shuffled m, lambda = 0): the controls' curves should be flat."""
    figure = agg_figure(5.5, 4.2)
    axes = figure.add_subplot()
    for (name, means), marker in zip(curves.items(), "osd^v"):
        axes.plot(m_values, means, marker=marker, label=name)
    axes.axhline(between, color="tab:green", linestyle=":", label="different identities")
    axes.set_xlim(1.05, -1.05)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("requested m")
    axes.set_ylabel(f"mean cos({recognizer}(inquiry), {recognizer}(sample))")
    axes.set_title("generator against its m-blind controls", fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def trajectory_png(timesteps: Sequence[int], trajectory: Sequence[Sequence[float]],
                   m_values: Sequence[float], num_train_timesteps: int, path: str,
                   handoff: float | None = None, constant_target: bool = False) -> str:
    """Where along DDIM sampling the similarity is decided: per requested m, the mean
    similarity of each step's x0 estimate to the inquiry (solid) against L_SimMat's optimum
    at that noise level (dashed): ``(1 - t/T) + (t/T) m`` for CemiFace's schedule, m for the
    constant one; the hand-off as a vertical line."""
    from matplotlib import colormaps

    figure = agg_figure(6.5, 4.5)
    axes = figure.add_subplot()
    gamma = np.asarray(timesteps, float) / num_train_timesteps
    for row, m in enumerate(m_values):
        colour = colormaps["coolwarm_r"]((m + 1) / 2)
        axes.plot(gamma, trajectory[row], marker="o", markersize=3, color=colour,
                  label=f"m = {m:+g}")
        optimum = np.full_like(gamma, m) if constant_target else (1 - gamma) + gamma * m
        axes.plot(gamma, optimum, linestyle="--", linewidth=1, color=colour)
    if handoff is not None:
        axes.axvline(handoff, color="gray", linestyle=":", label=f"hand-off at t/T = {handoff:g}")
    axes.set_xlim(1.0, 0.0)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("t / T (sampling runs left to right)")
    axes.set_ylabel("cos(E_id(inquiry), E_id(x0_hat))")
    axes.set_title("x0 estimates along the trajectory (dashed: L_SimMat optimum)", fontsize=9)
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
