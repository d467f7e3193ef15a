"""The layering rule of ``factory/``, checked on the source with ``ast`` (nothing is imported).

Every module sits on the floor of the package it belongs to (``factory.eval.threshold`` on
eval's; a top-level module such as ``factory.storage`` on its own entry), lowest first:

1. ``factory`` itself, errors, storage, locking, provenance, report: plain utilities;
2. config, layout: the typed configuration every stage reads, and where its locations default;
3. formats, models, checkpoints: data and weights, on disk and in memory, with no Ray;
4. tracking, runtime: MLflow and Ray set-up;
5. faceworld: the synthetic world;
6. eval: what measures models and datasets (benchmarks, thresholds, figures, reports);
7. train, synth: the stages that make models and datasets (training evaluates as it goes);
8. sweep, experiments: studies that run the stages many times;
9. pipeline, doctor, configdoc, cli, __main__: the commands and generated docs.

A module imports (at the top or inside a function alike) only modules on its own floor or a
lower one; no chain of imports that run leads back to the module it starts from (an import under
``if TYPE_CHECKING:`` never runs, so it may close such a loop, but it too stays on its floor or
below); and formats/, models/ and checkpoints/ never import ``ray``. A new package or top-level
module needs a floor here before it can land.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import REPO

FLOORS: tuple[tuple[str, ...], ...] = (
    ("factory", "factory.errors", "factory.storage", "factory.locking", "factory.provenance",
     "factory.report"),
    ("factory.config", "factory.layout"),
    ("factory.formats", "factory.models", "factory.checkpoints"),
    ("factory.tracking", "factory.runtime"),
    ("factory.faceworld",),
    ("factory.eval",),
    ("factory.train", "factory.synth"),
    ("factory.sweep", "factory.experiments"),
    ("factory.pipeline", "factory.doctor", "factory.configdoc", "factory.cli", "factory.__main__"),
)
"""Packages and top-level modules of ``factory``, one tuple per floor, lowest first."""

NO_RAY = ("factory.formats", "factory.models", "factory.checkpoints")
"""Packages whose modules must not import ``ray``."""


class Import(NamedTuple):
    """One imported module: the line of its first import, and whether any import of it runs
    (False when every one sits under ``if TYPE_CHECKING:``)."""

    line: int
    runs: bool


Graph = dict[str, dict[str, Import]]
"""module -> {module of the same package it imports: how}."""


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(node: ast.AST, module: str, is_package: bool, runs: bool = True
                   ) -> Iterator[tuple[str, int, bool]]:
    """Each absolute name an ``import`` or ``from`` statement anywhere under ``node`` names,
    with its line and whether it runs (not under ``if TYPE_CHECKING:``). ``from a import b``
    yields ``a.b`` (the submodule, if there is one); relative forms are resolved against
    ``module``."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, node.lineno, runs
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[:len(anchor) - node.level + is_package]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            yield f"{base}.{alias.name}", node.lineno, runs
    elif isinstance(node, ast.If) and _type_checking(node.test):
        for child in node.body:
            yield from imported_names(child, module, is_package, False)
        for child in node.orelse:
            yield from imported_names(child, module, is_package, runs)
    else:
        for child in ast.iter_child_nodes(node):
            yield from imported_names(child, module, is_package, runs)


def import_graph(root: Path) -> tuple[Graph, dict[str, list[int]]]:
    """The import graph among the modules of the package at ``root``, and the lines where each
    module imports ``ray`` (or a part of it)."""
    modules = package_modules(root)
    graph: Graph = {}
    ray_lines: dict[str, list[int]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {}
        for name, line, runs in imported_names(tree, module, path.name == "__init__.py"):
            if name == "ray" or name.startswith("ray."):
                ray_lines.setdefault(module, []).append(line)
            while name and name not in modules:  # an attribute of a module -> the module
                name = name.rpartition(".")[0]
            if name and name != module:
                first = graph[module].get(name, Import(line, runs))
                graph[module][name] = Import(first.line, first.runs or runs)
    return graph, ray_lines


def owner(module: str) -> str:
    """The floor entry a module belongs to: the package itself, or its first sub-level."""
    return ".".join(module.split(".")[:2])


def cycles(graph: Graph) -> list[list[str]]:
    """The groups of modules whose imports that run lead from each to each, directly or
    through others (strongly connected components of more than one module), each sorted."""
    running = {module: [t for t, how in targets.items() if how.runs]
               for module, targets in graph.items()}
    reach: dict[str, set[str]] = {}
    for start in running:
        seen, todo = set(), list(running[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(running.get(node, ()))
        reach[start] = seen
    groups = {tuple(sorted(m for m in reach[start] if start in reach[m]))
              for start in graph if start in reach[start]}
    return sorted(list(group) for group in groups)


def layering_violations(root: Path, floors: Sequence[Sequence[str]] = FLOORS,
                        no_ray: Sequence[str] = NO_RAY) -> list[str]:
    """One line per breach of the rule in the package at ``root``: an import that goes up a
    floor, a cycle, a module on no floor, a floor entry that names nothing, a Ray import where
    none may be."""
    graph, ray_lines = import_graph(root)
    floor = {entry: level for level, entries in enumerate(floors) for entry in entries}
    problems = [f"{entry}: on a floor but no such module or package"
                for entry in floor if not any(owner(m) == entry for m in graph)]
    problems += [f"{module}: on no floor (give {owner(module)} one in FLOORS)"
                 for module in graph if owner(module) not in floor]
    for module, targets in sorted(graph.items()):
        for target, (line, _) in sorted(targets.items()):
            low, high = floor.get(owner(module)), floor.get(owner(target))
            if low is not None and high is not None and high > low:
                problems.append(f"{module}:{line} imports {target}, a higher floor "
                                f"({owner(target)} is on floor {high + 1}, {owner(module)} on "
                                f"{low + 1})")
    problems += [f"cycle among {', '.join(group)}" for group in cycles(graph)]
    problems += [f"{module}:{line} imports ray, which {owner(module)} must not"
                 for module, lines in sorted(ray_lines.items()) if owner(module) in no_ray
                 for line in lines]
    return problems


def test_factory_imports_only_down_its_floors():
    root = REPO / "factory"
    problems = layering_violations(root)
    assert not problems, "the layering rule (tests/test_layering.py) is broken:\n" + "\n".join(
        problems)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_reports_an_upward_import_a_cycle_a_stray_module_and_ray(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "",
        "low.py": "import ray\n\n\ndef late():\n    from pkg.high import thing\n",
        "high/__init__.py": "",
        "high/thing.py": "from .. import low\nfrom . import other\n",
        "high/other.py": "from pkg import low\n",
        "stray.py": "import os\n",
    })
    problems = layering_violations(root, floors=[("pkg", "pkg.low"), ("pkg.high", "pkg.gone")],
                                   no_ray=["pkg.low"])
    assert problems == [
        "pkg.gone: on a floor but no such module or package",
        "pkg.stray: on no floor (give pkg.stray one in FLOORS)",
        "pkg.low:5 imports pkg.high.thing, a higher floor (pkg.high is on floor 2, pkg.low on 1)",
        "cycle among pkg.high.other, pkg.high.thing, pkg.low",
        "pkg.low:1 imports ray, which pkg.low must not",
    ]


def test_a_type_only_import_may_close_a_loop_but_not_look_up_a_floor(tmp_path):
    root = tmp_path / "pkg"
    guarded = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import {}\n"
    _write(root, {"__init__.py": "", "a.py": "import pkg.b\n", "b.py": guarded.format("a"),
                  "c.py": guarded.format("high"), "high.py": ""})
    graph, _ = import_graph(root)
    assert graph["pkg.b"] == {"pkg.a": Import(4, False)}
    problems = layering_violations(root, floors=[("pkg", "pkg.a", "pkg.b", "pkg.c"),
                                                 ("pkg.high",)], no_ray=[])
    assert problems == ["pkg.c:4 imports pkg.high, a higher floor (pkg.high is on floor 2, "
                        "pkg.c on 1)"]


@pytest.mark.parametrize("statement, expected", [
    ("from . import b", "pkg.sub.b"),
    ("from .b import f", "pkg.sub.b"),
    ("from .. import c", "pkg.c"),
    ("from ..c import g", "pkg.c"),
    ("import pkg.sub.b", "pkg.sub.b"),
    ("from pkg.sub import b", "pkg.sub.b"),
])
def test_relative_and_from_imports_resolve_to_the_module_they_load(tmp_path, statement, expected):
    root = tmp_path / "pkg"
    _write(root, {"__init__.py": "", "c.py": "", "sub/__init__.py": "", "sub/b.py": "",
                  "sub/a.py": statement + "\n"})
    graph, _ = import_graph(root)
    assert graph["pkg.sub.a"] == {expected: Import(1, True)}
