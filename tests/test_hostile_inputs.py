"""Hostile and broken inputs: every one ends in one short line on stderr and exit code 2, with no
traceback, and leaves every file that was already there as it was.

Each case builds its bad input under ``tmp_path`` and returns the command line and the words
the error line must contain. Nothing here starts Ray: every case must fail before any work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from factory.cli import MAX_ERROR_CHARS, main


@dataclass
class Case:
    """A command line that must fail, and what its one error line must name."""

    argv: list[str]
    needles: tuple[str, ...] = ()


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


# -- config files and overrides ----------------------------------------------------------------

def binary_config(tmp_path: Path) -> Case:
    config = tmp_path / "junk.yaml"
    config.write_bytes(bytes(range(256))[::-1] * 4)
    return Case(["faceworld", "--config", str(config)], (str(config), "not a YAML text file"))


BILLION_LAUGHS = "\n".join(
    [f'{chr(97)}: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join(['*' + chr(96 + i)] * 9)}]"
       for i in range(1, 8)]
    + ["faceworld:", "  identities: [*h, *h, *h, *h, *h, *h, *h, *h, *h]"]) + "\n"
"""Nine aliases nested nine deep under one key: 9**9 strings once expanded, in ~400 bytes."""


def yaml_alias_bomb(tmp_path: Path) -> Case:
    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    return Case(["faceworld", "--config", str(config)], (str(config), "aliases expand"))


def yaml_alias_bomb_in_an_override(tmp_path: Path) -> Case:
    value = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"&{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(6)) + "]"
    return Case(["faceworld", f"faceworld.identities={value}"], ("faceworld.identities",))


def yaml_nested_too_deeply(tmp_path: Path) -> Case:
    config = tmp_path / "deep.yaml"
    config.write_text("faceworld: " + "[" * 5000 + "]" * 5000 + "\n")
    return Case(["faceworld", "--config", str(config)], (str(config), "nested too deeply"))


def yaml_self_containing_alias(tmp_path: Path) -> Case:
    config = tmp_path / "loop.yaml"
    config.write_text("faceworld:\n  benchmarks: &loop [*loop]\n")
    return Case(["faceworld", "--config", str(config)], (str(config), "contains it"))


def huge_value_in_the_error(tmp_path: Path) -> Case:
    return Case(["faceworld", f"faceworld.identities={'x' * 100_000}"],
                ("faceworld.identities", "integer"))


CASES: list[Callable[[Path], Case]] = [
    binary_config, yaml_alias_bomb, yaml_alias_bomb_in_an_override, yaml_nested_too_deeply,
    yaml_self_containing_alias, huge_value_in_the_error,
]


@pytest.mark.parametrize("make_case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_input_gives_one_short_line_and_changes_nothing(make_case, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = make_case(tmp_path)
    before = snapshot(tmp_path)
    code = main(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    assert len(lines[0]) <= MAX_ERROR_CHARS
    assert lines[0].startswith(f"factory {case.argv[0]}: error: ")
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before
