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
