"""The real scale the m study is read on, and its cells named by measured similarity.

A requested m is a knob of one generator and sampler; what a recognizer trains on is the
similarity its images measure. So the m study names most of its cells by a similarity to the
inquiry that a network should measure (``experiments.m_targets``), placed on the real scale that
same network gives: percentiles of the real genuine distribution (held-out real images
against their identity's frontal reference, the report's real row) and the network's impostor
threshold at a false positive rate on the validation benchmarks. Each target becomes the m that
the generator's compliance curve says reaches it (:mod:`factory.eval.compliance_curve`),
rounded to 0.01 so that the m study's one pool can hold every cell's images apart; a target
outside what the generator reaches is kept with its reason and run by no cell.

The scale itself (every genuine score and the validation benchmarks' impostor scores, by the
judge and by E_id) goes into results.json, so the page draws the distributions under the
curves from that file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from factory import layout
from factory.config import FactoryConfig, MeasuredTarget, parse_fpr
from factory.config.experiments import GENUINE_PERCENTILE
from factory.errors import UserError
from factory.eval.compliance_curve import compliance_axis
from factory.eval.real_reference import genuine_scores, load_reference
from factory.eval.threshold import encoder_threshold
from factory.formats.verification_bin import read_bin
from factory.models.identity import encode_images

M_STEP = 0.01
"""Resolution of a target's requested m (the m study's pool holds each m's images apart)."""
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class ResolvedTarget:
    """A configured target on its axis, and the m that reaches it (None: out of reach)."""

    axis: str
    spec: str
    similarity: float
    m: float | None
    reachable: tuple[float, float]

    @property
    def meaning(self) -> str:
        """What the target is on the real scale, in words."""
        percentile = GENUINE_PERCENTILE.fullmatch(self.spec)
        if percentile:
            return f"real genuine {ordinal(int(percentile.group(1)))} percentile"
        if self.spec.startswith("fpr:"):
            return f"{self.axis} impostor threshold at FPR {parse_fpr(self.spec):g}"
        return "fixed"

    @property
    def label(self) -> str:
        return f"{self.axis} {self.similarity:.2f} ({self.meaning})"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label, "reachable": list(self.reachable)}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def spec_text(target: MeasuredTarget) -> str:
    return target.at if isinstance(target.at, str) else f"{target.at:g}"


def load_encoders(config: FactoryConfig, checkpoint: str) -> dict[str, Any]:
    """The two networks of the real scale: the judge (required) and the generator's E_id."""
    from factory.checkpoints.encoder import load_checkpoint_encoder
    from factory.checkpoints.recognizer import load_judge

    judge = load_judge(config.judge)
    if judge is None:
        raise UserError("judge.checkpoint: empty; the experiments read every similarity on the "
                        "judge's scale (set it to the face world's judge, assets/faceworld-judge)")
    return {"judge": judge, "E_id": load_checkpoint_encoder(checkpoint)}


def impostor_scores(encoder: Any, uris: list[str]) -> np.ndarray:
    """Cosines of every impostor pair of the given .bin benchmarks."""
    scores = []
    for uri in uris:
        pairs = read_bin(uri)
        embedded = encode_images(encoder, encoder.input_size, pairs.decode(encoder.input_size))
        same = np.asarray(pairs.issame, dtype=bool)
        scores.append((embedded[0::2] * embedded[1::2]).sum(1)[~same])
    return np.concatenate(scores)


def real_scale(config: FactoryConfig, encoders: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per network: every real genuine score, the impostor scores of the validation
    benchmarks, and (filled in as targets name them) its impostor thresholds."""
    reference = load_reference(layout.real_reference_uri(config),
                               config.generator.compliance.identities)
    if reference is None:
        raise UserError("generator.compliance.real_reference: no real reference set (the face "
                        "world's reference/ by default); the m study's targets are read on it")
    uris = layout.threshold_benchmark_uris(config)  # where the thresholds are estimated too
    scale = {}
    for name, encoder in encoders.items():
        genuine = genuine_scores(encoder, reference, encoder.input_size)[0]
        scale[name] = {
            "genuine": np.round(np.sort(genuine), SCORE_DECIMALS).tolist(),
            "impostor": np.round(np.sort(impostor_scores(encoder, uris)), SCORE_DECIMALS).tolist(),
            "thresholds": {}}
    return scale


def target_similarity(config: FactoryConfig, target: MeasuredTarget, scale: dict[str, Any],
                      encoders: dict[str, Any]) -> float:
    """The similarity ``target`` names on its axis (thresholds estimated once per rate)."""
    if not isinstance(target.at, str):
        return float(target.at)
    figures = scale[target.axis]
    percentile = GENUINE_PERCENTILE.fullmatch(target.at)
    if percentile:
        return round(float(np.percentile(figures["genuine"], int(percentile.group(1)))),
                     SCORE_DECIMALS)
    if target.at not in figures["thresholds"]:
        encoder = encoders[target.axis]
        estimate = encoder_threshold(config, encoder, encoder.input_size, parse_fpr(target.at))
        figures["thresholds"][target.at] = round(float(estimate.threshold), SCORE_DECIMALS)
    return figures["thresholds"][target.at]


def resolve_targets(config: FactoryConfig, targets: list[MeasuredTarget], checkpoint: str
                    ) -> tuple[list[ResolvedTarget], dict[str, Any]]:
    """Every target's similarity and m (through ``checkpoint``'s compliance curve for
    ``synthesis.sampling``), and the real scale they were read on."""
    encoders = load_encoders(config, checkpoint)
    scale = real_scale(config, encoders)
    axes = {name: compliance_axis(name, config.synthesis.sampling, checkpoint)
            for name in {target.axis for target in targets}}
    resolved = []
    for target in targets:
        similarity = target_similarity(config, target, scale, encoders)
        axis = axes[target.axis]
        low, high = axis.reachable
        m = None
        if low <= similarity <= high:
            m = round(round(axis.requested(similarity) / M_STEP) * M_STEP, 2)
        resolved.append(ResolvedTarget(target.axis, spec_text(target), similarity, m,
                                       (round(low, SCORE_DECIMALS), round(high, SCORE_DECIMALS))))
    return resolved, scale


def from_records(records: list[dict[str, Any]]) -> list[ResolvedTarget]:
    """The resolved targets results.json holds."""
    return [ResolvedTarget(r["axis"], r["spec"], r["similarity"], r["m"],
                           tuple(r["reachable"])) for r in records]
