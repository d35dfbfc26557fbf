"""Loggers and callbacks are config groups (conf/logger/, conf/callbacks/), as in lightning-hydra-template: one can
be added or swapped from the command line; TensorBoard, which every run writes to, cannot be dropped."""

import json
from pathlib import Path

import pytest

from hdmap_train.errors import HdmapError
from hdmap_train.train import run
from helpers.runs import tiny_run_cfg


def test_a_logger_and_a_callback_added_from_the_command_line(tiny_dataset: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fit.txt"
    cfg = tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.max_epochs=1", "evaluation.plots=false", "logger=csv",
                       "+callbacks.marker._target_=helpers.callbacks.FitMarker", f"+callbacks.marker.path={marker}")
    record = run(cfg, tmp_path)
    assert record["status"] == "success" and marker.read_text() == "1"
    assert (tmp_path / "csv" / "metrics.csv").is_file() and list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "success"


def test_dropping_tensorboard_is_one_line(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.max_epochs=1", "logger=csv", "~logger.tensorboard")
    with pytest.raises(HdmapError, match="The logger group has no TensorBoard logger"):
        run(cfg, tmp_path)
