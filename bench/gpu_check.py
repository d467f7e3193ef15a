"""One prepared command for a GPU session: the production models' speed and memory on one GPU,
against the device's bf16 peak, in a few minutes.

Run: ``.venv/bin/python bench/gpu_check.py --device cuda [--repeats 3] [--out FILE]``, meant
to finish in well under 8 minutes on one H100 or H200. It has not run on a GPU yet (written
without one); its counted work is about 8.6 PFLOP (sampling 7.3, of which guidance 4.9;
generator training 1.0; recognizer 0.3), some 90 s even at 10% of an H100's nominal bf16 peak,
plus imports and model building. ``--device cpu --tiny`` runs the same code on the
quickstart's 32 px models with batches of 2 and a couple of steps (seconds of CPU;
``tests/integration/test_bench_scripts.py`` runs it, so the script cannot rot unseen).

Why: this project's figures come from 2-core CPUs, and a production run (configs/
production-0.5m.yaml) is planned in GPU hours nobody has measured. With untrained weights
(speed does not depend on them), the production shapes (``--tiny``: the quickstart's), one run
prints, with the device's name:

1. **bf16 peak**, two figures: *attainable*, the best of timed square bf16 matmuls on this
   device in this run (``attainable_flops`` of ``bench/synthesis_speed.py``, before and after
   the rows; the higher is used), and *nominal*, NVIDIA's datasheet dense bf16 rate where the
   device is an H100 or H200 (:data:`NOMINAL_BF16_TFLOPS`; sparsity figures are twice these).
2. **Sampling**: the generator section's UNet (112 px) sampling one batch of the synthesis
   batch size with DDIM at ``generator.sampling.steps`` (20) under bf16 autocast, in the
   memory layout synthesis resolves (channels-last on a GPU), without and with classifier-free
   guidance (scale 2: the model runs on a doubled batch; the value does not change the speed).
   The generator is built with ``generator.condition.dropout=0.1`` so that it holds the null
   context guidance needs. images/s, and the UNet's counted FLOPs against both peaks.
3. **Recognizer training**: r50 at 112 px, bf16 autocast, the per-worker batch of the
   production config, with the default layout (what ``factory train-recognizer`` runs) and
   channels-last (``measure_training`` and ``step_flops`` of ``bench/recognizer_speed.py``).
4. **Generator training**: steps/s of one CemiFace step at the production shape (the
   per-worker batch, 112 px), as ``factory.train.generator.train_loop`` runs it: E_id (a
   frozen r50 at 112 px, the config's ``identity_encoder_backbone``) embeds the batch,
   ``cemiface_loss`` under bf16 autocast (gradients flow through E_id to the estimate), backward,
   gradient clipping, AdamW, the EMA update.
5. **Peak GPU memory** of each row (``torch.cuda.max_memory_allocated``, reset before each).

Every rate is the median of ``--repeats`` timed runs after an untimed warm-up, with the spread
(min-max). FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions, attention; not normalisation, activations or the solver's arithmetic), so the
fractions are of the dense-algebra part. The JSON (``--out``) holds every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from torch.utils.flop_counter import FlopCounterMode

from factory.config import BackboneConfig, FactoryConfig, load_config
from factory.models.diffusion import cemiface_loss, draw_m, m_grid, training_scheduler
from factory.models.generator import CemiFaceGenerator, build_condition, build_unet
from factory.models.identity import IdentityEncoder
from factory.models.inference import resolve_channels_last
from factory.models.iresnet import build_backbone
from factory.models.sampling import sample_images
from factory.report import format_table
from recognizer_speed import (
    ROOT,
    SHAPES,
    attainable,
    check_device,
    device_name,
    measure_training,
    step_flops,
    write_json,
)
from synthesis_speed import summary, synchronize

GUIDANCE_SCALE = 2.0
GUIDANCE_DROPOUT = 0.1
"""``generator.condition.dropout`` of the sampled generator: any value > 0 gives it the null
context classifier-free guidance needs (sampling speed does not depend on the value)."""
NOMINAL_BF16_TFLOPS = (
    ("H100 PCIe", 756.0, "H100 PCIe"),
    ("H100 NVL", 835.0, "H100 NVL"),
    ("H100", 989.0, "H100 SXM"),
    ("H200 NVL", 835.0, "H200 NVL"),
    ("H200", 989.0, "H200 SXM"),
)
"""(words in the device name, dense bf16 TFLOP/s, which product): NVIDIA's datasheet figures
without sparsity, first match wins; an H100 or H200 whose name names no PCIe or NVL is SXM."""


@dataclass(frozen=True)
class Scale:
    """What the check runs: the config whose generator (and recognizer) sections it builds,
    the ``bench/recognizer_speed.py`` shape it trains and the batches and steps."""

    config: str
    recognizer: str
    sampling_batch: int | None  # None: the config's synthesis.sampling.batch_size
    sampling_steps: int | None  # None: the config's generator.sampling.steps
    recognizer_batch: int | None  # None: the config's per-worker batch
    generator_batch: int | None  # None: the config's per-worker batch
    steps: int  # training steps per timed run


PRODUCTION = Scale("configs/production-0.5m.yaml", "r50@112", None, None, None, None, 10)
TINY = Scale("configs/quickstart.yaml", "ir-tiny@32", 2, 2, 2, 2, 1)


def nominal_bf16(name: str) -> tuple[float | None, str | None]:
    """The datasheet dense bf16 FLOP/s of the device called ``name`` and the product it was
    read as; (None, None) for a device not in :data:`NOMINAL_BF16_TFLOPS`."""
    for words, tflops, product in NOMINAL_BF16_TFLOPS:
        if all(word in name for word in words.split()):
            return tflops * 1e12, product
    return None, None


def identity_backbone(config: FactoryConfig) -> BackboneConfig:
    """E_id's architecture: the generator's ``identity_encoder_backbone``, else (the face
    world, whose E_id is a recognizer checkpoint) the recognizer's backbone."""
    return config.generator.identity_encoder_backbone or config.recognizer.backbone


def build_encoder(config: FactoryConfig, device: str) -> IdentityEncoder:
    """A frozen, untrained E_id of the config's architecture."""
    backbone = identity_backbone(config)
    return IdentityEncoder(build_backbone(**backbone.model_dump()), backbone.input_size).to(device)


def build_generator(config: FactoryConfig, device: str) -> CemiFaceGenerator:
    """The UNet and condition module of the config's generator section (what
    ``factory.train.generator.build_generator`` builds), on ``device``."""
    cfg = config.generator
    condition = build_condition(cfg.condition, identity_backbone(config).embedding_size,
                                cfg.unet.cross_attention_dim)
    return CemiFaceGenerator(build_unet(cfg.unet, cfg.image_size), condition).to(device)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def timed(run: Callable[[], None], device: str, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run`` (after one untimed call)."""
    run()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def sampling_rows(config: FactoryConfig, scale: Scale, device: str, repeats: int) -> dict:
    """images/s of one synthesis batch sampled with DDIM in bf16, without and with guidance."""
    guided_config = load_config(os.path.join(ROOT, scale.config),
                                [f"generator.condition.dropout={GUIDANCE_DROPOUT}"])
    cfg = guided_config.generator
    batch = scale.sampling_batch or config.synthesis.sampling.batch_size
    steps = scale.sampling_steps or cfg.sampling.steps
    channels_last = resolve_channels_last(config.synthesis.sampling.channels_last,
                                          torch.device(device))
    dim = identity_backbone(config).embedding_size
    identity = F.normalize(torch.randn(batch, dim), dim=-1).to(device)
    m = torch.zeros(batch, device=device)
    model = build_generator(guided_config, device).eval()
    if channels_last:
        model.unet.to(memory_format=torch.channels_last)
    scheduler = training_scheduler(cfg.diffusion)
    forward = unet_flops(model, cfg.image_size, dim, device)
    rows = {}
    for name, guidance in (("sampling", 1.0), ("sampling_guided", GUIDANCE_SCALE)):
        reset_peak(device)
        seconds = timed(lambda: sample_images(
            model, scheduler, identity, m, list(range(batch)), cfg.image_size, steps,
            solver="ddim", autocast=torch.bfloat16, channels_last=channels_last,
            guidance_scale=guidance), device, repeats)
        calls = 1 if guidance == 1.0 else 2  # guidance runs the model on a doubled batch
        rows[name] = row(f"sampling DDIM {steps} bf16"
                         + ("" if calls == 1 else f", guidance {guidance:g}"),
                         batch, [batch / s for s in seconds], "img/s",
                         calls * steps * forward, peak_memory(device),
                         channels_last=channels_last, steps=steps, guidance_scale=guidance)
    return rows


@torch.inference_mode()
def unet_flops(model: CemiFaceGenerator, image_size: int, identity_dim: int,
               device: str) -> float:
    """Counted FLOPs of one image's conditioned UNet forward."""
    count = 2
    noisy = torch.zeros(count, 3, image_size, image_size, device=device)
    timesteps = torch.full((count,), 500, device=device, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.autocast(device, torch.bfloat16):
        model(noisy, timesteps, torch.ones(count, identity_dim, device=device),
              torch.zeros(count, device=device))
    return counter.get_total_flops() / count


def recognizer_rows(scale: Scale, device: str, repeats: int) -> dict:
    """r50 (``--tiny``: ir-tiny) training images/s in bf16, default layout and channels-last."""
    cfg, classes, worker_batch = SHAPES[scale.recognizer].load()
    batch = scale.recognizer_batch or worker_batch
    flops = step_flops(cfg, classes, device)["step"]
    rows = {}
    for name, channels_last in (("recognizer", False), ("recognizer_channels_last", True)):
        rates, peak = measure_training(cfg, classes, batch, device, "bf16", channels_last,
                                       scale.steps, repeats)
        rows[name] = row(f"recognizer {scale.recognizer} training bf16"
                         + (", channels-last" if channels_last else ""),
                         batch, rates, "img/s", flops, peak, channels_last=channels_last)
    return rows


@dataclass
class GeneratorTraining:
    """One worker's generator training state and a fixed batch with its draws."""

    config: FactoryConfig
    model: CemiFaceGenerator
    encoder: IdentityEncoder
    optimizer: torch.optim.Optimizer
    ema: EMAModel
    clean: torch.Tensor
    m: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def build_generator_training(config: FactoryConfig, batch: int, device: str
                             ) -> GeneratorTraining:
    """The config's generator (condition dropout as configured), E_id, AdamW, EMA and one
    random batch of training images in [-1, 1] with its m, noise and timesteps."""
    cfg = config.generator
    torch.manual_seed(0)
    model = build_generator(config, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr,
                                  weight_decay=cfg.optimizer.weight_decay)
    ema = EMAModel(model.parameters(), decay=cfg.optimizer.ema_decay)
    ema.to(device)
    shape = (batch, 3, cfg.image_size, cfg.image_size)
    clean = torch.rand(shape, device=device) * 2 - 1
    return GeneratorTraining(
        config, model, build_encoder(config, device), optimizer, ema, clean,
        draw_m(m_grid(cfg.similarity_matching), batch).to(device),
        torch.randn(shape, device=device),
        torch.randint(cfg.diffusion.num_train_timesteps, (batch,), device=device))


def generator_step(training: GeneratorTraining, scheduler) -> None:
    """One step of ``factory.train.generator.train_loop`` under bf16 autocast (no condition
    dropout where the config has none, as in production)."""
    cfg = training.config.generator
    with torch.no_grad():
        identity = training.encoder(training.clean)
    with torch.autocast(training.clean.device.type, dtype=torch.bfloat16):
        terms = cemiface_loss(training.model, training.encoder, scheduler, training.clean,
                              identity, training.m, training.noise, training.timesteps,
                              cfg.similarity_matching.weight, cfg.diffusion.min_snr_gamma,
                              cfg.similarity_matching.target_schedule)
    training.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(training.model.parameters(), cfg.optimizer.grad_clip)
    training.optimizer.step()
    training.ema.step(training.model.parameters())


def generator_row(config: FactoryConfig, scale: Scale, device: str, repeats: int) -> dict:
    """steps/s of the CemiFace training step at the per-worker batch."""
    cfg = config.generator
    batch = scale.generator_batch or max(1, cfg.optimizer.batch_size // cfg.workers.num_workers)
    scheduler = training_scheduler(cfg.diffusion)
    counting = build_generator_training(config, 2, device)
    with FlopCounterMode(display=False) as counter:
        generator_step(counting, scheduler)
    flops = counter.get_total_flops() / 2
    del counting
    reset_peak(device)
    training = build_generator_training(config, batch, device)

    def steps() -> None:
        for _ in range(scale.steps):
            generator_step(training, scheduler)

    seconds = timed(steps, device, repeats)
    return row(f"generator training (CemiFace, {identity_backbone(config).name} E_id) bf16",
               batch, [scale.steps / s for s in seconds], "steps/s", flops,
               peak_memory(device))


def row(label: str, batch: int, rates: list[float], unit: str, flops_per_image: float,
        peak: int | None, **details) -> dict:
    """One measured row; images/s and the fractions are filled in by :func:`finish`."""
    return {"label": label, "batch": batch, "rates": rates, "unit": unit,
            "median": statistics.median(rates), "flops_per_image": flops_per_image,
            "peak_memory_bytes": peak, **details}


def finish(rows: dict, attainable_flops: float, nominal: float | None) -> None:
    """Add images/s, achieved FLOP/s and the fractions of both peaks to every row."""
    for entry in rows.values():
        images = entry["median"] * (entry["batch"] if entry["unit"] == "steps/s" else 1)
        entry["images_per_s"] = images
        entry["achieved_flops"] = images * entry["flops_per_image"]
        entry["fraction_of_attainable"] = entry["achieved_flops"] / attainable_flops
        entry["fraction_of_nominal"] = entry["achieved_flops"] / nominal if nominal else None


def print_report(document: dict) -> None:
    peak = document["bf16_peak"]
    nominal = (f"{peak['nominal'] / 1e12:.0f} TFLOP/s ({peak['nominal_product']}, NVIDIA "
               "datasheet, dense bf16)") if peak["nominal"] else "not known for this device"
    print(f"bf16 peak: attainable {peak['attainable']['used'] / 1e12:.2f} TFLOP/s (measured in "
          f"this run: best square bf16 matmul, {peak['attainable']['before'] / 1e12:.2f} "
          f"before the rows, {peak['attainable']['after'] / 1e12:.2f} after); "
          f"nominal {nominal}")
    table = []
    for entry in document["rows"].values():
        memory = entry["peak_memory_bytes"]
        table.append([entry["label"], entry["batch"],
                      f"{summary(entry['rates']).strip()} {entry['unit']}",
                      f"{entry['images_per_s']:.1f}", f"{entry['flops_per_image'] / 1e9:.2f}",
                      f"{entry['achieved_flops'] / 1e12:.3f}",
                      f"{100 * entry['fraction_of_attainable']:.1f}%",
                      f"{100 * entry['fraction_of_nominal']:.1f}%"
                      if entry["fraction_of_nominal"] is not None else None,
                      f"{memory / 2**30:.2f}" if memory is not None else None])
    print(format_table(["row", "batch", f"median of {document['repeats']} (min-max)", "img/s",
                        "GFLOP/img", "TFLOP/s", "of attainable", "of nominal", "peak GiB"],
                       table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--tiny", action="store_true",
                        help="the quickstart's 32 px models, batches of 2, a couple of steps, "
                        "one repeat, one CPU thread (for tests)")
    parser.add_argument("--out", default="runs/bench/gpu_check.json",
                        help="the JSON of every figure")
    args = parser.parse_args()
    check_device(args.device)
    if args.device == "cuda" and not torch.cuda.is_bf16_supported():
        raise SystemExit("--device cuda: this GPU has no bf16, which every row runs in")
    if args.tiny:
        torch.set_num_threads(1)
    scale = TINY if args.tiny else PRODUCTION
    repeats = args.repeats or (1 if args.tiny else 3)
    config = load_config(os.path.join(ROOT, scale.config), [])
    name = device_name(args.device)
    cuda = f", CUDA {torch.version.cuda}" if args.device == "cuda" else ""
    print(f"device: {name} ({args.device}); torch {torch.__version__}{cuda}; {scale.config}"
          f"{' (tiny)' if args.tiny else ''}")
    before = attainable(args.device, ["bf16"])["bf16"]
    rows = sampling_rows(config, scale, args.device, repeats)
    rows |= recognizer_rows(scale, args.device, repeats)
    rows["generator_training"] = generator_row(config, scale, args.device, repeats)
    after = attainable(args.device, ["bf16"])["bf16"]
    nominal, product = nominal_bf16(name) if args.device == "cuda" else (None, None)
    finish(rows, max(before, after), nominal)
    document = {"device": args.device, "device_name": name, "torch": torch.__version__,
                "cuda": torch.version.cuda, "config": scale.config, "tiny": args.tiny,
                "repeats": repeats,
                "bf16_peak": {"attainable": {"before": before, "after": after,
                                             "used": max(before, after)},
                              "nominal": nominal, "nominal_product": product},
                "rows": rows}
    print_report(document)
    write_json(args.out, document)


if __name__ == "__main__":
    main()
