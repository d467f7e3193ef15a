"""The sampler settings the benchmarks take on their command line, one parser for all of them.

A list of settings is written ``ddim:5,10,20,unipc:10,ddim:20@bf16+compile``: items separated by
commas (no shell quoting needed), each ``[solver:]steps[@precision][+compile]``:

* ``solver``: one of ``synthesis.sampling.solver``'s values (``ddim``, ``dpmsolver++``,
  ``unipc``); an item without one takes the solver of the item before it, so ``ddim:5,10,20``
  is DDIM at 5, 10 and 20 steps;
* ``steps``: a positive integer;
* ``precision``: one of ``synthesis.sampling.precision``'s values (``auto``, ``fp32``, ``bf16``,
  ``fp16``), ``auto`` when left out, as in the config: float32 on a CPU, bf16 on a GPU;
* ``+compile``: ``torch.compile`` the UNet (``synthesis.sampling.compile``).

The vocabularies are read from :class:`~factory.config.SamplingConfig`, so a benchmark accepts
exactly what a config does.
"""

from __future__ import annotations

import argparse
import re
from typing import NamedTuple, get_args

from factory.config import SamplingConfig

SOLVERS: tuple[str, ...] = get_args(SamplingConfig.model_fields["solver"].annotation)
PRECISIONS: tuple[str, ...] = get_args(SamplingConfig.model_fields["precision"].annotation)
GRAMMAR = "[solver:]steps[@precision][+compile]"
_ITEM = re.compile(r"(?:(?P<solver>[^:@]+):)?(?P<steps>[0-9]+)(?:@(?P<precision>[^+]+))?"
                   r"(?P<compile>\+compile)?")


class SamplerSetting(NamedTuple):
    """One setting: what ``synthesis.sampling`` solver, steps, precision and compile become."""

    solver: str
    steps: int
    precision: str
    compile: bool


def parse_settings(text: str) -> list[SamplerSetting]:
    """The settings ``text`` lists (see the module doc), in order; ValueError naming the item
    that is not one, and why."""
    settings: list[SamplerSetting] = []
    for item in (part.strip() for part in text.split(",")):
        match = _ITEM.fullmatch(item)
        if not item:
            raise ValueError(f"{text!r}: an empty setting (a comma too many?)")
        if match is None:
            raise ValueError(f"{item!r} is not {GRAMMAR} (settings are separated by commas)")
        solver = match["solver"] or (settings[-1].solver if settings else None)
        if solver is None:
            raise ValueError(f"{item!r}: the first setting must name its solver ({GRAMMAR})")
        if solver not in SOLVERS:
            raise ValueError(f"{item!r}: unknown solver {solver!r} (one of {', '.join(SOLVERS)})")
        precision = match["precision"] or "auto"
        if precision not in PRECISIONS:
            raise ValueError(f"{item!r}: unknown precision {precision!r} "
                             f"(one of {', '.join(PRECISIONS)})")
        if int(match["steps"]) < 1:
            raise ValueError(f"{item!r}: steps must be at least 1")
        settings.append(SamplerSetting(solver, int(match["steps"]), precision,
                                       bool(match["compile"])))
    return settings


def settings_argument(parser: argparse.ArgumentParser, flag: str,
                      text: str) -> list[SamplerSetting]:
    """:func:`parse_settings` of a command-line value: a bad list is the parser's usage error
    (exit 2) naming ``flag``."""
    try:
        return parse_settings(text)
    except ValueError as exc:
        parser.error(f"{flag}: {exc}")
