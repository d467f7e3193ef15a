"""CemiFacePipeline: the factory's checkpoints and sampler behind diffusers' pipeline API.

The pipeline must make exactly the images synthesis makes (one sampler, not two), read and
write the factory's checkpoint format, and run its documented example as printed.
"""

from __future__ import annotations

import os
import re

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

import factory.models.pipeline as pipeline_module
from factory.config import load_config
from factory.formats.dataset import open_dataset
from factory.models.identity import encode_images
from factory.models.inference import prepare
from factory.models.pipeline import CemiFacePipeline, CemiFacePipelineOutput
from factory.synth.plan import shard_items
from factory.synth.sampler import sample_shard
from factory.synth.synthesize import make_plan
from factory.checkpoints.generator import check_generator, load_generator
from helpers import REPO


def synthesis_config(world, generator, *overrides):
    """6 identities (4 inquiries, 2 mixups) x 3 images at m 1, 0, -0.5, 2 DDIM steps, batches
    of 4, 3 identities per shard."""
    return load_config(None, [
        f"workdir={world}", f"synthesis.checkpoint={generator}",
        "synthesis.inquiry.identities=4", "synthesis.inquiry.max_similarity=1.0",
        "synthesis.inquiry.mixup_identities=2", "synthesis.images_per_identity=3",
        "synthesis.identities_per_shard=3", "synthesis.sampling.steps=2",
        "synthesis.sampling.batch_size=4", "synthesis.m.kind=values",
        "synthesis.m.values=[1.0,0.0,-0.5]", *overrides])


@pytest.fixture(scope="module")
def pipe(tiny_generator):
    loaded = CemiFacePipeline.from_pretrained(str(tiny_generator)).to("cpu", torch.float32)
    loaded.set_progress_bar_config(disable=True)
    return loaded


@pytest.fixture(scope="module")
def inquiry(world):
    """The first inquiry image of the tiny face world, uint8 HWC."""
    return open_dataset(str(world / "faceworld" / "inquiry")).image(0)


@pytest.mark.parametrize("sampler", [
    (),
    ("synthesis.sampling.eta=0.5", "synthesis.sampling.identity_handoff=0.5"),
    ("synthesis.sampling.solver=dpmsolver++",),
], ids=["ddim", "ddim-eta-handoff", "dpmsolver++"])
def test_the_pipeline_makes_the_pixels_synthesis_writes(world, tiny_generator, pipe, sampler):
    config = synthesis_config(world, tiny_generator, *sampler)
    cfg = config.synthesis
    generator = load_generator(str(tiny_generator))
    identities, _ = make_plan(config, generator)
    settings = prepare(generator, cfg.sampling, "cpu")
    assert any(identity.partner for identity in identities)  # mixups: no image, an embedding
    for item in shard_items(identities, cfg.identities_per_shard):
        shard = sample_shard(generator, item, cfg, settings, encode=False)
        labels = [identity.label for identity in item.identities]
        embeddings = item.embeddings()
        # the pipeline's calls hold the samples of synthesis's batches (float rounding in the
        # UNet depends on the batch); within one, each row is (identity, m, seed) of a record
        for start in range(0, len(shard.samples), settings.batch_size):
            records = [record.meta for record in shard.samples[start:start + settings.batch_size]]
            out = pipe(identity_embeds=embeddings[[labels.index(r["label"]) for r in records]],
                       m=[r["m"] for r in records], seeds=[r["seed"] for r in records],
                       num_inference_steps=cfg.sampling.steps, eta=cfg.sampling.eta,
                       solver=cfg.sampling.solver,
                       identity_handoff=cfg.sampling.identity_handoff,
                       guidance_scale=cfg.sampling.guidance_scale)
            for row, (image, record) in enumerate(zip(out.images, records)):
                assert np.array_equal(np.asarray(image), shard.pixels[start + row])
                assert out.similarities[row] == pytest.approx(record["similarity_inquiry"],
                                                              abs=2e-6)


def test_the_documented_example_runs_as_printed(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```(\w+)\n(.*?)\n```", pipeline_module.__doc__, re.S)
    (_, code), (_, printed) = [block for block in blocks if block[0] in ("python", "text")]
    os.symlink(os.path.join(REPO, "assets"), tmp_path / "assets")
    monkeypatch.chdir(tmp_path)  # the example's relative paths, and where it saves its images
    with open(os.path.join(REPO, "README.md")) as stream:
        readme = stream.read()
    assert f"```python\n{code}\n```" in readme  # the README prints the same code
    assert f"```\n{printed}\n```" in readme  # and the same output
    exec(compile(code, "factory/models/pipeline.py (docstring)", "exec"), {})
    output = capsys.readouterr().out.strip()
    # the figures to 2e-3 (another CPU may round a last digit otherwise); the rest exactly
    number = r"[+-]\d\.\d{3}"
    assert re.sub(number, "#", output) == re.sub(number, "#", printed)
    assert np.allclose([float(x) for x in re.findall(number, output)],
                       [float(x) for x in re.findall(number, printed)], atol=2e-3)
    for m in ("1.0", "0.5", "0.0"):
        with PIL.Image.open(tmp_path / f"cemiface_m{m}.png") as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_save_pretrained_writes_a_checkpoint_the_factory_loads(tiny_generator, pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    saved = str(tmp_path / "saved")
    original = load_generator(str(tiny_generator))
    assert check_generator(saved) == original.meta
    reloaded = load_generator(saved)
    assert reloaded.meta == original.meta and reloaded.image_size == pipe.image_size
    for before, after in ((original.model, reloaded.model), (original.encoder, reloaded.encoder)):
        assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                    after.state_dict().values()))
    assert reloaded.scheduler.config == original.scheduler.config
    with open(os.path.join(saved, "config.yaml")) as stream:
        written = yaml.safe_load(stream)
    with open(tiny_generator / "config.yaml") as stream:
        assert written == yaml.safe_load(stream)
    # E_id's record keeps its origin; the checkpoint reads back without unpickling anything
    record = torch.load(os.path.join(saved, "identity_encoder.pt"), weights_only=True)
    assert record["source"] == "test"  # what save_tiny_generator recorded
    again = CemiFacePipeline.from_pretrained(saved)
    assert again.identity_encoder.source == record["source"]
    embedding = np.ones((1, 64), np.float32)
    assert np.array_equal(np.asarray(again(identity_embeds=embedding, num_inference_steps=2,
                                           seeds=[3]).images[0]),
                          np.asarray(pipe(identity_embeds=embedding, num_inference_steps=2,
                                          seeds=[3]).images[0]))


def test_an_identity_given_in_any_image_form_or_as_its_embedding_gives_the_same_images(
        pipe, inquiry):
    """PIL, uint8 HWC, uint8 NHWC, a float CHW tensor in [0, 1], a list: one identity; and its
    E_id embedding, as synthesis plans it (encode_images), gives the same images."""
    arguments = {"m": 0.5, "num_inference_steps": 2, "seeds": [11], "output_type": "np"}
    forms = [PIL.Image.fromarray(inquiry), inquiry, inquiry[None],
             torch.from_numpy(inquiry).permute(2, 0, 1).float() / 255, [inquiry]]
    outputs = [pipe(inquiry_images=form, **arguments) for form in forms]
    embedding = encode_images(pipe.identity_encoder, pipe.image_size, inquiry[None])
    outputs.append(pipe(identity_embeds=embedding, **arguments))
    for out in outputs[1:]:
        assert np.array_equal(out.images, outputs[0].images)
        assert out.similarities == pytest.approx(outputs[0].similarities, abs=1e-6)
    assert outputs[0].images.shape == (1, 32, 32, 3) and outputs[0].images.dtype == np.float32


def test_m_seeds_and_repetition_follow_the_diffusers_conventions(pipe, inquiry):
    faces = [inquiry, np.ascontiguousarray(inquiry[::-1])]
    out = pipe(inquiry_images=faces, m=[1.0, -1.0], num_images_per_prompt=2,
               num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, CemiFacePipelineOutput) and len(out.images) == 4
    assert all(isinstance(image, PIL.Image.Image) for image in out.images)
    assert out.m == [1.0, 1.0, -1.0, -1.0]  # one m per identity, identity-major order
    assert out.seeds == torch.randint(0, 2**32, (4,),
                                      generator=torch.Generator().manual_seed(0)).tolist()
    # the same generator seed gives the same images; each image's seed remakes it alone
    again = pipe(inquiry_images=faces, m=[1.0, -1.0], num_images_per_prompt=2,
                 num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(out.images, again.images))
    alone = pipe(inquiry_images=faces[1], m=-1.0, num_inference_steps=2, seeds=out.seeds[3:],
                 output_type="pt", return_dict=False)
    batch = pipe(inquiry_images=faces, m=out.m, num_images_per_prompt=2, num_inference_steps=2,
                 seeds=out.seeds, output_type="pt")
    assert torch.allclose(alone[0][0], batch.images[3], atol=1e-4)  # batch rounding only
    assert alone[1][0] == pytest.approx(out.similarities[3], abs=1e-4)
    # one generator per image draws that image's seed
    generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    out = pipe(inquiry_images=inquiry, num_images_per_prompt=2, num_inference_steps=2,
               generator=generators)
    assert out.seeds == [torch.randint(0, 2**32, (1,), generator=torch.Generator()
                                       .manual_seed(seed)).item() for seed in (5, 6)]
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(out.images[1]))


def test_a_pt_output_feeds_back_as_inquiry_images(pipe, inquiry):
    made = pipe(inquiry_images=inquiry, num_inference_steps=2, seeds=[1], output_type="pt")
    assert made.images.shape == (1, 3, 32, 32) and 0 <= made.images.min() <= made.images.max() <= 1
    pil = pipe(inquiry_images=inquiry, num_inference_steps=2, seeds=[1]).images[0]
    arguments = {"num_inference_steps": 2, "seeds": [1], "output_type": "np"}
    # the PIL image holds the pt output's pixels rounded to uint8: nearly the same identity, so
    # nearly the same sample (another identity moves it by about 0.03 here)
    assert np.abs(pipe(inquiry_images=made.images, **arguments).images
                  - pipe(inquiry_images=pil, **arguments).images).max() < 1e-3


def test_a_bfloat16_pipeline_samples_under_autocast(tiny_generator, inquiry):
    pipe = CemiFacePipeline.from_pretrained(str(tiny_generator), dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.dtype == torch.bfloat16 and pipe.identity_encoder.dtype == torch.bfloat16
    out = pipe(inquiry_images=inquiry, m=[1.0, 0.0], num_images_per_prompt=2,
               num_inference_steps=2, seeds=[1, 2], output_type="pt")
    assert out.images.dtype == torch.float32 and out.images.shape == (2, 3, 32, 32)
    assert np.isfinite(out.similarities).all()


@pytest.mark.parametrize("arguments, message", [
    ({}, "exactly one of the two"),
    ({"inquiry_images": "face", "identity_embeds": np.ones(64)}, "exactly one of the two"),
    ({"identity_embeds": np.ones(3)}, r"\[N, 64\]"),
    ({"identity_embeds": np.ones(64), "m": [1.0, 0.0]}, "one per image"),
    ({"identity_embeds": np.ones(64), "seeds": [1, 2]}, "one seed per image"),
    ({"identity_embeds": np.ones(64), "seeds": [1], "generator": torch.Generator()},
     "not both"),
    ({"identity_embeds": np.ones(64), "guidance_scale": 2.0}, "no null context"),
    ({"identity_embeds": np.ones(64), "output_type": "latent"}, "output_type"),
    ({"inquiry_images": np.zeros((32, 32), np.uint8)}, "RGB images"),
    ({"inquiry_images": np.zeros((32, 32, 3), np.int64)}, "uint8"),
    ({"inquiry_images": np.full((32, 32, 3), 255.0)}, r"floating in \[0, 1\]"),
])
def test_wrong_arguments_say_what_is_expected(pipe, arguments, message):
    with pytest.raises(ValueError, match=message):
        pipe(**{"num_inference_steps": 1, **arguments})
