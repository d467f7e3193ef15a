"""Synthesis throughput with FLOP accounting: each solver setting's sampling rate against the
machine's attainable matmul rate, the plain loop against the Ray Data actor pool, and the
driver's memory as the dataset grows.

Run: ``.venv/bin/python bench/synthesis_speed.py [--checkpoint DIR] [--device cuda]
[--repeats 3]`` (also ``make bench``). In one run:

1. **Attainable**: the best of several timed square matmuls with the workers' torch thread
   count, in FLOP/s, in each precision the settings sample in (``--solvers ddim:20@bf16``:
   bf16; ``auto``: float32 on a CPU, bf16 on a GPU); measured again after the sampling
   section, and when the two are far apart the machine was busy and no fraction is a figure.
2. **FLOPs per image**, counted by ``torch.utils.flop_counter.FlopCounterMode`` on one UNet
   forward (times the steps) plus one E_id forward; the counter sees matmuls, convolutions and
   attention, not element-wise work, so the fractions below are of the dense-algebra part.
3. **Sampling** per solver setting (``--solvers``): sample + E_id over a fixed batch in this
   process, images/s, achieved FLOP/s and its fraction of the attainable rate. With
   ``--device cuda`` also a batch-size sweep (``--batch-sizes``) of the first setting.
4. **End to end** (load, plan, sample, measure, encode, write, manifest): the plain loop
   (``write_sampled_shard`` in this process), then ``factory synthesize`` with each actor count
   in ``--actors`` for each place of the JPEG encoding in ``--encode`` (``thread``: inside the
   actor, overlapped with the next batch; ``stage``: a separate Ray Data CPU stage); for a
   pool, where its time went (checking and planning, start-up until the first shard began,
   time inside shards, finishing); the plain loop writes the same dataset, and a pool whose
   shards differ from its bytes stops the benchmark.
5. **Scaling ceiling** (CPU): the first setting's sampling rate in 1 and in N processes at
   once (N = the largest ``--actors``), each on one core's worth of threads, with no Ray at
   all. N processes' total over one process is what N actors over one actor could reach with
   no pool cost: cores that share caches and memory bandwidth do not add up to N.
6. The driver's peak RSS for N and 10 N images (1-step sampling, fresh processes) and their
   ratio (target: within 1.2x).

Every timed figure is the median of ``--repeats`` runs with the spread (min-max) beside it; a
single run on a shared machine is not a figure. The plain loop and every actor run the same
model, batches and sampler with the same torch thread count (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from factory import layout
from factory.config import FactoryConfig, SamplingConfig, load_config
from factory.faceworld.build import build_faceworld
from factory.models.inference import InferenceSettings, prepare, resolve_precision
from factory.models.sampling import SOLVER_NAMES, autocast_context, sample_images
from factory.synth.plan import shard_items
from factory.synth.shard_writer import write_sampled_shard
from factory.synth.synthesize import finish_dataset, make_plan, synthesize
from factory.checkpoints.generator import LoadedGenerator, load_generator
from sampler_settings import settings_argument

TARGET_ONE_ACTOR = 0.95
TARGET_TWO_ACTORS = 1.8
TARGET_RSS_GROWTH = 1.2
MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}
MATMUL_TRIES = 20
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

SMOKE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                            "smoke.yaml")


def render_inquiries(root: str) -> None:
    """The smoke face world, with 64 held-out inquiry identities to feed the plan."""
    build_faceworld(load_config(SMOKE_CONFIG, [f"workdir={root}",
                                               "faceworld.inquiry_identities=64"]))


def bench_config(args, root: str, out: str, identities: int, actors: int,
                 steps: int | None = None, encode: str = "thread") -> FactoryConfig:
    gpus = 1.0 if args.device == "cuda" else 0.0
    solver, default_steps, precision, compiled = args.settings[0]
    return load_config(None, [
        f"workdir={root}", f"synthesis.checkpoint={args.checkpoint}", f"synthesis.out={out}",
        f"synthesis.inquiry.identities={min(identities, 64)}",
        "synthesis.inquiry.max_similarity=1.0",
        f"synthesis.inquiry.mixup_identities={max(0, identities - 64)}",
        f"synthesis.images_per_identity={args.images_per_identity}",
        f"synthesis.identities_per_shard={args.identities_per_shard}",
        f"synthesis.sampling.solver={solver}",
        f"synthesis.sampling.steps={steps or default_steps}",
        f"synthesis.sampling.batch_size={args.batch_size}",
        f"synthesis.sampling.precision={precision}",
        f"synthesis.sampling.compile={compiled}",
        f"synthesis.actors.num_actors={actors}",
        f"synthesis.actors.cpus_per_actor={0.9 if actors > 1 else 1.0}",
        f"synthesis.actors.threads_per_actor={args.threads}",
        f"synthesis.actors.gpus_per_actor={gpus / actors}",
        f"synthesis.actors.encode={encode}",
        f"runtime.mlflow_tracking_uri=sqlite:///{root}/mlflow.db",
    ])


def summary(values: list[float]) -> str:
    """Median and spread of repeated measurements, e.g. ``4.41 (4.30-4.52)``."""
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def attainable_flops(device: str, threads: int, precision: str) -> float:
    """The best FLOP/s of ``MATMUL_TRIES`` square matmuls in the dtype the sampler runs in
    (``precision``: fp32, bf16 or fp16)."""
    torch.set_num_threads(threads)
    size = MATMUL_SIZE[device]
    dtype = PRECISION_DTYPES[precision]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(MATMUL_TRIES):
        synchronize(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def flops_per_image(generator: LoadedGenerator, settings: InferenceSettings,
                    steps: int) -> dict[str, float]:
    """Counted FLOPs of one image: ``steps`` UNet forwards and one E_id forward."""
    device = torch.device(settings.device)
    batch = 4
    noisy = torch.zeros(batch, 3, generator.image_size, generator.image_size, device=device)
    timesteps = torch.full((batch,), 500, device=device, dtype=torch.long)
    identity = torch.ones(batch, generator.model.condition.config.identity_dim, device=device)
    with torch.inference_mode(), autocast_context(device, settings.autocast):
        with FlopCounterMode(display=False) as unet:
            generator.model(noisy, timesteps, identity, torch.zeros(batch, device=device))
        with FlopCounterMode(display=False) as encoder:
            generator.encoder(noisy)
    per_unet = unet.get_total_flops() / batch
    per_encoder = encoder.get_total_flops() / batch
    return {"unet_forward": per_unet, "encoder_forward": per_encoder,
            "image": steps * per_unet + per_encoder}


def sampling_rate(generator: LoadedGenerator, settings: InferenceSettings, solver: str,
                  steps: int, images: int, batch_size: int) -> float:
    """images/s of sample + E_id over ``images`` samples in batches of ``batch_size``."""
    device = torch.device(settings.device)
    dim = generator.model.condition.config.identity_dim
    identity = torch.nn.functional.normalize(torch.randn(images, dim), dim=-1).to(device)
    m = torch.linspace(-1, 1, images, device=device)
    synchronize(settings.device)
    started = time.perf_counter()
    for start in range(0, images, batch_size):
        rows = slice(start, start + batch_size)
        samples = sample_images(generator.model, generator.scheduler, identity[rows], m[rows],
                                list(range(start, min(start + batch_size, images))),
                                generator.image_size, steps, solver=solver,
                                **settings.sampler_options())
        with torch.inference_mode(), autocast_context(device, settings.autocast):
            generator.encoder(samples)
    synchronize(settings.device)
    return images / (time.perf_counter() - started)


def warm_sampler(args, solver: str, precision: str, compiled: bool
                 ) -> tuple[LoadedGenerator, InferenceSettings]:
    """A freshly loaded generator (compiling wraps the UNet in place, so one per setting),
    prepared for the setting and run once over a 2-step batch, so that no timed run pays for
    first-call set-up."""
    generator = load_generator(args.checkpoint)
    settings = prepare(generator, SamplingConfig(batch_size=args.batch_size, precision=precision,
                                                 compile=compiled), args.device)
    sampling_rate(generator, settings, solver, 2, settings.batch_size, settings.batch_size)
    return generator, settings


def repeated(repeats: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(repeats)]


def plain_loop(config: FactoryConfig, device: str, threads: int
               ) -> tuple[int, float, list[dict]]:
    """The same dataset as ``factory synthesize`` (shards, manifest, histogram, MLflow run,
    card) written by one loop in this process: load, embed the inquiries, plan, sample and
    write every shard, finish. Returns the images, the seconds and the manifest's shard list
    (to check the pool wrote the same bytes)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    generator = load_generator(layout.synthesis_checkpoint_uri(config))
    settings = prepare(generator, config.synthesis.sampling, device)
    identities, inquiry_filter = make_plan(config, generator)
    images = 0
    for item in shard_items(identities, config.synthesis.identities_per_shard):
        images += write_sampled_shard(layout.synthesis_out_uri(config), item.shard, generator, item,
                                      config.synthesis, settings)
    sampled = time.perf_counter() - started
    manifest = finish_dataset(config, generator.meta, identities, inquiry_filter,
                              images / sampled)
    return images, time.perf_counter() - started, manifest["shards"]


def child_peak_rss(args, root: str, identities: int) -> dict:
    """Run one synthesis in a fresh interpreter and return its images and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--rss-child", str(identities), "--root", root,
               "--checkpoint", args.checkpoint, "--device", args.device,
               "--images-per-identity", str(args.images_per_identity),
               "--identities-per-shard", str(args.identities_per_shard),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--solvers", args.solvers]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_ray() -> None:
    """A private local cluster (never another session's cluster; its workers know which)."""
    from factory.runtime import start_local_ray

    start_local_ray(os.cpu_count() or 1, log_to_driver=False)


def concurrent_sampling(args, processes: int) -> float:
    """Total images/s of ``processes`` fresh interpreters sampling the first setting at the
    same moment (each loads the model first, then all start at one wall-clock time)."""
    start_at = time.time() + 20 + 5 * processes  # loading and a warm-up batch come first
    command = [sys.executable, __file__, "--sampling-child", str(start_at),
               "--checkpoint", args.checkpoint, "--device", args.device,
               "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--solvers", args.solvers, "--sampling-images", str(args.sampling_images)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    rates = []
    for child in children:
        output, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"a sampling process failed (exit {child.returncode})")
        rates.append(float(output.strip().splitlines()[-1]))
    return sum(rates)


def sampling_child(args) -> None:
    """One process of :func:`concurrent_sampling`: load, warm up, wait, time, print img/s."""
    torch.set_num_threads(args.threads)
    solver, steps, precision, compiled = args.settings[0]
    generator, settings = warm_sampler(args, solver, precision, compiled)
    time.sleep(max(0.0, args.sampling_child - time.time()))
    print(sampling_rate(generator, settings, solver, steps, args.sampling_images,
                        settings.batch_size))


def scaling_section(args) -> dict:
    """Median total rate of 1 and of N concurrent sampling processes, and their ratio."""
    processes = max(args.actors)
    one = repeated(args.repeats, lambda: concurrent_sampling(args, 1))
    many = repeated(args.repeats, lambda: concurrent_sampling(args, processes))
    ratio = statistics.median(many) / statistics.median(one)
    print(f"sampling in 1 process                    {summary(one)} img/s")
    print(f"sampling in {processes} processes at once          {summary(many)} img/s  "
          f"{ratio:.2f}x one: the most {processes} actors can give over 1 on this machine")
    return {"one": one, "many": many, "processes": processes}


def rss_child(args) -> None:
    start_ray()
    out = tempfile.mkdtemp(prefix="rss-", dir=args.root)
    run = synthesize(bench_config(args, args.root, out, args.rss_child, 1, steps=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": run.images_written, "peak_rss_mib": peak}))


def resolved_precision(precision: str, device: str) -> str:
    """What ``synthesis.sampling.precision`` becomes on ``device`` (``auto``: fp32 on a CPU)."""
    return resolve_precision(precision, torch.device(device))


def sampling_section(args, attainable: dict[str, float]) -> dict:
    """Per solver setting: images/s, achieved FLOP/s and the fraction of the attainable rate
    in the setting's own precision."""
    results, first = {}, None
    for solver, steps, precision, compiled in args.settings:
        generator, settings = warm_sampler(args, solver, precision, compiled)
        if first is None:
            first = (solver, steps, settings, generator)
            print(f"inference settings: {settings.record()}")
        flops = flops_per_image(generator, settings, steps)
        rates = repeated(args.repeats, lambda: sampling_rate(
            generator, settings, solver, steps, args.sampling_images, settings.batch_size))
        achieved = statistics.median(rates) * flops["image"]
        peak = attainable[settings.precision]
        name = f"{solver}:{steps}@{settings.precision}" + ("+compile" if compiled else "")
        results[name] = {"images_per_s": rates, "flops": flops, "fraction": achieved / peak}
        print(f"{SOLVER_NAMES[solver]:16s} {settings.precision}{' compiled' if compiled else '':9s}"
              f" {steps:3d} steps  "
              f"{flops['image'] / 1e9:7.2f} GFLOP/img  {summary(rates)} img/s  "
              f"{achieved / 1e9:7.2f} GFLOP/s  {100 * achieved / peak:5.1f}% of attainable "
              f"{settings.precision}")
    if args.device == "cuda":
        solver, steps, settings, generator = first
        flops = flops_per_image(generator, settings, steps)["image"]
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            rates = repeated(args.repeats, lambda: sampling_rate(
                generator, settings, solver, steps, 4 * batch, batch))
            results[f"batch {batch}"] = {"images_per_s": rates}
            print(f"batch {batch:5d}           {summary(rates)} img/s  "
                  f"{100 * statistics.median(rates) * flops / attainable[settings.precision]:5.1f}"
                  f"% of attainable")
    return results


def pool_breakdown(run) -> str:
    pool = run.pool
    return (f"    check + plan {run.plan_seconds:5.1f} s, pool start-up "
            f"{pool.startup_seconds:5.1f} s, in shards {pool.shard_seconds:6.1f} actor-s, "
            f"pool total {pool.seconds:6.1f} s, finish {run.finish_seconds:4.1f} s")


def end_to_end_section(args, root: str, attainable: dict[str, float]) -> dict:
    total = args.identities * args.images_per_identity
    solver, steps, precision, _ = args.settings[0]
    generator = load_generator(args.checkpoint)
    settings = prepare(generator, SamplingConfig(precision=precision), args.device)
    flops = flops_per_image(generator, settings, steps)
    peak = attainable[settings.precision]
    print(f"end to end: {total} images ({args.identities} identities x "
          f"{args.images_per_identity}), {SOLVER_NAMES[solver]} {steps} steps, "
          f"{args.threads} torch thread(s) per worker, device {args.device}")
    runs, plain_shards = {"plain": []}, None
    for repeat in range(args.repeats):
        images, seconds, plain_shards = plain_loop(
            bench_config(args, root, f"{root}/plain{repeat}", args.identities, 1), args.device,
            args.threads)
        runs["plain"].append(images / seconds)
    start_ray()
    import ray

    for encode in args.encode:
        for actors in args.actors:
            name = str(actors) if encode == "thread" else f"{actors}-stage"
            runs[name] = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                run = synthesize(bench_config(args, root, f"{root}/pool{name}-{repeat}",
                                              args.identities, actors, encode=encode))
                runs[name].append(run.images_written / (time.perf_counter() - started))
                print(pool_breakdown(run))
                if run.manifest["shards"] != plain_shards:
                    raise SystemExit(f"the pool ({name} actor(s)) wrote other shards than the "
                                     "plain loop: the comparison is void")
    ray.shutdown()
    plain = statistics.median(runs["plain"])
    for name, rates in runs.items():
        actors = int(name.split("-")[0]) if name != "plain" else 1
        # CPU: each actor has its own core(s); CUDA: the actors share the one GPU measured
        workers = 1 if name == "plain" or args.device == "cuda" else actors
        encoding = " (encode: stage)" if name.endswith("-stage") else ""
        label = "plain loop" if name == "plain" else f"Ray Data, {actors} actor(s){encoding}"
        fraction = statistics.median(rates) * flops["image"] / (workers * peak)
        print(f"{label:40s} {summary(rates)} img/s  {statistics.median(rates) / plain:.2f}x "
              f"plain  {100 * fraction:5.1f}% of attainable per worker")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="assets/faceworld-generator")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--solvers", default="ddim:20,dpmsolver++:10,unipc:10",
                        help="[solver:]steps[@precision][+compile] settings, comma-separated "
                        "(bench/sampler_settings.py; ddim:20@bf16+compile: bf16 autocast and a "
                        "compiled UNet); the first one runs end to end")
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--encode", default="thread,stage",
                        help="synthesis.actors.encode settings the pools run with")
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--images-per-identity", type=int, default=8)
    parser.add_argument("--identities-per-shard", type=int, default=4)
    parser.add_argument("--batch-size", default="32", help="an integer or auto")
    parser.add_argument("--batch-sizes", default="64,128,256,512,1024",
                        help="the --device cuda batch-size sweep")
    parser.add_argument("--sampling-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", default="",
                        help="comma list of: sampling,scaling,end-to-end,rss")
    parser.add_argument("--json", default="", help="also write every measurement here")
    parser.add_argument("--rss-identities", type=int, default=8)
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sampling-child", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.settings = settings_argument(parser, "--solvers", args.solvers)
    args.checkpoint = os.path.abspath(args.checkpoint)
    args.batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    if args.rss_child:
        rss_child(args)
        return
    if args.sampling_child:
        sampling_child(args)
        return
    args.actors = [int(a) for a in args.actors.split(",") if a]
    args.encode = [e for e in args.encode.split(",") if e]
    skip = set(args.skip.split(","))
    torch.set_num_threads(args.threads)
    precisions = sorted({resolved_precision(precision, args.device)
                         for _, _, precision, _ in args.settings})
    attainable = {precision: attainable_flops(args.device, args.threads, precision)
                  for precision in precisions}
    for precision, rate in attainable.items():
        print(f"attainable ({args.device}, {args.threads} thread(s), {precision} "
              f"{MATMUL_SIZE[args.device]}^2 matmul): {rate / 1e9:.1f} GFLOP/s")
    document = {"attainable_flops": attainable, "args": vars(args)}
    if "sampling" not in skip:
        document["sampling"] = sampling_section(args, attainable)
        _attainable_after(args, attainable)
    if "scaling" not in skip and args.device == "cpu" and max(args.actors) > 1:
        document["scaling"] = scaling_section(args)
    if {"end-to-end", "rss"} <= skip:
        write_json(args.json, document)
        return
    with tempfile.TemporaryDirectory(prefix="synthesis-bench-") as root:
        render_inquiries(root)
        if "end-to-end" not in skip:
            runs = end_to_end_section(args, root, attainable)
            document["end_to_end"] = runs
            ratios = {k: statistics.median(v) / statistics.median(runs["plain"])
                      for k, v in runs.items() if k != "plain"}
            if "1" in ratios:
                line = f"1 actor / plain loop: {ratios['1']:.2f} (target >= {TARGET_ONE_ACTOR})"
                if "2" in ratios:
                    line += (f"; 2 actors / 1 actor: {ratios['2'] / ratios['1']:.2f} (target >= "
                             f"{TARGET_TWO_ACTORS})")
                print(line)
            for name, ratio in ratios.items():
                if name.endswith("-stage") and name.split("-")[0] in ratios:
                    print(f"{name.split('-')[0]} actor(s), encode stage / thread: "
                          f"{ratio / ratios[name.split('-')[0]]:.2f}")
        if "rss" not in skip:
            small = child_peak_rss(args, root, args.rss_identities)
            large = child_peak_rss(args, root, 10 * args.rss_identities)
            growth = large["peak_rss_mib"] / small["peak_rss_mib"]
            document["rss"] = {"small": small, "large": large}
            print(f"driver peak RSS       {small['images']:5d} images "
                  f"{small['peak_rss_mib']:7.0f} MiB; {large['images']} images "
                  f"{large['peak_rss_mib']:.0f} MiB: {growth:.2f}x (target <= "
                  f"{TARGET_RSS_GROWTH})")
    write_json(args.json, document)


def _attainable_after(args, before: dict[str, float]) -> None:
    """Measure the attainable rates again; a much higher figure means the machine was busy
    when it was first measured, and the fractions above are too high by that ratio."""
    for precision, first in before.items():
        after = attainable_flops(args.device, args.threads, precision)
        print(f"attainable {precision} again: {after / 1e9:.1f} GFLOP/s ({after / first:.2f}x "
              "the first measurement; fractions above use the first)")


def write_json(path: str, document: dict) -> None:
    if path:
        with open(path, "w") as stream:
            json.dump(document, stream, indent=2)


if __name__ == "__main__":
    main()
