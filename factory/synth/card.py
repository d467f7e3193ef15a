"""The dataset card: ``README.md`` in a synthesised dataset, what a person needs before using it.

``factory synthesize`` writes it from the manifest; ``factory analyze`` rewrites it with the
statistics and privacy figures of its report. Either way it is rebuilt from the files in the
directory (``manifest.json``, ``report/analysis.json`` when present, the figures that exist)
and replaced atomically, so a rerun regenerates the card and never appends to it. The card
holds no timestamps: the same files give the same card.

Sections: contents (counts, shard pattern, per-sample fields), real images, provenance (code,
generator, E_id, sampler, inquiries), the requested m, the measured similarities, privacy, the
config, and how to load the data (webdataset, Ray Data, Hugging Face ``datasets``, ``factory
export``).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from factory import layout, storage
from factory.config import FactoryConfig
from factory.eval.generator_report import sampler_text
from factory.synth.layout import (
    ANALYSIS_FILE,
    CARD_FILE,
    COMPLIANCE_FIGURE,
    HISTOGRAM_FILE,
    MANIFEST_FILE,
    PRIVACY_FIGURE,
    REPORT_DIR,
    SAMPLES_FIGURE,
)
from factory.synth.privacy import sample_privacy_text

_FIGURES = {
    HISTOGRAM_FILE: "similarity of every synthetic sample to its inquiry and to its identity "
                    "center",
    f"{REPORT_DIR}/{COMPLIANCE_FIGURE}": "requested m against measured similarity to the "
                                         "inquiry",
    f"{REPORT_DIR}/{SAMPLES_FIGURE}": "the first identities' samples, one identity per row",
    f"{REPORT_DIR}/{PRIVACY_FIGURE}": "each synthetic identity's maximum similarity to a real "
                                      "training identity",
}


def write_card(dataset: str) -> str:
    """(Re)write ``README.md`` in ``dataset`` from the files there; returns its URI."""
    manifest = json.loads(storage.read_text(storage.join(dataset, MANIFEST_FILE)))
    analysis_uri = storage.join(dataset, REPORT_DIR, ANALYSIS_FILE)
    analysis = json.loads(storage.read_text(analysis_uri)) if storage.exists(analysis_uri) \
        else None
    figures = [name for name in _FIGURES if storage.exists(storage.join(dataset, name))]
    uri = storage.join(dataset, CARD_FILE)
    storage.write_text(uri, card_text(dataset, manifest, analysis, figures))
    return uri


def card_text(dataset: str, manifest: dict[str, Any], analysis: dict[str, Any] | None,
              figures: list[str]) -> str:
    """The card's Markdown. ``figures`` are the paths (relative to ``dataset``) to link."""
    sections = [
        _title(manifest),
        _contents(manifest),
        _real_images(manifest),
        _provenance(manifest),
        _requested_m(manifest),
        _similarity(manifest, analysis, figures),
        _privacy(analysis, figures),
        _config(manifest),
        _loading(dataset, manifest),
    ]
    return "\n\n".join(sections) + "\n"


def _title(manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    return (f"# Synthetic face dataset `{manifest['config']['name']}`\n\n"
            f"{counts['identities']} identities, {counts['samples']} images in "
            f"{counts['shards']} WebDataset shards, made by {manifest['code_version']}. This "
            "card is written by `factory synthesize` and rewritten by `factory analyze`; "
            "`manifest.json` holds every number in it.")


def _contents(manifest: dict[str, Any]) -> str:
    counts, synthesis = manifest["counts"], manifest["config"]["synthesis"]
    size = manifest.get("generator_checkpoint", {}).get("image_size")
    return _items("Contents", [
        ("identities", f"{counts['identities']} ({counts['mixup_identities']} made by identity "
                       f"mixup of two inquiry identities{_mixup_labels(counts)})"),
        ("images", f"{counts['samples']} ({counts['synthetic_images']} synthetic, "
                   f"{counts['real_images']} real), {synthesis['images_per_identity']} "
                   "synthetic per identity"),
        ("shards", f"{counts['shards']}, `{manifest['shard_pattern']}`"),
        ("image format", f"JPEG, quality {synthesis['jpeg_quality']}"
                         + (f", {size} x {size} px" if size else "")),
        ("per sample", "`{key}.jpg`, `{key}.cls` (the label), `{key}.json` (label, inquiry, m, "
                       "similarity_inquiry, similarity_center, seed, mixup, generator, "
                       "sampler, steps, real)"),
    ])


def _mixup_labels(counts: dict[str, Any]) -> str:
    """How the factory's recognizer trains on mixed identities, when the manifest says."""
    mode = counts.get("mixup_labels")
    if not counts["mixup_identities"] or mode is None:
        return ""
    meaning = ("SynFace's two-hot label over its parents' classes" if mode == "soft"
               else "a class of its own")
    return f"; `mixup_labels: {mode}`, each trained with {meaning}"


def _real_images(manifest: dict[str, Any]) -> str:
    copies = manifest["counts"]["real_images"]
    setting = str(manifest["config"]["synthesis"]["include_inquiry_images"]).lower()
    if not manifest["contains_real_images"]:
        return ("## Real images\n\n**None.** Every image was sampled by the generator "
                f"(`synthesis.include_inquiry_images: {setting}`). The generator and its E_id "
                "were trained on real faces: see the privacy check below.")
    return (f"## Real images\n\n**{copies} real images are included**: each inquiry identity's "
            "real image was copied in as one more sample of its identity "
            f"(`synthesis.include_inquiry_images: {setting}`), marked `\"real\": true` in its "
            "`.json`. Filter them out before sharing the data as free of real faces.")


def _provenance(manifest: dict[str, Any]) -> str:
    record = manifest.get("generator_checkpoint", {})
    config = FactoryConfig.model_validate(manifest["config"])
    synthesis, counts = config.synthesis, manifest["counts"]
    return _items("Provenance", [
        ("code", manifest["code_version"]),
        ("generator", f"`{manifest['generator']}` (checkpoint `{manifest['generator_uri']}`)"),
        ("generator trained on", _code(record.get("data"))),
        ("generator objective", _objective_text(record.get("objective"))),
        ("E_id", f"{_code(record.get('identity_encoder'))}: the identity encoder the generator "
                 "is conditioned on, which measured every similarity below"),
        ("sampler", sampler_text(synthesis.sampling.model_dump())),
        ("inquiry identities", f"{counts['identities'] - counts['mixup_identities']} from "
                               f"`{layout.synthesis_inquiry_uri(config)}` (asked for "
                               f"{synthesis.inquiry.identities}, every pair below cosine "
                               f"{_filter_text(manifest, synthesis.inquiry.max_similarity)})"),
        ("seed", str(synthesis.seed)),
    ])


def _objective_text(objective: dict[str, Any] | None) -> str:
    """The checkpoint's training objective in one line (older checkpoints do not record it)."""
    if not objective:
        return "not recorded in the checkpoint (see its config.yaml)"
    low, high = objective["m_range"]
    gamma = objective["min_snr_gamma"]
    schedule = objective["target_schedule"]
    if schedule == "ramp" and objective.get("ramp_full_at", 1.0) != 1.0:
        schedule += f" (full weight from t/T = {objective['ramp_full_at']:g})"
    return (f"L_MSE + {objective['lambda']:g} L_SimMat, {schedule} target, "
            f"m in [{low:g}, {high:g}], "
            + (f"Min-SNR gamma {gamma:g}" if gamma else "no Min-SNR weighting")
            + f", condition dropout {objective['condition_dropout']:g}, EMA "
            f"{objective['ema_decay']:g}" + _ema_reached_text(objective))


def _ema_reached_text(objective: dict[str, Any]) -> str:
    """Where the EMA's last update stayed below the configured decay (diffusers' warm-up ramps
    it as (1 + n) / (10 + n)), the decay it used; empty otherwise and for checkpoints that do
    not record it."""
    reached = objective.get("ema_decay_reached")
    if reached is None or reached >= objective["ema_decay"] - 1e-9:
        return ""
    return f" (warm-up: {reached:.4f} at the last update)"


def _filter_text(manifest: dict[str, Any], max_similarity: float | str) -> str:
    """The inquiry filter's threshold, with its origin when E_id's FPR statistics set it."""
    record = manifest.get("inquiry_filter")
    if not record or record.get("threshold") == max_similarity:
        return str(max_similarity)
    return (f"{record['threshold']:.4f}, E_id's {max_similarity} threshold over "
            f"{record['impostor_pairs']:,} impostor pairs; {record['passed']} of "
            f"{record['candidates']} candidates passed")


def _code(value: Any) -> str:
    return f"`{value}`" if value else "not recorded"


def _requested_m(manifest: dict[str, Any]) -> str:
    spec = manifest["config"]["synthesis"]["m"]
    described = {
        "values": f"the values {', '.join(map(str, spec['values']))}, cycled over each "
                  "identity's images",
        "range": f"{spec['low']} to {spec['high']} every {spec['interval']}, cycled over each "
                 "identity's images",
        "uniform": f"drawn uniformly from [{spec['low']}, {spec['high']}] per image",
        "normal": f"drawn per image from a normal of mean {spec['mean']} and std {spec['std']}, "
                  "clipped to [-1, 1]",
    }[spec["kind"]]
    text = f"## Requested similarity m\n\nm (the similarity asked of each image): {described}."
    histograms = manifest["histograms"]
    if "m" not in histograms:
        return text + " The per-bin counts are not in this manifest (written before they were)."
    rows = [(_bin(histograms["edges"], index), count)
            for index, count in enumerate(histograms["m"]) if count]
    return text + "\n\n" + _table(["requested m", "synthetic images"], rows)


def _similarity(manifest: dict[str, Any], analysis: dict[str, Any] | None,
                figures: list[str]) -> str:
    histograms = manifest["histograms"]
    rows = [(_bin(histograms["edges"], index), to_inquiry, to_center)
            for index, (to_inquiry, to_center) in enumerate(zip(
                histograms["similarity_inquiry"], histograms["similarity_center"]))
            if to_inquiry or to_center]
    parts = ["## Measured similarity",
             _table(["E_id cosine", "to inquiry", "to identity center"], rows)]
    if analysis is not None:
        spread = analysis["similarity_to_center"]
        parts.append(f"From `factory analyze`: similarity to the identity center "
                     f"{spread['mean']:.3f} +- {spread['std']:.3f}; Spearman(requested m, "
                     f"similarity to inquiry) = {analysis['m_spearman']:.3f}; mean similarity "
                     f"between identity centers {analysis['between_identity_centers']:.3f}.")
        if analysis.get("judge"):
            parts.append(_judged_similarity(analysis["judge"]))
    else:
        parts.append(f"Run `factory analyze DIR` for the per-bin statistics, the m-compliance "
                     "curve and the privacy check.")
    parts += [_figure(name) for name in figures if name != f"{REPORT_DIR}/{PRIVACY_FIGURE}"]
    return "\n\n".join(parts)


def _judged_similarity(judge: dict[str, Any]) -> str:
    """The independent judge's figures: E_id generated and measured the data, the judge only
    measures it, so its numbers are the evidence."""
    spearman = "n/a" if judge["m_spearman"] is None else f"{judge['m_spearman']:.3f}"
    per_m = ", ".join(f"m {m}: {value:.3f}"
                      for m, value in judge["similarity_to_inquiry_per_m"].items())
    spread = judge["similarity_to_center"]
    return (f"**The independent judge** (`{judge['checkpoint']}`, no identity shared with E_id; "
            f"its figures are the evidence): Spearman(requested m, similarity to inquiry) = "
            f"{spearman} over plain identities; mean similarity to inquiry {per_m}; similarity "
            f"to its own identity centers {spread['mean']:.3f} +- {spread['std']:.3f}.")


def _privacy(analysis: dict[str, Any] | None, figures: list[str]) -> str:
    if analysis is None:
        return ("## Privacy\n\nNot checked yet: `factory analyze DIR` compares every synthetic "
                "identity with the real training identities and rewrites this card.")
    privacy = analysis["privacy"]
    lines = [
        "## Privacy",
        f"Each synthetic identity's center against every real identity center of "
        f"`{privacy['real_data']}` (E_id cosine): at most {privacy['max_similarity']:.3f}, "
        f"mean of the maxima {privacy['mean_max_similarity']:.3f}; **{privacy['flagged']} "
        f"identities at or above the threshold {privacy['threshold']}** (listed in "
        f"`{REPORT_DIR}/{ANALYSIS_FILE}`).",
    ]
    reference = privacy.get("held_out_reference")
    if reference is not None:
        lines.append(f"For scale, {reference['identities']} held-out real identities "
                     f"(`{reference['data']}`) reach {reference['max_similarity']:.3f} at most "
                     f"(mean of maxima {reference['mean_max_similarity']:.3f}), "
                     f"{reference['at_or_above_threshold']} of them at or above the threshold.")
    if privacy.get("per_sample"):
        lines.append(f"Per sample (a leak hides in single samples): "
                     f"{sample_privacy_text('E_id', privacy['per_sample'])}.")
    if analysis.get("judge"):
        judged = analysis["judge"]["privacy"]
        held_out = judged["held_out_reference"]
        lines.append(f"The independent judge: at most {judged['max_similarity']:.3f}, mean of "
                     f"the maxima {judged['mean_max_similarity']:.3f}, {judged['flagged']} "
                     f"identities at or above {judged['threshold']}" + (
                         "." if held_out is None else
                         f"; held-out real identities: mean of maxima "
                         f"{held_out['mean_max_similarity']:.3f}."))
        if judged.get("per_sample"):
            lines.append(f"Per sample, by the judge: "
                         f"{sample_privacy_text('judge', judged['per_sample'])}.")
    if f"{REPORT_DIR}/{PRIVACY_FIGURE}" in figures:
        lines.append(_figure(f"{REPORT_DIR}/{PRIVACY_FIGURE}"))
    return "\n\n".join(lines)


def _config(manifest: dict[str, Any]) -> str:
    synthesis = yaml.safe_dump({"synthesis": manifest["config"]["synthesis"]}, sort_keys=False,
                               default_flow_style=None)
    return ("## Config\n\nThe resolved config that made this dataset is `config` in "
            f"`{MANIFEST_FILE}`; its synthesis section:\n\n```yaml\n{synthesis}```")


def _loading(dataset: str, manifest: dict[str, Any]) -> str:
    pattern = storage.join(dataset, manifest["shard_pattern"])
    shards = storage.join(dataset, manifest["shard_pattern"].split("/")[0])
    return f"""## How to load it

With `webdataset` (each sample: HxWx3 uint8 RGB, label, metadata):

```python
import webdataset as wds

samples = wds.WebDataset("{pattern}", shardshuffle=False)
for image, label, meta in samples.decode("rgb8").to_tuple("jpg", "cls", "json"):
    ...
```

With Ray Data (decodes `jpg` to an array, `cls` to an int, `json` to a dict; the tars only,
not the Parquet files beside them):

```python
import ray

dataset = ray.data.read_webdataset("{shards}", file_extensions=["tar"])
```

Each tar has its samples' metadata beside it, one Parquet row per sample (key, label, requested
m, measured similarities, mixup parents, sampler settings, the image's byte offset in the tar),
so pandas, pyarrow, DuckDB or `ray.data.read_parquet` select samples without reading an image:

```sql
SELECT key, label, m, similarity_center FROM '{shards}/*.parquet'
WHERE similarity_center BETWEEN 0.7 AND 0.8
```

With Hugging Face `datasets` (each row: `jpg` a PIL image, `cls` the label, `json` the
metadata; `datasets` is not a facefactory dependency, its test extra installs it):

```python
from datasets import load_dataset

dataset = load_dataset("webdataset", data_files={{"train": "{shards}/*.tar"}}, split="train")
```

As insightface RecordIO (arcface_torch, AdaFace) or an image folder, optionally selected by
metadata (`--m LOW HIGH`, `--similarity LOW HIGH`, `--mixup-share SHARE`), with every sample's
metadata in `metadata.jsonl`:

```
factory export {dataset} --format rec --out OUT
factory export {dataset} --format folder --out OUT
```"""


def _bin(edges: list[float], index: int) -> str:
    """``[+0.1, +0.2)`` for bin ``index``; the last bin is closed, as numpy's histogram is."""
    close = "]" if index == len(edges) - 2 else ")"
    return f"[{edges[index]:+.1f}, {edges[index + 1]:+.1f}{close}"


def _figure(name: str) -> str:
    return f"![{_FIGURES[name]}]({name})"


def _items(title: str, items: list[tuple[str, str]]) -> str:
    return f"## {title}\n\n" + "\n".join(f"- **{name}**: {text}" for name, text in items)


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
