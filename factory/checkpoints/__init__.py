"""Checkpoints on their own floor: reading and writing the recognizer's, the generator's and
the identity encoder's files, with no Ray.

Training writes checkpoints, while evaluation, synthesis, analysis and the diffusers pipeline
read them; keeping the formats here, beside the models and below all of those, means no reader
has to import a training driver (see ``tests/unit/test_layering.py``). This ``__init__`` stays
empty, so that importing :mod:`factory.checkpoints.encoder` pays for torch and the backbone
only, never for diffusers.
"""
