"""The synthesis driver's start-up for a large inquiry set: memory and time until the first
work item can be sent, with the inquiries embedded in the driver (the path before issue 17) and
by the Ray Data stage on the actors (now).

Run: ``.venv/bin/python bench/driver_startup.py [--identities 10000] [--checkpoint DIR]``.
It writes an image folder of ``--identities`` identities (one 32 px noise image each: the cost
of embedding does not depend on what the faces show), then, each in a fresh interpreter with
Ray already started (both paths need it, so its start is not counted):

* ``driver``: load the whole generator, embed every inquiry in the driver process, plan, and
  encode the work items as before (embeddings as JSON text); with ``--before-code DIR`` (a
  checkout from before issue 17) this path runs that code, the planning included;
* ``actors``: check the checkpoint without loading weights, embed on one actor
  (``synthesis.actors``), plan, and encode the work items as rows with array embeddings.

Each prints one line: start-up seconds (checkpoint to work items), the driver's peak RSS
(MiB) and its RSS just before (imports and Ray client), and the work items' size in the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np


def write_inquiries(root: str, identities: int) -> None:
    """``root/id00000/0.jpg`` .. : one random 32 px JPEG per identity."""
    from factory.formats.images import encode_jpeg

    rng = np.random.default_rng(0)
    for index in range(identities):
        folder = os.path.join(root, f"id{index:05d}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        with open(os.path.join(folder, "0.jpg"), "wb") as stream:
            stream.write(encode_jpeg(pixels))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One measured start-up in this (fresh) process; prints its JSON line."""
    import ray

    from factory.config import load_config
    from factory.synth.plan import shard_items
    from factory.synth.synthesize import make_plan
    from factory.checkpoints.generator import load_generator

    config = load_config(None, [
        f"workdir={args.root}", f"synthesis.checkpoint={args.checkpoint}",
        f"synthesis.inquiry.data={args.inquiries}", f"synthesis.out={args.root}/out",
        f"synthesis.inquiry.identities={args.identities}",
        "synthesis.inquiry.max_similarity=1.0", "synthesis.identities_per_shard=8",
        "synthesis.actors.num_actors=1", "synthesis.actors.cpus_per_actor=1",
        f"synthesis.actors.threads_per_actor={args.threads}"])
    ray.init(num_cpus=2, log_to_driver=False)
    before = peak_rss_mib()
    started = time.perf_counter()
    if args.child == "driver":
        import torch

        torch.set_num_threads(args.threads)
        plan = make_plan(config, load_generator(args.checkpoint))
        # before issue 17's filter record, make_plan returned the identities alone
        identities = plan[0] if isinstance(plan, tuple) else plan
        items = shard_items(identities, config.synthesis.identities_per_shard)
        rows = [{"shard": item.shard, "item": json.dumps(
            [{**asdict(i), "embedding": np.asarray(i.embedding).tolist()}
             for i in item.identities])}
            for item in items]
        size = sum(len(row["item"]) for row in rows)
    else:
        from factory.checkpoints.generator import check_generator

        check_generator(args.checkpoint)
        identities, _ = make_plan(config)
        rows = [item.to_row() for item in
                shard_items(identities, config.synthesis.identities_per_shard)]
        size = sum(len(row["item"]) + row["embeddings"].nbytes for row in rows)
    seconds = time.perf_counter() - started
    print(json.dumps({"path": args.child, "identities": len(identities),
                      "startup_s": round(seconds, 1), "peak_rss_mib": round(peak_rss_mib()),
                      "rss_before_mib": round(before), "work_items_mib": round(size / 2**20, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--checkpoint", default="assets/faceworld-generator")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before-code", metavar="DIR",
                        help="a checkout from before issue 17: the driver path runs its code")
    parser.add_argument("--child", choices=["driver", "actors"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--inquiries", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    root = tempfile.mkdtemp(prefix="driver-startup-")
    inquiries = os.path.join(root, "inquiries")
    write_inquiries(inquiries, args.identities)
    for path in ("driver", "actors"):
        command = [sys.executable, __file__, "--child", path, "--root", root,
                   "--inquiries", inquiries, "--identities", str(args.identities),
                   "--checkpoint", os.path.abspath(args.checkpoint),
                   "--threads", str(args.threads)]
        env = dict(os.environ)
        if path == "driver" and args.before_code:
            env["PYTHONPATH"] = os.path.abspath(args.before_code)
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode:
            sys.exit(f"the {path} run failed:\n{result.stderr[-3000:]}")
        line = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{line['path']:>7}: {line['identities']} inquiries, start-up "
              f"{line['startup_s']} s, driver peak RSS {line['peak_rss_mib']} MiB "
              f"({line['rss_before_mib']} MiB before), work items "
              f"{line['work_items_mib']} MiB")


if __name__ == "__main__":
    main()
