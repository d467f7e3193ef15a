"""The factory's own runs keep Ray Train's per-report INFO lines, Ray Data's progress blocks and
INFO lines, and Ray's lines about its own internals off the console (they stay in Ray's session
log files); training progress reaches the console as whole lines."""

from __future__ import annotations

import logging

from factory.config import WorkersConfig
from factory.runtime import WORKER_LOG_HANDLER, hide_ray_internal_lines, quiet_ray_data
from factory.train.workers import ProgressLines, make_trainer


def test_ray_data_progress_and_plan_are_off_after_quiet_ray_data(monkeypatch):
    import ray.data

    context = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        monkeypatch.setattr(context, name, True)  # restored after the test
    quiet_ray_data()
    assert context.enable_progress_bars is False
    assert context.print_on_execution_start is False
    from ray.data._internal.progress import logger

    assert not logger.isEnabledFor(logging.WARNING)  # its "Progress bars disabled" line
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler)]
    assert console and all(h.level == logging.WARNING for h in console)  # "execution finished"


def test_trainers_log_ray_train_at_warning_and_above(tmp_path):
    import ray

    trainer = make_trainer(lambda config: None, {}, WorkersConfig(), "quiet", str(tmp_path), 0)
    assert trainer.run_config.logging_config.log_level == "WARNING"
    assert trainer.run_config.checkpoint_config.num_to_keep == 2
    assert not ray.is_initialized()  # building a trainer starts nothing


def test_ray_internal_lines_are_kept_off_the_console_and_the_rest_passes():
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed: list[dict] = []
    dispatcher.add_handler(WORKER_LOG_HANDLER, printed.append)
    try:
        hide_ray_internal_lines()
        hide_ray_internal_lines()  # idempotent: one wrapper
        internal = ("[2026-12-02 12:15:53,744 E 27842 27886] core_worker.cc:2465: Actor with "
                    "class name: 'PreemptionWatcher' and ID: '2b4c' has constructor arguments "
                    "in the object store and max_restarts > 0. If the arguments ...")
        dispatcher.emit({"pid": 1, "is_err": True, "lines": [internal, "epoch 0: loss 1.0"]})
        dispatcher.emit({"pid": 1, "is_err": True, "lines": [internal]})
    finally:
        dispatcher.remove_handler(WORKER_LOG_HANDLER)
    assert [data["lines"] for data in printed] == [["epoch 0: loss 1.0"]]


def test_training_progress_is_whole_lines_with_the_meter(capsys):
    progress = ProgressLines("recognizer", 10, "step", enabled=True, interval=0.0, initial=2)
    progress.update()
    progress.update(between_lines=False)  # a summary line follows: no meter line now
    progress.line("epoch 0: loss 1.000")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "\r" not in "".join(lines)
    assert lines[0].startswith("recognizer:  30%|") and "3/10" in lines[0]
    assert "4/10" in lines[1] and lines[1].endswith("] epoch 0: loss 1.000")
    silent = ProgressLines("recognizer", 10, "step", enabled=False, interval=0.0)
    silent.update()
    silent.line("epoch 0")
    assert capsys.readouterr().out == ""
