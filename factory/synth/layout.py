"""The names of the files in a synthesised dataset directory, shared by every stage that writes
or reads one (synthesis, analysis, the dataset card)::

    shards/shard-000000.tar ...     the samples (webdataset: key.jpg, key.cls, key.json)
    stats/shard-000000.json ...     per-shard counts, checksums, labels, histograms, centers
    plan.json                       what this directory is a dataset of (checked on rerun)
    plan_identities.npz             the planned identities and their embeddings (a rerun
                                    resumes with them instead of embedding the inquiries again)
    manifest.json                   config, code version, counts, checksums, histograms
    similarity_histogram.png        similarity to inquiry and to center, all samples
    report/                         ``factory analyze``: analysis.json, statistics.txt and
                                    the m-compliance, privacy and samples figures
    README.md                       the dataset card
"""

from __future__ import annotations

from factory.formats.shards import MANIFEST_FILE  # the readers' name for it, re-exported

STATS_DIR, PLAN_FILE = "stats", "plan.json"
IDENTITIES_FILE = "plan_identities.npz"
HISTOGRAM_FILE = "similarity_histogram.png"
REPORT_DIR = "report"
ANALYSIS_FILE, STATISTICS_FILE = "analysis.json", "statistics.txt"
COMPLIANCE_FIGURE, PRIVACY_FIGURE, SAMPLES_FIGURE = (
    "m_vs_similarity.png", "privacy.png", "samples.png")
CARD_FILE = "README.md"
