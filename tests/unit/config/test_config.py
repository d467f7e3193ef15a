"""Config loading: YAML plus overrides, strict keys and types, one-line errors."""

import pytest
import yaml

from factory import layout
from factory.config import load_config, save_config
from factory.errors import ConfigError
from helpers import REPO

CONFIGS = REPO / "configs"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_file_and_overrides_merge(tmp_path):
    path = write(tmp_path, "faceworld:\n  image_size: 48\n  identities: 10\n")
    config = load_config(path, ["faceworld.identities=12", "recognizer.backbone.name=ir-tiny"])
    assert config.faceworld.image_size == 48
    assert config.faceworld.identities == 12
    assert config.recognizer.backbone.name == "ir-tiny"


def test_misspelled_key_is_named(tmp_path):
    path = write(tmp_path, "faceworld:\n  imgae_size: 48\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert path in message and "unknown key 'faceworld.imgae_size'" in message
    assert "\n" not in message


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["faceworld.image_size=abc"])
    assert "faceworld.image_size" in str(info.value)
    assert "integer" in str(info.value)


def test_a_reference_run_name_with_a_quote_is_refused_before_it_reaches_mlflow():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["evaluate.reference_run=real's run"])
    assert "evaluate.reference_run" in str(info.value) and "quote" in str(info.value)


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["faceworld.image_size"])


def test_non_mapping_yaml_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_benchmark_pairs_must_fill_ten_balanced_folds():
    with pytest.raises(ConfigError, match="multiple of 20"):
        load_config(None, ["faceworld.benchmarks=[{name: b, pairs: 30}]"])


def test_saved_config_round_trips_with_code_version(tmp_path):
    config = load_config(None, ["faceworld.identities=7"])
    target = str(tmp_path / "out" / "config.yaml")
    save_config(config, target, "facefactory test")
    document = yaml.safe_load(open(target))
    assert document["code_version"] == "facefactory test"
    import cv2, numpy, torch  # noqa: E401 - the versions a saved config must name

    assert document["packages"]["torch"] == torch.__version__
    assert document["packages"]["numpy"] == numpy.__version__
    assert document["packages"]["opencv-python"].startswith(cv2.__version__)
    from factory.provenance import platform_record

    assert document["platform"] == platform_record() and document["platform"]["cpu"]
    assert load_config(None, [f"faceworld.identities={document['config']['faceworld']['identities']}"]).faceworld.identities == 7


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_shipped_configs_load(name):
    """Every file in configs/ (and configs/sweep/) passes the strict schema the jobs apply."""
    load_config(str(CONFIGS / name))


def test_faceworld_generator_config_conditions_on_the_quickstart_outputs():
    """configs/faceworld-generator.yaml reads what `make quickstart` writes."""
    quickstart = load_config(str(CONFIGS / "quickstart.yaml"))
    generator = load_config(str(CONFIGS / "faceworld-generator.yaml"))
    assert generator.generator.data == layout.generator_data_uri(quickstart)
    assert generator.generator.identity_encoder == layout.recognizer_final_uri(quickstart)
    assert layout.inquiry_data_uri(generator) == layout.inquiry_data_uri(quickstart)


def test_aliases_within_the_bound_still_load(tmp_path):
    """Anchors and aliases are ordinary YAML; only their blow-up is refused."""
    path = write(tmp_path, "backbone: &small {name: ir-tiny, input_size: 32}\n"
                           "recognizer:\n  backbone: *small\n"
                           "sweep:\n  measure:\n    encoder_backbone: *small\n")
    with pytest.raises(ConfigError, match="unknown key 'backbone'"):
        load_config(path)
    path = write(tmp_path, "recognizer:\n  backbone: &small {name: ir-tiny, input_size: 32}\n"
                           "sweep:\n  measure:\n    encoder_backbone: *small\n")
    config = load_config(path)
    assert config.sweep.measure.encoder_backbone.name == config.recognizer.backbone.name


def test_alias_expansion_is_counted_not_performed():
    from factory.config import MAX_YAML_NODES, load_yaml

    levels = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join(['*' + chr(96 + i)] * 10)}]"
               for i in range(1, 4)]
    assert len(str(load_yaml("\n".join(levels)))) > 10_000  # 10**4 strings: loads
    levels.append("e: [" + ", ".join(["*d"] * 10) + "]")  # 10**5 + nodes: refused at once
    with pytest.raises(yaml.YAMLError, match=f"more than the {MAX_YAML_NODES}"):
        load_yaml("\n".join(levels))
