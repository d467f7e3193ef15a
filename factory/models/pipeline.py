"""``CemiFacePipeline``: a generator checkpoint as a diffusers ``DiffusionPipeline``.

For users who want CemiFace's faces without the factory's Ray stages: load a checkpoint the
factory wrote, give it inquiry faces (or their E_id embeddings) and target similarities m, get
PIL images and E_id's cosine of each image to its inquiry:

```python
import numpy as np
import torch

from factory.faceworld.identity import sample_identity
from factory.faceworld.nuisance import sample_nuisance
from factory.faceworld.render import render_face
from factory.models.pipeline import CemiFacePipeline

pipe = CemiFacePipeline.from_pretrained("assets/faceworld-generator")  # on a GPU: .to("cuda")
pipe.set_progress_bar_config(disable=True)

# an inquiry face: a new face-world identity, frontal, as a uint8 HWC array (a PIL image works too)
rng = np.random.default_rng(7)
face = render_face(sample_identity(rng), sample_nuisance(rng, "frontal"), pipe.image_size)

out = pipe(inquiry_images=face, m=[1.0, 0.5, 0.0], num_images_per_prompt=3,
           num_inference_steps=10, eta=1.0, guidance_scale=2.0, guidance_interval=(0.0, 0.5),
           generator=torch.Generator().manual_seed(0))
for image, m, similarity, seed in zip(out.images, out.m, out.similarities, out.seeds):
    image.save(f"cemiface_m{m:.1f}.png")
    print(f"m {m:.1f}: E_id similarity to the inquiry {similarity:+.3f} (seed {seed})")
```

prints, on this project's CPU (torch 2.13.0, diffusers 0.42.1; other hardware may move the last
digit):

```text
m 1.0: E_id similarity to the inquiry +0.789 (seed 2546248239)
m 0.5: E_id similarity to the inquiry +0.138 (seed 3626093760)
m 0.0: E_id similarity to the inquiry -0.378 (seed 3684848379)
```

One sampler. ``__call__`` samples through :func:`factory.models.sampling.sample_images`, the
function synthesis, the generator report and training previews use, with each image's own
integer seed (the factory's convention: the seed alone fixes the image's noise, whatever batch
it is in). So the pipeline's image for (identity embedding, m, seed) is the image ``factory
synthesize`` writes for it, before JPEG encoding: bit for bit on a CPU in float32 when the two
batches hold the same samples, up to float rounding (a rare pixel one level off) otherwise. A
``torch.Generator`` only draws those integer seeds (one per image, in output order);
``seeds=`` gives them directly, and ``out.seeds`` reports the ones used, so any image can be
remade alone or found in a synthesised dataset's metadata.

One checkpoint format. :meth:`CemiFacePipeline.from_pretrained` is the factory's
:func:`~factory.checkpoints.generator.load_generator` and
:meth:`~CemiFacePipeline.save_pretrained` its
:func:`~factory.checkpoints.generator.save_generator`: ``unet/``, ``condition/`` and
``scheduler/`` are diffusers folders, but E_id is ``identity_encoder.pt`` (backbone arguments
and weights, read with ``weights_only=True``, never unpickled), which diffusers' generic loader
cannot read and must not be taught to unpickle; and the checkpoint has no ``model_index.json``.
Delegating both directions keeps one reader (local and object-store URIs, the same checks and
error messages) and means a pipeline-saved folder is a factory checkpoint that synthesis can use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import yaml
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from torch import nn

from factory import storage
from factory.checkpoints.encoder import ENCODER_FILE, encoder_record
from factory.checkpoints.generator import CONFIG_FILE, load_generator, save_generator
from factory.checkpoints.recognizer import read_torch_file
from factory.models.generator import CemiFaceGenerator, SimilarityCondition
from factory.models.identity import IdentityEncoder, inquiry_tensor
from factory.models.sampling import Solver, autocast_context, sample_images, to_uint8

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
"""One inquiry image or a batch: a PIL image; a numpy array ``[H, W, 3]`` or ``[N, H, W, 3]``;
a tensor ``[3, H, W]`` or ``[N, 3, H, W]``. uint8 values are 0-255, floating values 0-1 (a
``"np"`` or ``"pt"`` output of this pipeline can be fed back as it is)."""

SEED_RANGE = 2**32
"""Seeds drawn from a ``torch.Generator`` lie in ``[0, SEED_RANGE)``."""


class PipelineIdentityEncoder(IdentityEncoder):
    """E_id as a pipeline component: the factory's frozen encoder plus the ``device`` and
    ``dtype`` that ``DiffusionPipeline.to`` and ``.device`` read of every module, and the
    ``source`` URI its checkpoint record names (saved back into ``identity_encoder.pt``)."""

    def __init__(self, backbone: nn.Module, input_size: int, source: str) -> None:
        super().__init__(backbone, input_size)
        self.source = source

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def record(self) -> dict[str, Any]:
        """What a checkpoint stores of E_id, as ``identity_encoder.pt``
        (:func:`factory.checkpoints.encoder.encoder_record`)."""
        return encoder_record(self.source, self.backbone, self.input_size)


@dataclass
class CemiFacePipelineOutput(BaseOutput):
    """What one pipeline call made, one entry per image in output order (identity-major: the
    ``num_images_per_prompt`` images of the first identity, then the next identity's)."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    """PIL images (``"pil"``: exactly the uint8 pixels synthesis JPEG-encodes), or floats in
    [0, 1] as ``[N, H, W, 3]`` numpy (``"np"``) or ``[N, 3, H, W]`` torch (``"pt"``)."""
    similarities: np.ndarray
    """``[N]`` float32: E_id's cosine of each image to its inquiry embedding (the
    ``similarity_inquiry`` synthesis records)."""
    m: list[float]
    """The target similarity each image was sampled at."""
    seeds: list[int]
    """Each image's noise seed: the same (identity, m, seed) and sampler remake the image."""


class CemiFacePipeline(DiffusionPipeline):
    """CemiFace sampling: inquiry identity + target similarity m -> face images.

    Components (all required; diffusers' ``_optional_components`` stays empty): ``unet``, the
    denoiser; ``condition``, :class:`~factory.models.generator.SimilarityCondition`, which turns
    (E_id embedding, m) into the UNet's cross-attention context; ``scheduler``, the training
    ``DDPMScheduler``, from which each call builds its solver (``solver=``); and
    ``identity_encoder``, the frozen E_id that embeds inquiry images and measures the samples.
    ``meta`` (the checkpoint's ``generator.json``: image size, step, code version, loss history)
    and ``training_config`` (its ``config.yaml``) ride along so that :meth:`save_pretrained`
    writes a complete checkpoint.
    """

    def __init__(self, unet: UNet2DConditionModel, condition: SimilarityCondition,
                 scheduler: DDPMScheduler, identity_encoder: PipelineIdentityEncoder,
                 meta: dict[str, Any] | None = None,
                 training_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, condition=condition, scheduler=scheduler,
                              identity_encoder=identity_encoder)
        self.meta = {"image_size": int(unet.config.sample_size), **(meta or {})}
        self.training_config = training_config or {}

    @property
    def image_size(self) -> int:
        """Side of the images the generator makes (and inquiries are resized to)."""
        return int(self.meta["image_size"])

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        dtype: torch.dtype | None = None) -> CemiFacePipeline:
        """A generator checkpoint the factory wrote (a run's checkpoint or a published
        ``final/``, local or on an object store), loaded by the factory's own
        :func:`~factory.checkpoints.generator.load_generator` (see the module docstring);
        ``dtype`` casts every component's weights, as ``.to(dtype)`` would."""
        uri = os.fspath(pretrained_model_name_or_path)
        loaded = load_generator(uri)
        config_uri = storage.join(uri, CONFIG_FILE)
        document = (yaml.safe_load(storage.read_bytes(config_uri))
                    if storage.exists(config_uri) else None)
        # where E_id came from, which load_generator does not keep: the record once more
        # (memory-mapped when local, so its weights are not read a second time)
        record_uri = storage.join(uri, ENCODER_FILE)
        record = read_torch_file(record_uri, mmap=not storage.is_remote(record_uri))
        encoder = PipelineIdentityEncoder(loaded.encoder.backbone, loaded.encoder.input_size,
                                          str(record.get("source", record_uri)))
        pipe = cls(loaded.model.unet, loaded.model.condition, loaded.scheduler, encoder,
                   loaded.meta, (document or {}).get("config"))
        pipe.register_to_config(_name_or_path=uri)
        return pipe.to(dtype) if dtype is not None else pipe

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write a generator checkpoint with the factory's
        :func:`~factory.checkpoints.generator.save_generator`, so that ``load_generator``,
        synthesis and :meth:`from_pretrained` read it (weights in the pipeline's dtype)."""
        save_generator(os.fspath(save_directory), CemiFaceGenerator(self.unet, self.condition),
                       self.scheduler, self.identity_encoder.record(), self.meta,
                       self.training_config)

    @torch.no_grad()
    def __call__(self, inquiry_images: ImageInput | Sequence[ImageInput] | None = None,
                 m: float | Sequence[float] = 1.0, num_inference_steps: int = 20,
                 guidance_scale: float = 1.0,
                 guidance_interval: tuple[float, float] = (0.0, 1.0),
                 num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 seeds: Sequence[int] | None = None,
                 identity_embeds: torch.Tensor | np.ndarray | None = None,
                 eta: float = 0.0, solver: Solver = "ddim",
                 identity_handoff: float | None = None,
                 output_type: Literal["pil", "np", "pt"] = "pil",
                 return_dict: bool = True) -> CemiFacePipelineOutput | tuple:
        """Sample ``num_images_per_prompt`` images per identity at target similarity ``m``.

        Identities come from ``inquiry_images`` (embedded by E_id, after resizing to
        :attr:`image_size` as synthesis does) or from ``identity_embeds`` (``[N, D]`` or
        ``[D]``, e.g. a synthesis plan's embeddings or a mixup of two), not both. ``m`` is one
        value for all images, one per identity, or one per output image. Noise: ``seeds`` (one
        integer per output image, the factory's convention) or ``generator`` (one, or one per
        image, each drawing its image's seed), not both; with neither, seeds come from torch's
        global RNG. The sampler settings mean what ``synthesis.sampling`` says of them:
        ``solver`` (ddim, dpmsolver++, unipc), ``eta`` (DDIM only), ``identity_handoff``,
        ``guidance_scale`` (!= 1 needs a generator trained with condition dropout) and
        ``guidance_interval`` (the t/T range where guidance applies).

        Runs on the pipeline's device; when the UNet's weights are cast to another dtype than
        float32 (``pipe.to("cuda", torch.bfloat16)``), every model call runs under autocast to
        it (the solver's state stays float32). Returns a
        :class:`CemiFacePipelineOutput`, or its ``(images, similarities, m, seeds)`` tuple when
        ``return_dict`` is False.
        """
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be at least 1, got "
                             f"{num_images_per_prompt}")
        device = self._execution_device
        autocast = None if self.unet.dtype == torch.float32 else self.unet.dtype
        identity = self._identities(inquiry_images, identity_embeds, device, autocast)
        identity = identity.repeat_interleave(num_images_per_prompt, dim=0)
        m_values = _per_image(m, len(identity), num_images_per_prompt)
        image_seeds = _seeds(seeds, generator, len(identity))

        with self.progress_bar(total=num_inference_steps) as bar:
            samples = sample_images(
                CemiFaceGenerator(self.unet, self.condition), self.scheduler, identity,
                torch.tensor(m_values, dtype=torch.float32, device=device), image_seeds,
                self.image_size, num_inference_steps, eta, identity_handoff,
                self.identity_encoder, on_step=lambda t, estimate: bar.update(),
                solver=solver, autocast=autocast, guidance_scale=guidance_scale,
                guidance_interval=guidance_interval)
        with autocast_context(device, autocast):
            measured = self.identity_encoder(samples).float()
        similarities = (measured * F.normalize(identity, dim=-1)).sum(-1).cpu().numpy()

        if output_type == "pil":
            images = [PIL.Image.fromarray(pixels) for pixels in to_uint8(samples).numpy()]
        elif output_type in ("np", "pt"):
            images = (samples + 1) / 2
            if output_type == "np":
                images = images.permute(0, 2, 3, 1).cpu().numpy()
        else:
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        output = CemiFacePipelineOutput(images, similarities, m_values, image_seeds)
        return output if return_dict else output.to_tuple()

    def _identities(self, images: ImageInput | Sequence[ImageInput] | None,
                    embeds: torch.Tensor | np.ndarray | None, device: torch.device,
                    autocast: torch.dtype | None) -> torch.Tensor:
        """``[N, D]`` float32 conditioning embeddings on ``device``: ``embeds`` as given, or
        E_id's embeddings of ``images``."""
        if (images is None) == (embeds is None):
            raise ValueError("give the identities as inquiry_images or as identity_embeds "
                             "(exactly one of the two)")
        if embeds is not None:
            identity = torch.as_tensor(embeds, dtype=torch.float32).to(device)
            identity = identity[None] if identity.ndim == 1 else identity
            expected = self.condition.config.identity_dim
            if identity.ndim != 2 or identity.shape[1] != expected or len(identity) == 0:
                raise ValueError(f"identity_embeds must be [N, {expected}] (E_id's embedding "
                                 f"size), got shape {tuple(identity.shape)}")
            return identity
        items = images if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("inquiry_images is empty")
        batch = torch.cat([_model_space(item, self.image_size) for item in items]).to(device)
        with autocast_context(device, autocast):
            return self.identity_encoder(batch).float()


def _model_space(image: ImageInput, size: int) -> torch.Tensor:
    """One :data:`ImageInput` as ``[N, 3, size, size]`` float32 in [-1, 1], through the resize
    synthesis applies to its inquiries (:func:`factory.models.identity.inquiry_tensor`)."""
    if isinstance(image, PIL.Image.Image):
        return inquiry_tensor(np.array(image.convert("RGB"))[None], size)
    if isinstance(image, np.ndarray):
        pixels = torch.tensor(image)  # a copy: the caller's array may be read-only
    elif isinstance(image, torch.Tensor):
        pixels = image.detach().cpu()
        pixels = pixels.movedim(-3, -1) if pixels.ndim in (3, 4) else pixels  # CHW -> HWC
    else:
        raise TypeError(f"an inquiry image must be a PIL image, numpy array or tensor, got "
                        f"{type(image).__name__}")
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        layout = "[N, 3, H, W]" if isinstance(image, torch.Tensor) else "[N, H, W, 3]"
        raise ValueError(f"expected RGB images as {layout} (or one without N), got shape "
                         f"{tuple(image.shape)}")
    if pixels.dtype != torch.uint8:
        if not pixels.is_floating_point() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"inquiry image values must be uint8 (0-255) or floating in "
                             f"[0, 1]; got {pixels.dtype} values from {float(pixels.min()):g} "
                             f"to {float(pixels.max()):g}")
        pixels = pixels.float() * 255.0
    return inquiry_tensor(pixels, size)


def _per_image(m: float | Sequence[float], count: int, per_identity: int) -> list[float]:
    """``count`` m values from one value, one per identity or one per image."""
    if np.ndim(m) == 0:  # a number (Python, numpy or a 0-d tensor)
        return [float(m)] * count
    values = [float(value) for value in m]
    if len(values) == count:
        return values
    if len(values) * per_identity == count:
        return [value for value in values for _ in range(per_identity)]
    raise ValueError(f"m needs one value, one per identity ({count // per_identity}) or one "
                     f"per image ({count}); got {len(values)}")


def _seeds(seeds: Sequence[int] | None,
           generator: torch.Generator | list[torch.Generator] | None, count: int) -> list[int]:
    """Each image's integer seed: given, or drawn from the generator(s) or torch's global RNG."""
    if seeds is not None:
        if generator is not None:
            raise ValueError("give seeds or generator, not both")
        if len(seeds) != count:
            raise ValueError(f"seeds needs one seed per image ({count}), got {len(seeds)}")
        return [int(seed) for seed in seeds]
    if isinstance(generator, list):
        if len(generator) != count:
            raise ValueError(f"a list of generators needs one per image ({count}), got "
                             f"{len(generator)}")
        return [_draw(1, one)[0] for one in generator]
    return _draw(count, generator)


def _draw(count: int, generator: torch.Generator | None) -> list[int]:
    """``count`` seeds in ``[0, SEED_RANGE)`` from ``generator`` (on its device)."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, SEED_RANGE, (count,), generator=generator, device=device).tolist()
