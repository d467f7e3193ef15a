"""How the factory runs a Ray Train trainer: the controller's report poll it asks for."""

from __future__ import annotations

import os

import pytest

from factory.config import WorkersConfig
from factory.train.workers import REPORT_POLL_VARIABLE, fit


class _Trainer:
    """Records the poll interval a real trainer's controller would be started with."""

    def fit(self) -> str | None:
        return os.environ.get(REPORT_POLL_VARIABLE)


def test_the_controller_polls_reports_as_configured_unless_the_user_set_ray_s_variable(
        monkeypatch):
    monkeypatch.delenv(REPORT_POLL_VARIABLE, raising=False)
    assert fit(_Trainer(), WorkersConfig().report_poll_s) == "0.2"
    assert REPORT_POLL_VARIABLE not in os.environ  # put back as it was
    monkeypatch.setenv(REPORT_POLL_VARIABLE, "5")
    assert fit(_Trainer(), 0.2) == "5"
    assert os.environ[REPORT_POLL_VARIABLE] == "5"


def test_the_report_poll_must_be_positive():
    with pytest.raises(ValueError, match="report_poll_s"):
        WorkersConfig(report_poll_s=0)
