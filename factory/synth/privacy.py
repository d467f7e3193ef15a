"""Privacy as the field measures it: every synthetic sample against every real identity center.

Center-to-center similarity (``factory analyze``'s first check) averages a synthetic identity's
samples, so a single sample that copies a real person hides in the mean. Here each sample's
embedding is compared with each real identity center, and a sample whose best score is above
the encoder's impostor threshold at ``synthesis.privacy.false_match_fpr`` (1e-4: DCFace's
operating point, whose threshold was 0.3 under its recognizer) is a false match with a real
identity. The false-match rate is the share of such samples; held-out real people (the inquiry
images, never trained on) give the rate an unrelated real face reaches, since with R real
identities even a perfect impostor distribution is matched with probability about R x FPR.
The same code serves E_id and the independent judge, each with its own threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from factory import layout, storage
from factory.config import FactoryConfig
from factory.eval.threshold import ThresholdEstimate, encoder_threshold
from factory.formats.images import decode_image
from factory.formats.shards import iter_shard, listed_shard_uris
from factory.models.identity import encode_images

BATCH = 256


def synthetic_embeddings(encoder: torch.nn.Module, image_size: int, dataset: str,
                         manifest: dict[str, Any]) -> tuple[np.ndarray, list[dict]]:
    """The encoder's unit-length embedding of every synthetic sample (real copies skipped),
    with its json, in shard order."""
    embeddings, metadata, pending = [], [], []
    for uri in listed_shard_uris(dataset, manifest):
        for sample in iter_shard(uri):
            if sample["json"].get("real"):
                continue
            pending.append(decode_image(sample["jpg"], f"{uri}:{sample['__key__']}"))
            metadata.append(sample["json"])
            if len(pending) == BATCH:
                embeddings.append(encode_images(encoder, image_size, np.stack(pending), BATCH))
                pending = []
    if pending:
        embeddings.append(encode_images(encoder, image_size, np.stack(pending), BATCH))
    return np.concatenate(embeddings), metadata


def privacy_threshold(config: FactoryConfig, encoder: torch.nn.Module, image_size: int
                      ) -> tuple[ThresholdEstimate | None, str]:
    """The encoder's threshold at ``privacy.false_match_fpr``, or None with the reason when
    the default benchmarks (the face world's validation ones) are not there; benchmarks the
    config names must exist."""
    fpr = config.synthesis.privacy.false_match_fpr
    if not config.synthesis.threshold_benchmarks and not all(
            storage.exists(uri) for uri in layout.validation_benchmark_uris(config)):
        return None, ("no validation benchmarks to set the FPR threshold on (set "
                      "synthesis.threshold_benchmarks)")
    return encoder_threshold(config, encoder, image_size, fpr), ""


def sample_privacy(embeddings: np.ndarray, labels: np.ndarray, real: np.ndarray,
                   estimate: ThresholdEstimate | None, reason: str,
                   held_out: np.ndarray | None) -> dict[str, Any]:
    """Every sample's best score against the real centers ``real``; the false matches above
    ``estimate``'s threshold (share of samples, and of identities with at least one), beside
    the share of held-out real images (``held_out``: their embeddings) above it."""
    maxima = (embeddings @ real.T).max(1)
    record: dict[str, Any] = {"samples": int(len(maxima)),
                              "max_similarity": float(maxima.max()),
                              "mean_max_similarity": float(maxima.mean()),
                              "false_match": None, "why_not": reason or None}
    if estimate is None:
        return record
    matched = maxima > estimate.threshold
    record["false_match"] = {
        "fpr": estimate.fpr, "threshold": estimate.threshold,
        "impostor_pairs": estimate.impostor_pairs, "benchmarks": estimate.benchmarks,
        "samples": int(matched.sum()), "rate": float(matched.mean()),
        "identities": int(len(np.unique(labels[matched]))),
        "of_identities": int(len(np.unique(labels))),
        "held_out_rate": None if held_out is None or not len(held_out) else
        float(((held_out @ real.T).max(1) > estimate.threshold).mean()),
        "held_out_images": 0 if held_out is None else int(len(held_out)),
    }
    return record


def sample_privacy_text(name: str, record: dict[str, Any]) -> str:
    """One printed line of :func:`sample_privacy`'s record."""
    text = (f"{name}: every synthetic sample against every real identity center: max "
            f"{record['max_similarity']:.3f}, mean of maxima {record['mean_max_similarity']:.3f}")
    matched = record["false_match"]
    if matched is None:
        return text + f"; false-match rate not measured ({record['why_not']})"
    text += (f"; false-match rate at FPR {matched['fpr']:g} (threshold "
             f"{matched['threshold']:.3f}): {100 * matched['rate']:.2f}% of samples "
             f"({matched['samples']}, in {matched['identities']} of {matched['of_identities']} "
             "identities)")
    if matched["held_out_rate"] is not None:
        text += (f"; held-out real images: {100 * matched['held_out_rate']:.2f}% of "
                 f"{matched['held_out_images']}")
    return text
