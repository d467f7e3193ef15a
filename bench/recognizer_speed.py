"""Recognizer training speed with FLOP accounting: images/s of one training step against the
machine's attainable matmul rate, for the face-world recipe and the production one.

Run: ``.venv/bin/python bench/recognizer_speed.py [--device cpu|cuda] [--shapes
ir-tiny@32,r50@112] [--repeats 3] [--steps 10] [--batch N] [--threads N] [--out FILE]``;
``--tiny`` (ir-tiny@32 unless ``--shapes`` says otherwise, one step, a batch of 2, one repeat,
one thread: seconds on a CPU) is for tests. On a CPU the r50 rows at their production batch
take minutes each (``--shapes ir-tiny@32`` or ``--batch 16`` for a quicker look). ``--threads``
(default: torch's, one per core) should leave the cores to this process: on a machine busy with
other work, torch's threads wait on each other and a step can take 100 times its time.

Why: training the recognizer is most of the quickstart's time and of a production run's GPU
hours, and the levers that might speed it up (bf16 autocast, channels-last) are only worth
their switch where they are measured. What one run measures:

1. **Attainable**: the best FLOP/s of square matmuls in each precision the rows train in
   (``attainable_flops`` of ``bench/synthesis_speed.py``, the same measurement as the
   synthesis benchmark), once before and once after the rows; the fractions use the higher of
   the two, and two figures far apart say the machine was busy.
2. **FLOPs per image** of the training step, counted by ``torch.utils.flop_counter.
   FlopCounterMode`` on one whole step (forward, margin head, backward; the optimizer's
   element-wise update is not counted) and on the forward alone, for comparison with the usual
   "a step is 3x the forward". The counter sees convolutions and matmuls, not BatchNorm, PReLU
   or the optimizer, so the fractions are of the dense-algebra part.
3. **Training step** per shape and setting: the model ``factory train-recognizer`` builds
   (``factory.train.recognizer.build_recognizer``: ``build_backbone`` and the
   ``MarginClassifier`` of the config's ``recognizer`` section), SGD with the config's momentum
   and weight decay, one fixed batch of the per-worker size the config trains with
   (``optimizer.batch_size / workers.num_workers``) with the loop's two-target labels, in
   float32 and under bf16 autocast (where the device has native bf16: ``avx512_bf16`` or
   ``amx_bf16`` on a CPU, ``torch.cuda.is_bf16_supported()`` on a GPU), with the default memory
   layout and channels-last. Each repeat times ``--steps`` steps after one untimed warm-up step;
   figures are the median of ``--repeats`` with the spread (min-max).
4. **Data path** (``--data``, a face-world training set, default the quickstart's when it
   exists): images/s of the DataLoader the loop builds for the ``ir-tiny@32`` recipe
   (``TrainingSamples``: read, decode, augment; collate; ``recognizer.workers.loader_workers``
   processes, 0 in the quickstart, so it runs in the training process between steps), and the
   share of a serial step's time it takes at the fastest training setting measured: what a
   faster step would leave to the loader.

Shapes: ``ir-tiny@32`` is ``configs/quickstart.yaml``'s recognizer on the face world's 1000
identities, ``r50@112`` ``configs/production-0.5m.yaml``'s on CASIA-WebFace's 10,572. Weights
are untrained: speed does not depend on them. The JSON (``--out``) holds every measurement and
the device: the CPU model from ``/proc/cpuinfo`` or the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from factory.config import RecognizerConfig, load_config
from factory.formats.dataset import open_training_data
from factory.train.samples import TrainingSamples
from factory.provenance import cpu_info
from factory.report import format_table
from factory.train.recognizer import Recognizer, build_recognizer, training_loader
from synthesis_speed import MATMUL_SIZE, attainable_flops, summary, synchronize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASIA_WEBFACE_IDENTITIES = 10572
"""The classes of the production recognizer (``recognizer.data`` is CASIA-WebFace)."""
COUNT_BATCH = 2
"""Images per FLOP-counting step: the counted FLOPs are linear in the batch."""
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Shape:
    """A recognizer recipe to time: the config whose ``recognizer`` section trains it and its
    number of classes (None: the identities of the config's face world)."""

    config: str
    classes: int | None

    def load(self) -> tuple[RecognizerConfig, int, int]:
        """The recognizer section, the number of classes and the per-worker batch."""
        config = load_config(os.path.join(ROOT, self.config), [])
        cfg = config.recognizer
        classes = self.classes or config.faceworld.identities
        return cfg, classes, max(1, cfg.optimizer.batch_size // cfg.workers.num_workers)


SHAPES = {
    "ir-tiny@32": Shape("configs/quickstart.yaml", None),
    "r50@112": Shape("configs/production-0.5m.yaml", CASIA_WEBFACE_IDENTITIES),
}


@dataclass
class Training:
    """One worker's training state on its device: the recognizer, its optimizer and a fixed
    batch (images, two-target labels and weights, as ``TrainingSamples`` yields them)."""

    model: Recognizer
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    autocast: torch.dtype | None


def build_training(cfg: RecognizerConfig, classes: int, batch: int, device: str,
                   precision: str = "fp32", channels_last: bool = False) -> Training:
    """The recognizer ``factory train-recognizer`` builds for ``cfg``, its SGD and a random
    batch, on ``device``, in the memory layout asked for, seeded so every setting is alike."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_recognizer(cfg, classes).to(device, memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr,
                                momentum=cfg.optimizer.momentum,
                                weight_decay=cfg.optimizer.weight_decay)
    size = cfg.backbone.input_size
    images = torch.randn(batch, 3, size, size, device=device).to(memory_format=layout)
    label = torch.randint(classes, (batch,), device=device)
    # without domain mixup a sample's targets are (y, y) with weights (1, 0): the head
    # computes both cross-entropies, as in training
    labels = torch.stack([label, label], dim=1)
    weights = torch.tensor([[1.0, 0.0]], device=device).expand(batch, 2).contiguous()
    return Training(model, optimizer, images, labels, weights, DTYPES[precision])


def train_step(training: Training) -> torch.Tensor:
    """One step of ``factory.train.recognizer.train_loop``: forward and margin loss (under
    autocast when set), backward, optimizer step. bf16 needs no grad scaler."""
    device_type = training.images.device.type
    with torch.autocast(device_type, dtype=training.autocast or torch.float32,
                        enabled=training.autocast is not None):
        loss = training.model(training.images, training.labels, training.weights)
    training.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    training.optimizer.step()
    return loss.detach()


def training_rate(training: Training, steps: int) -> float:
    """images/s over ``steps`` training steps."""
    device = training.images.device.type
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(training)
    synchronize(device)
    return steps * len(training.images) / (time.perf_counter() - started)


def step_flops(cfg: RecognizerConfig, classes: int, device: str) -> dict[str, float]:
    """Counted FLOPs per image of the forward (with the margin head) and of a whole step."""
    training = build_training(cfg, classes, COUNT_BATCH, device)
    with FlopCounterMode(display=False) as forward:
        training.model(training.images, training.labels, training.weights)
    with FlopCounterMode(display=False) as step:
        train_step(training)
    return {"forward": forward.get_total_flops() / COUNT_BATCH,
            "step": step.get_total_flops() / COUNT_BATCH}


def measure_training(cfg: RecognizerConfig, classes: int, batch: int, device: str,
                     precision: str, channels_last: bool, steps: int, repeats: int
                     ) -> tuple[list[float], int | None]:
    """images/s of ``repeats`` runs of ``steps`` steps (after one warm-up step), and on a GPU
    the peak memory allocated while training (bytes)."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    training = build_training(cfg, classes, batch, device, precision, channels_last)
    train_step(training)
    rates = [training_rate(training, steps) for _ in range(repeats)]
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    del training
    return rates, peak


def loader_rate(cfg: RecognizerConfig, data: str, batch: int, batches: int) -> float:
    """images/s of ``batches`` batches of ``batch`` images from the DataLoader ``train_loop``
    builds on ``data`` (after one untimed batch, which starts any loader processes)."""
    samples = TrainingSamples(open_training_data([data]), cfg.backbone.input_size, cfg.augment,
                              cfg.seed)
    iterator = iter(training_loader(samples, cfg, batch))
    next(iterator)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - started)


def bf16_native(device: str) -> bool:
    """Whether bf16 autocast runs natively on ``device`` (on a CPU: ``avx512_bf16`` or
    ``amx_bf16`` in ``/proc/cpuinfo``; unknown counts as not)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_info().native_bf16)


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo``."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return cpu_info().model or "unknown CPU"


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")


def attainable(device: str, precisions: list[str]) -> dict[str, float]:
    """The attainable matmul FLOP/s in each precision, with this process's thread count."""
    return {precision: attainable_flops(device, torch.get_num_threads(), precision)
            for precision in precisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default=None,
                        help=f"comma list of: {', '.join(SHAPES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed run (default 10)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default: the config's per-worker batch)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, one per core)")
    parser.add_argument("--tiny", action="store_true",
                        help="ir-tiny@32, one step, a batch of 2, one repeat, one thread "
                        "(for tests)")
    parser.add_argument("--data", default=os.path.join(ROOT, "runs/quickstart/faceworld/train"),
                        help="a face-world training set for the data-path row (skipped when "
                        "absent; default: the quickstart's)")
    parser.add_argument("--out", default="runs/bench/recognizer_speed.json",
                        help="the JSON of every measurement")
    args = parser.parse_args()
    check_device(args.device)
    repeats = args.repeats or (1 if args.tiny else 3)
    steps = args.steps or (1 if args.tiny else 10)
    batch = args.batch or (2 if args.tiny else None)
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    shapes = [name for name in (args.shapes or ("ir-tiny@32" if args.tiny else ",".join(SHAPES))
                                ).split(",") if name]
    unknown = [name for name in shapes if name not in SHAPES]
    if unknown:
        raise SystemExit(f"--shapes: unknown {', '.join(unknown)} ({', '.join(SHAPES)})")
    precisions = ["fp32", "bf16"] if bf16_native(args.device) else ["fp32"]
    name = device_name(args.device)
    threads = torch.get_num_threads()
    print(f"device: {args.device}, {name}, {threads} torch thread(s); torch {torch.__version__}")
    if "bf16" not in precisions:
        print("bf16 autocast is not native on this device: float32 rows only")
    before = attainable(args.device, precisions)
    rows, table = [], []
    for shape in shapes:
        cfg, classes, worker_batch = SHAPES[shape].load()
        flops = step_flops(cfg, classes, args.device)
        for precision in precisions:
            for channels_last in (False, True):
                rates, peak = measure_training(cfg, classes, batch or worker_batch, args.device,
                                               precision, channels_last, steps, repeats)
                rows.append({"shape": shape, "config": SHAPES[shape].config,
                             "backbone": cfg.backbone.name,
                             "input_size": cfg.backbone.input_size, "classes": classes,
                             "batch": batch or worker_batch, "precision": precision,
                             "channels_last": channels_last, "steps": steps,
                             "flops_per_image": flops, "images_per_s": rates,
                             "median_images_per_s": statistics.median(rates),
                             "peak_memory_bytes": peak})
    after = attainable(args.device, precisions)
    best = {precision: max(before[precision], after[precision]) for precision in precisions}
    for row in rows:
        achieved = row["median_images_per_s"] * row["flops_per_image"]["step"]
        row["achieved_flops"] = achieved
        row["fraction_of_attainable"] = achieved / best[row["precision"]]
        table.append([row["shape"], row["precision"],
                      "channels-last" if row["channels_last"] else "default", row["batch"],
                      f"{row['flops_per_image']['step'] / 1e9:.3f}",
                      f"{row['flops_per_image']['step'] / row['flops_per_image']['forward']:.2f}",
                      summary(row["images_per_s"]).strip(), f"{achieved / 1e9:.1f}",
                      f"{100 * row['fraction_of_attainable']:.1f}%"])
    for precision in precisions:
        print(f"attainable ({args.device}, {precision} {MATMUL_SIZE[args.device]}^2 matmul): "
              f"{before[precision] / 1e9:.1f} GFLOP/s before the rows, "
              f"{after[precision] / 1e9:.1f} after; fractions use the higher")
    print(f"recognizer training step (median of {repeats} x {steps} steps, min-max):")
    print(format_table(["shape", "precision", "layout", "batch", "GFLOP/img", "step/fwd",
                        "images/s", "GFLOP/s", "of attainable"], table))
    data_path = None
    if "ir-tiny@32" in shapes and os.path.exists(args.data):
        cfg, _, worker_batch = SHAPES["ir-tiny@32"].load()
        rates = [loader_rate(cfg, args.data, batch or worker_batch, 1 if args.tiny else 20)
                 for _ in range(repeats)]
        fastest = max(row["median_images_per_s"] for row in rows if row["shape"] == "ir-tiny@32")
        share = fastest / (fastest + statistics.median(rates))
        data_path = {"data": args.data, "loader_workers": cfg.workers.loader_workers,
                     "images_per_s": rates, "share_of_serial_step_at_fastest": share}
        print(f"data path (ir-tiny@32 loader on {args.data}, {cfg.workers.loader_workers} loader "
              f"processes): {summary(rates).strip()} images/s; at the fastest step above it "
              f"would take {100 * share:.0f}% of each serial step")
    elif "ir-tiny@32" in shapes:
        print(f"data path: skipped ({args.data} does not exist; --data names a training set)")
    document = {"device": args.device, "device_name": name, "torch": torch.__version__,
                "threads": threads, "repeats": repeats,
                "attainable_flops": {"before": before, "after": after, "used": best},
                "rows": rows, "data_path": data_path}
    write_json(args.out, document)


def write_json(path: str, document: dict) -> None:
    """Write ``document`` to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as stream:
        json.dump(document, stream, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
