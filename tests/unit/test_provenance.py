"""The platform every artefact records: what a reader needs to know whether a figure should
reproduce to the digit (same CPU kind) or only within the seed spread (another kind)."""

from __future__ import annotations

from factory.provenance import describe_platform, platform_record, platform_tags, platform_text

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu avx2 avx512f avx512_bf16
"""


def test_the_platform_names_the_cpu_and_its_matmul_features(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    record = describe_platform(str(path))
    assert record["cpu"] == "AMD EPYC 9R14 96-Core Processor"
    assert record["matmul_features"] == ["avx2", "avx512f", "avx512_bf16"]
    assert record["bf16_native"] is True
    assert record["gpus"] == []  # torch sees no CUDA device on this machine
    assert platform_text(record).startswith("AMD EPYC 9R14 96-Core Processor (")
    assert platform_text(record).endswith(" CPUs, bf16 native)")


def test_without_cpuinfo_the_platform_says_unknown_rather_than_guess(tmp_path):
    record = describe_platform(str(tmp_path / "absent"))
    assert record["matmul_features"] == [] and record["bf16_native"] is None
    assert "bf16 unknown" in platform_text(record)


def test_a_gpu_is_named_in_the_one_line_text():
    record = {"cpu": "Intel Xeon", "cpus": 16, "bf16_native": True, "gpus": ["NVIDIA H100"]}
    assert platform_text(record) == "Intel Xeon (16 CPUs, bf16 native), GPU: NVIDIA H100"


def test_mlflow_tags_flatten_the_record_to_strings():
    tags = platform_tags()
    record = platform_record()
    assert tags["platform.cpu"] == record["cpu"]
    assert tags["platform.matmul_features"] == ", ".join(record["matmul_features"])
    assert all(isinstance(value, str) for value in tags.values())
