"""docs/configuration.md is exactly what factory.configdoc generates from the config models.

The page lists every config key with its type, default and description; generating it from the
pydantic models, and failing here when the committed copy differs, keeps it from drifting from
the code.
"""

from __future__ import annotations

from factory import configdoc
from factory.config import FactoryConfig
from helpers import REPO


def test_the_committed_page_is_the_generated_one():
    committed = (REPO / configdoc.PAGE).read_text(encoding="utf-8")
    assert committed == configdoc.render(), (
        f"{configdoc.PAGE} is out of date with the config models; regenerate it with\n"
        f"    .venv/bin/{configdoc.COMMAND}")


def _leaf_keys(model, prefix=""):
    for name, info in model.model_fields.items():
        child, shape = configdoc._nested_model(info.annotation)
        key = f"{prefix}{name}"
        yield key
        if child is not None:
            inner = {"section": f"{key}.", "list": f"{key}[].", "mapping": f"{key}.<key>."}
            yield from _leaf_keys(child, inner[shape])


def test_every_key_has_a_row():
    page = configdoc.render()
    missing = [key for key in _leaf_keys(FactoryConfig) if f"| `{key}` |" not in page]
    assert not missing, f"keys without a row: {missing}"


def test_types_and_defaults_read_as_yaml():
    page = configdoc.render()
    for row in ("| `workdir` | URI | `runs/default` |",
                "| `recognizer.run_name` | folder name | `recognizer` |",
                "| `generator.sampling.batch_size` | int >= 1 or `auto` | `64` |",
                "| `runtime.num_cpus` | int >= 1 or null | `null` |",
                "| `synthesis.sampling.solver` | `ddim`, `dpmsolver++` or `unipc` | `ddim` |",
                "| `experiments.volumes[].identities` | int >= 2 | required |"):
        assert row in page, row


def test_out_writes_the_page_atomically(tmp_path):
    out = tmp_path / "configuration.md"
    out.write_text("stale", encoding="utf-8")
    assert configdoc.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == configdoc.render()
    assert [p.name for p in tmp_path.iterdir()] == ["configuration.md"]
