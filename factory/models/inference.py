"""How a loaded generator runs at sampling time: precision, memory format, compilation and the
batch size, resolved once per process for its device.

``SamplingConfig`` says ``auto`` where the right answer depends on the device: a GPU gets bf16
autocast (fp16 where bf16 is missing), channels-last UNet weights and a batch size from a
memory probe; a CPU gets float32, the default layout and a fixed batch. ``precision: native``
also gives bf16 to a CPU that computes it natively. :func:`prepare` applies
the settings to the model and returns what it resolved, which every sample records, so a
dataset says exactly how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from factory.config import SamplingConfig
from factory.provenance import cpu_info

CPU_BATCH_SIZE = 64
"""``batch_size: auto`` on a CPU: large batches buy nothing there and cost memory."""
PROBE_BATCH = 8
MAX_AUTO_BATCH = 1024
MEMORY_HEADROOM = 0.7
"""Share of the free GPU memory the probed batch may fill (the rest: E_id, allocator slack)."""

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class InferenceSettings:
    """What a sampling process resolved from its ``SamplingConfig`` on its device."""

    device: str
    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    compile: bool
    batch_size: int

    @property
    def autocast(self) -> torch.dtype | None:
        return _DTYPES[self.precision]

    def record(self) -> dict:
        """The fields a sample's metadata and a manifest carry."""
        return asdict(self)

    def sampler_options(self) -> dict:
        """Keyword arguments of :func:`factory.models.sampling.sample_images`."""
        return {"autocast": self.autocast, "channels_last": self.channels_last}


def resolve_precision(setting: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU that has it, else fp16 there; fp32 on a CPU. ``native``: the same,
    except bf16 on a CPU whose flags make bf16 autocast native (without them it is emulated and
    slower than float32)."""
    if setting not in ("auto", "native"):
        return setting
    if device.type != "cuda":
        return "bf16" if setting == "native" and cpu_info().native_bf16 else "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_channels_last(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@torch.inference_mode()
def probe_batch_size(model: torch.nn.Module, identity_dim: int, image_size: int,
                     device: torch.device, autocast: torch.dtype | None,
                     channels_last: bool) -> int:
    """The largest power-of-two batch whose UNet forward fits ``MEMORY_HEADROOM`` of the free
    GPU memory, from the peak memory of one forward at ``PROBE_BATCH`` (activations grow
    linearly with the batch); at most ``MAX_AUTO_BATCH``."""
    from factory.models.sampling import autocast_context

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    noisy = torch.zeros(PROBE_BATCH, 3, image_size, image_size, device=device)
    timesteps = torch.full((PROBE_BATCH,), 500, device=device, dtype=torch.long)
    identity = torch.ones(PROBE_BATCH, identity_dim, device=device)
    with autocast_context(device, autocast):
        model(noisy.to(memory_format=layout), timesteps, identity,
              torch.zeros(PROBE_BATCH, device=device))
    torch.cuda.synchronize(device)
    per_sample = max(1, (torch.cuda.max_memory_allocated(device) - before) // PROBE_BATCH)
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * MEMORY_HEADROOM // per_sample)
    batch = 1
    while batch * 2 <= min(fits, MAX_AUTO_BATCH):
        batch *= 2
    return batch


def prepare(generator, sampling: SamplingConfig, device: torch.device | str) -> InferenceSettings:
    """Move ``generator`` (a LoadedGenerator) to ``device``, apply the memory format and
    compilation ``sampling`` asks for, probe the batch size; returns the resolved settings."""
    device = torch.device(device)
    generator.to(device)
    precision = resolve_precision(sampling.precision, device)
    channels_last = resolve_channels_last(sampling.channels_last, device)
    if channels_last:
        generator.model.unet.to(memory_format=torch.channels_last)
    if sampling.compile and not _is_compiled(generator.model.unet):
        generator.model.unet = torch.compile(generator.model.unet)
    batch_size = sampling.batch_size
    if batch_size == "auto":
        batch_size = (probe_batch_size(generator.model,
                                       generator.model.condition.config.identity_dim,
                                       generator.image_size, device, _DTYPES[precision],
                                       channels_last)
                      if device.type == "cuda" else CPU_BATCH_SIZE)
    return InferenceSettings(device.type, precision, channels_last, sampling.compile,
                             int(batch_size))


def _is_compiled(module: torch.nn.Module) -> bool:
    return hasattr(module, "_orig_mod")
