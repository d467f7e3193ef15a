"""What each generator lever buys, measured on the validation identities (never the report's).

Run: ``.venv/bin/python bench/generator_levers.py --config CONFIG --lever
NAME=CHECKPOINT[@SCALE[,LOW,HIGH]] [--lever ...] [--out DIR] [KEY=VALUE ...]`` (config
overrides as the factory commands take them; ``--lever`` repeatable: a name, a generator
checkpoint, the classifier-free guidance scale to sample it with, 1 when omitted, and the
interval of t/T it applies in, every step when omitted). Every lever goes through ``factory generator-report
--validation``'s measurement (inquiry identities 0 .. ``generator.compliance.validation_identities``
- 1, the config's seeds and m values, the judge and E_id, the real reference, the Frechet
distance in the judge's features), without the shuffled-m control, and gives one row: the judge's
mean similarity and rank-1 at m = +1, Spearman, the judge's mean at m = 0, the Frechet distance
over its real-vs-real floor, the Frechet distance of the m = +1 samples over that of real photos
with their identity structure (``frechet_identity_matched``: 1 is as realistic as real photos
of as many identities), the checkpoint's steps and the hours of its own training run (from
the throughput its ``generator.json`` logged; earlier stages it started from are not counted).
The real genuine row by the same judge is printed above the table. Writes ``levers.json`` and
``levers.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os

from factory.config import load_config
from factory.eval.generator_report import generator_report
from factory.report import format_table
from factory.checkpoints.encoder import checkpoint_meta


def parse_lever(text: str) -> tuple[str, str, float, tuple[float, float]]:
    """``name=path@2.0,0,0.5`` -> (name, path, 2.0, (0.0, 0.5)); the scale defaults to 1 (no
    guidance), the interval to every step."""
    name, separator, rest = text.partition("=")
    if not separator or not name or not rest:
        raise SystemExit(f"--lever {text!r}: expected NAME=CHECKPOINT[@SCALE[,LOW,HIGH]]")
    checkpoint, _, guidance = rest.rpartition("@") if "@" in rest else (rest, "", "1")
    try:
        numbers = [float(part) for part in guidance.split(",")]
    except ValueError:
        raise SystemExit(f"--lever {text!r}: the guidance {guidance!r} is not SCALE[,LOW,HIGH]")
    if len(numbers) not in (1, 3):
        raise SystemExit(f"--lever {text!r}: the guidance {guidance!r} is not SCALE[,LOW,HIGH]")
    interval = (numbers[1], numbers[2]) if len(numbers) == 3 else (0.0, 1.0)
    return name, checkpoint, numbers[0], interval


def training_hours(meta: dict, batch_size: int) -> float:
    """Hours of the checkpoint's own run, from the images/s of each logged window."""
    seconds, previous = 0.0, 0
    for entry in meta.get("history", []):
        steps = entry["step"] - previous
        previous = entry["step"]
        if entry.get("images_per_s"):
            seconds += steps * batch_size / entry["images_per_s"]
    return seconds / 3600


def measure_lever(config_path: str, overrides: list[str], name: str, checkpoint: str,
                  scale: float, interval: tuple[float, float], out: str) -> dict:
    config = load_config(config_path, [
        *overrides, f"generator.checkpoint={checkpoint}",
        f"generator.sampling.guidance_scale={scale}",
        f"generator.sampling.guidance_interval=[{interval[0]}, {interval[1]}]",
        "generator.compliance.shuffled_m_control=false",
        "generator.compliance.lambda0_checkpoint=",
        f"evaluate.out={os.path.join(out, name.replace(' ', '_'))}"])
    result, _ = generator_report(config, validation=True)
    judge = result.headline
    meta = checkpoint_meta(checkpoint)
    frechet = result.frechet or {}
    matched = result.frechet_matched or {}
    real = result.real.get(judge.recognizer)
    return {
        "lever": name, "checkpoint": checkpoint, "guidance_scale": scale,
        "guidance_interval": list(interval),
        "steps": meta.get("step"), "recognizer": judge.recognizer,
        "mean_at_m1": judge.at(1.0)["mean"], "rank1_at_m1": judge.at(1.0)["rank1"],
        "mean_at_m0": None if judge.at(0.0) is None else judge.at(0.0)["mean"],
        "spearman": judge.spearman, "monotonic": judge.monotonic,
        "frechet_ratio": (frechet["synthetic_vs_real"] / frechet["real_vs_real"]
                          if frechet else None),
        "frechet_matched_ratio": (matched["synthetic_vs_real"] / matched["matched_real_vs_real"]
                                  if matched else None),
        "training_hours": training_hours(meta, config.generator.optimizer.batch_size),
        "real": None if real is None else real.summary(),
    }


def lever_table(rows: list[dict]) -> str:
    headers = ["lever", "steps", "judge mean m=+1", "rank-1", "Spearman", "monotonic",
               "judge mean m=0", "Frechet / floor", "m=+1 Frechet / real", "hours (this run)"]
    return format_table(headers, [[
        row["lever"], row["steps"], row["mean_at_m1"], f"{100 * row['rank1_at_m1']:.0f}%",
        row["spearman"], "yes" if row["monotonic"] else "no",
        "n/a" if row["mean_at_m0"] is None else row["mean_at_m0"],
        "n/a" if row["frechet_ratio"] is None else f"{row['frechet_ratio']:.1f}x",
        "n/a" if row.get("frechet_matched_ratio") is None
        else f"{row['frechet_matched_ratio']:.1f}x",
        f"{row['training_hours']:.2f}"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--lever", action="append", required=True, metavar="NAME=CKPT[@SCALE]")
    parser.add_argument("--out", default="runs/generator-levers")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for text in args.lever:
        name, checkpoint, scale, interval = parse_lever(text)
        rows.append(measure_lever(args.config, args.overrides, name, checkpoint, scale, interval,
                                  args.out))
        print(lever_table(rows[-1:]), flush=True)
    real = rows[0]["real"]
    lines = []
    if real is not None:
        overall = real["kinds"]["all"]
        lines.append(f"real genuine by the {rows[0]['recognizer']}: mean {overall['mean']:.3f} "
                     f"+- {overall['std']:.3f}, rank-1 {100 * overall['rank1']:.0f}% "
                     f"({real['identities']} held-out real identities); per kind: " + ", ".join(
                         f"{kind} {figures['mean']:.3f}" for kind, figures in
                         real["kinds"].items() if kind != "all"))
    lines.append(lever_table(rows))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "levers.md"), "w") as stream:
        stream.write(text + "\n")
    with open(os.path.join(args.out, "levers.json"), "w") as stream:
        json.dump({"config": args.config, "overrides": args.overrides, "rows": rows}, stream,
                  indent=2)


if __name__ == "__main__":
    main()
