"""The factory's own runs keep Ray Train's per-report INFO lines and Ray Data's progress blocks
off the console (they stay in Ray's session log files)."""

from __future__ import annotations

import logging

from factory.config import WorkersConfig
from factory.runtime import quiet_ray_data
from factory.train.workers import make_trainer


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


def test_trainers_log_ray_train_at_warning_and_above(tmp_path):
    import ray

    trainer = make_trainer(lambda config: None, {}, WorkersConfig(), "quiet", str(tmp_path), 0)
    assert trainer.run_config.logging_config.log_level == "WARNING"
    assert trainer.run_config.checkpoint_config.num_to_keep == 2
    assert not ray.is_initialized()  # building a trainer starts nothing
