"""The ``runtime`` section: where Ray, MLflow and the object store run."""

from __future__ import annotations

from pydantic import Field

from factory.config.base import MAX_NAME_CHARS, StrictModel, Uri


class RuntimeConfig(StrictModel):
    """Where Ray, MLflow and the object store run. Environment variables win over the file
    (``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI``, ``AWS_ENDPOINT_URL``), and ``--address`` wins
    over both."""

    ray_address: str | None = Field(None, description="Existing cluster ('auto': the head "
                                                       "`ray start` runs on this machine); "
                                                       "None starts a local one of its own")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a local cluster")
    mlflow_tracking_uri: str | None = Field(None, description="None: sqlite:///<cwd>/mlflow.db")
    mlflow_artifact_location: Uri = Field(
        "", description="Artifact root of an experiment the factory creates (s3://...); empty: "
                        "mlartifacts/ beside a SQLite store, the server's default otherwise")
    s3_endpoint: str | None = Field(
        None, pattern=r"^https?://\S+$",
        description="S3-compatible endpoint URL (MinIO, Ceph); None: AWS_ENDPOINT_URL or AWS")
    experiment: str = Field("facefactory", min_length=1, max_length=MAX_NAME_CHARS,
                            description="MLflow experiment name")
