"""MLflow tracking: a local SQLite store keeps its runs' artifacts beside it."""

from factory.tracking import RunTracker


def test_artifacts_go_beside_a_sqlite_store_not_into_the_working_directory(tmp_path,
                                                                            monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    note = tmp_path / "note.txt"
    note.write_text("artifact")
    tracker = RunTracker(True, f"sqlite:///{store}/mlflow.db", "artifacts")
    run_id = tracker.start("run")
    tracker.log_artifact(str(note))
    tracker.end()
    assert (store / "mlartifacts" / run_id / "artifacts" / "note.txt").read_text() == "artifact"
    assert not (elsewhere / "mlruns").exists()
    assert list(elsewhere.iterdir()) == []


def test_runs_record_the_library_versions_and_the_platform(tmp_path):
    import mlflow
    import torch

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = RunTracker(True, uri, "versions")
    run_id = tracker.start("run", tags={"stage": "test"})
    tracker.end()
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags["package.torch"] == torch.__version__ and tags["stage"] == "test"
    from factory.provenance import platform_record

    assert tags["platform.cpu"] == platform_record()["cpu"]  # the CPU that made its figures


def test_messages_show_a_tracking_uri_without_its_password():
    from factory.tracking import redact

    assert redact("postgresql+psycopg://mlflow:s3cr:et@db.internal:5432/mlflow") == \
        "postgresql+psycopg://mlflow:***@db.internal:5432/mlflow"
    assert redact("postgresql://db/mlflow?sslmode=require&PASSWORD=s3cret") == \
        "postgresql://db/mlflow?sslmode=require&PASSWORD=***"
    for plain in ("http://10.0.0.5:5000", "sqlite:////home/ray/mlflow.db",
                  "postgresql://mlflow@db/mlflow"):
        assert redact(plain) == plain


def test_a_restarted_child_run_logs_into_the_run_its_interrupted_start_left(tmp_path):
    """A sweep trial whose first start ended before its first checkpoint (which records the
    run id) starts again under the same parent: it takes over that unfinished run instead of
    leaving it beside a new one; a child that FINISHED is never taken over."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = RunTracker(True, uri, "adopt")
    parent_id = parent.start("sweep")
    parent.end()
    interrupted = RunTracker(True, uri, "adopt")
    first = interrupted.start("trial_1", params={"lr": 0.1}, parent_run_id=parent_id)
    mlflow.end_run(status="KILLED")  # the worker died: nothing ran its tracker.end()

    again = RunTracker(True, uri, "adopt")
    assert again.start("trial_1", params={"lr": 0.1}, parent_run_id=parent_id) == first
    again.log_metrics({"acc": 90.0}, step=0)
    again.end()
    other = RunTracker(True, uri, "adopt")
    assert other.start("trial_2", parent_run_id=parent_id) != first
    other.end()
    rerun = RunTracker(True, uri, "adopt")
    assert rerun.start("trial_1", parent_run_id=parent_id) != first  # first is FINISHED now
    rerun.end()

    client = mlflow.MlflowClient(uri)
    run = client.get_run(first)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"acc": 90.0}
