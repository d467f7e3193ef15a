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


def test_runs_record_the_library_versions(tmp_path):
    import mlflow
    import torch

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = RunTracker(True, uri, "versions")
    run_id = tracker.start("run", tags={"stage": "test"})
    tracker.end()
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags["package.torch"] == torch.__version__ and tags["stage"] == "test"
