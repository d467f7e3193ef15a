"""Bad input that only a running cluster can show: one line naming the problem, exit code 2, no
traceback (the rest: tests/unit/test_cli_errors.py)."""

from helpers import assert_one_line_error, run_main


def test_workers_a_local_cluster_cannot_hold(capsys, ray_two_cpus, world, tmp_path):
    """Three 1-CPU workers on a 2-CPU local cluster would wait for resources forever."""
    code, err = run_main(capsys, "train-recognizer", f"workdir={tmp_path}",
                         f"recognizer.data={world / 'faceworld' / 'train'}",
                         "recognizer.workers.num_workers=3")
    assert_one_line_error(code, err, "recognizer.workers", "needs 3 CPUs", "has 2 CPUs")
