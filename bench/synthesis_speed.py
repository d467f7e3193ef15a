"""Synthesis throughput: the Ray Data actor pool against a plain single-process loop, and the
driver's memory as the dataset grows.

Run: ``.venv/bin/python bench/synthesis_speed.py [--checkpoint DIR] [--device cuda]`` (also
``make bench``). It renders a small face world for the inquiry images into a scratch folder,
then, in one run:

1. the plain loop: load the generator, plan, and sample + measure + encode + write every shard
   in this process, with the same ``write_sampled_shard`` the actors call;
2. ``factory synthesize`` (Ray Data) with 1 actor, then with 2 actors;
3. the driver's peak RSS for N and 10 N images (1-step sampling, each size in a fresh process)
   and their ratio (target: within 1.2x).

The plain loop and every actor run the same model, batch size and sampler with the same torch
thread count (``--threads``, default 1); images/s are wall clock from the start of a run to its
last shard, loading and planning included. Ratios are measured in this one run.
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

from factory.config import FactoryConfig, load_config
from factory.faceworld.build import build_faceworld
from factory.synth.plan import shard_items
from factory.synth.synthesize import make_plan, synthesize, write_sampled_shard

TARGET_ONE_ACTOR = 0.9
TARGET_RSS_GROWTH = 1.2


SMOKE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                            "smoke.yaml")


def render_inquiries(root: str) -> None:
    """The smoke face world, with 64 held-out inquiry identities to feed the plan."""
    build_faceworld(load_config(SMOKE_CONFIG, [f"workdir={root}",
                                               "faceworld.inquiry_identities=64"]))


def bench_config(args, root: str, out: str, identities: int, actors: int,
                 steps: int | None = None) -> FactoryConfig:
    gpus = 1.0 if args.device == "cuda" else 0.0
    return load_config(None, [
        f"workdir={root}", f"synthesis.checkpoint={args.checkpoint}", f"synthesis.out={out}",
        f"synthesis.inquiry.identities={min(identities, 64)}",
        "synthesis.inquiry.max_similarity=1.0",
        f"synthesis.inquiry.mixup_identities={max(0, identities - 64)}",
        f"synthesis.images_per_identity={args.images_per_identity}",
        f"synthesis.identities_per_shard={args.identities_per_shard}",
        f"synthesis.sampling.steps={steps or args.steps}",
        f"synthesis.sampling.batch_size={args.batch_size}",
        f"synthesis.actors.num_actors={actors}",
        f"synthesis.actors.cpus_per_actor={0.9 if actors > 1 else 1.0}",
        f"synthesis.actors.threads_per_actor={args.threads}",
        f"synthesis.actors.gpus_per_actor={gpus / actors}",
    ])


def plain_loop(config: FactoryConfig, device: str, threads: int) -> tuple[int, float]:
    import torch

    from factory.train.generator_checkpoint import load_generator

    torch.set_num_threads(threads)
    started = time.perf_counter()
    generator = load_generator(config.synthesis_checkpoint_uri()).to(device)
    identities = make_plan(config, generator)
    images = 0
    for item in shard_items(identities, config.synthesis.identities_per_shard):
        images += write_sampled_shard(config.synthesis_out_uri(), item.shard, generator, item,
                                      config.synthesis, None, torch.device(device))
    return images, time.perf_counter() - started


def pipeline(config: FactoryConfig) -> tuple[int, float]:
    started = time.perf_counter()
    run = synthesize(config)
    return run.images_written, time.perf_counter() - started


def child_peak_rss(args, root: str, identities: int) -> dict:
    """Run one synthesis in a fresh interpreter and return its images and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--rss-child", str(identities), "--root", root,
               "--checkpoint", args.checkpoint, "--device", args.device,
               "--images-per-identity", str(args.images_per_identity),
               "--identities-per-shard", str(args.identities_per_shard),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def rss_child(args) -> None:
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False)
    out = tempfile.mkdtemp(prefix="rss-", dir=args.root)
    images, _ = pipeline(bench_config(args, args.root, out, args.rss_child, 1, steps=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": images, "peak_rss_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/faceworld-generator")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--images-per-identity", type=int, default=8)
    parser.add_argument("--identities-per-shard", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rss-identities", type=int, default=8)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.checkpoint = os.path.abspath(args.checkpoint)
    if args.rss_child:
        rss_child(args)
        return

    import ray

    with tempfile.TemporaryDirectory(prefix="synthesis-bench-") as root:
        render_inquiries(root)
        total = args.identities * args.images_per_identity
        print(f"workload: {total} images ({args.identities} identities x "
              f"{args.images_per_identity}), 32 px, DDIM {args.steps} steps, batch "
              f"{args.identities_per_shard * args.images_per_identity} per shard, "
              f"{args.threads} torch thread(s) per worker, device {args.device}")
        images, seconds = plain_loop(bench_config(args, root, f"{root}/plain", args.identities,
                                                  1), args.device, args.threads)
        plain = images / seconds
        print(f"plain loop            {images:5d} images {seconds:7.1f} s {plain:7.2f} img/s")
        ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=False)
        rates = {}
        for actors in (1, 2):
            images, seconds = pipeline(bench_config(args, root, f"{root}/pool{actors}",
                                                    args.identities, actors))
            rates[actors] = images / seconds
            print(f"Ray Data, {actors} actor(s)   {images:5d} images {seconds:7.1f} s "
                  f"{rates[actors]:7.2f} img/s  {rates[actors] / plain:.2f}x plain")
        ray.shutdown()
        small = child_peak_rss(args, root, args.rss_identities)
        large = child_peak_rss(args, root, 10 * args.rss_identities)
        growth = large["peak_rss_mib"] / small["peak_rss_mib"]
        print(f"driver peak RSS       {small['images']:5d} images {small['peak_rss_mib']:7.0f} "
              f"MiB; {large['images']} images {large['peak_rss_mib']:.0f} MiB: {growth:.2f}x")
        print(f"1 actor / plain loop: {rates[1] / plain:.2f} (target >= {TARGET_ONE_ACTOR}); "
              f"2 actors / 1 actor: {rates[2] / rates[1]:.2f}; driver RSS at 10x images: "
              f"{growth:.2f}x (target <= {TARGET_RSS_GROWTH})")


if __name__ == "__main__":
    main()
