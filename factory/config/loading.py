"""Reading and writing configs: a YAML file (parsed safely and boundedly) plus dotted
``key=value`` overrides, validated into :class:`FactoryConfig`; every failure is one
:class:`ConfigError` line naming the file or override and the key (the CLI's exit code 2)."""

from __future__ import annotations

import reprlib
from typing import Any

import yaml
from pydantic import ValidationError

from factory import storage
from factory.config.base import StrictModel
from factory.config.root import FactoryConfig
from factory.errors import ConfigError


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> FactoryConfig:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    source = path or "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = load_yaml(storage.read_text(path))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a YAML text file (byte 0x{exc.object[exc.start]:02x} "
                              f"at offset {exc.start} is not UTF-8)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(str(exc))})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        raw = loaded or {}
    for override in overrides:
        _apply_override(raw, override)
    try:
        return FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


MAX_YAML_NODES = 100_000
"""The most YAML nodes a config may hold with its aliases expanded. A real config has a few
hundred; a 370-byte "billion laughs" file, nine aliases nested nine deep, expands to 10**9."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses, before building any Python object, a document whose
    aliases would expand it past :data:`MAX_YAML_NODES` or make it contain itself."""

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise yaml.YAMLError(f"aliases expand it to {size:.3g} nodes, more than the "
                                 f"{MAX_YAML_NODES} a config may hold")
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under ``node`` as if every alias were copied out; each shared node is counted once
    per use but walked once (``sizes``), so the count is cheap however large it gets."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise yaml.YAMLError(f"an alias refers to a node that contains it "
                             f"(line {node.start_mark.line + 1})")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    sizes[key] = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    return sizes[key]


def load_yaml(text: str) -> Any:
    """Parse config YAML safely and boundedly: plain data only (no tags that build objects), no
    alias bomb, no nesting deep enough to exhaust the interpreter's stack."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``3`` is an int)."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r}: expected dotted.key=value")
    try:
        value = load_yaml(text) if text else ""
    except yaml.YAMLError:
        value = text  # bounded: the text itself, which the schema then checks
    set_dotted(raw, key, value, source=f"override {override!r}")


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``key`` ``a.b.c``, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {part} is not a config section")
        node = child
    node[parts[-1]] = value


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
"""Quotes a bad value in an error at a bounded length, whatever its size."""


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``key: expected ...`` for each, joined with ``; ``."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "<root>"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
            continue
        message = error["msg"].replace("Input should be", "expected").replace("Value error, ", "")
        parts.append(f"{key}: {message}, got {_SHORT_REPR.repr(error.get('input'))}")
    return "; ".join(parts)


def save_config(config: StrictModel, uri: str, code_version: str) -> None:
    """Write the resolved config, and the code and library versions and the platform that used
    it, as YAML at ``uri``."""
    from factory.provenance import package_versions, platform_record

    document = {"code_version": code_version, "packages": package_versions(),
                "platform": platform_record(),
                "config": config.model_dump(mode="json")}
    storage.write_text(uri, yaml.safe_dump(document, sort_keys=False))


def _one_line(text: str) -> str:
    return " ".join(text.split())
