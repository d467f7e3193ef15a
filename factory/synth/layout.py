"""The names of the files in a synthesised dataset directory, shared by every stage that writes
or reads one (synthesis, analysis, the dataset card), and the bins of the similarity histograms
its stats and manifest hold::

    shards/shard-000000.tar ...     the samples (webdataset: key.jpg, key.cls, key.json)
    shards/shard-000000.parquet ... one row of metadata per sample of the tar beside it
    stats/shard-000000.json ...     per-shard counts, checksums, labels, histograms, centers
    plan.json                       what this directory is a dataset of (checked on rerun)
    plan_identities.npz             the planned identities and their embeddings (a rerun
                                    resumes with them instead of embedding the inquiries again)
    manifest.json                   config, code version, counts, checksums, histograms
    similarity_histogram.png        similarity to inquiry and to center, all samples
    report/                         ``factory analyze``: analysis.json, statistics.txt,
                                    the m-compliance, privacy and samples figures and, with
                                    a judge, judge_similarity.parquet
    README.md                       the dataset card
"""

from __future__ import annotations

import numpy as np

from factory import storage
from factory.formats.shards import MANIFEST_FILE, shard_name  # MANIFEST_FILE: re-exported

STATS_DIR, PLAN_FILE = "stats", "plan.json"
IDENTITIES_FILE = "plan_identities.npz"
HISTOGRAM_FILE = "similarity_histogram.png"
REPORT_DIR = "report"
ANALYSIS_FILE, STATISTICS_FILE = "analysis.json", "statistics.txt"
JUDGE_SIMILARITY_FILE = "judge_similarity.parquet"
COMPLIANCE_FIGURE, PRIVACY_FIGURE, SAMPLES_FIGURE = (
    "m_vs_similarity.png", "privacy.png", "samples.png")
CARD_FILE = "README.md"

HISTOGRAM_EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2)
"""0.1-wide similarity bins over [-1, 1], the CemiFace statistics table's bins."""


def stats_uri(out: str, shard: int) -> str:
    """A shard's stats record (written last: its presence marks the shard complete)."""
    return storage.join(out, STATS_DIR, shard_name(shard).replace(".tar", ".json"))


def centers_uri(out: str, shard: int) -> str:
    """A shard's synthetic identity centers (``.npy``, for the privacy check)."""
    return storage.join(out, STATS_DIR, shard_name(shard).replace(".tar", ".centers.npy"))
