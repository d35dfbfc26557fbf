"""A diverged run (non-finite loss or scores) fails with one line and is never recorded as a success."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hdmap_train.callbacks import DivergenceCheck
from hdmap_train.errors import HdmapError
from hdmap_train.train import run
from helpers.runs import tiny_run_cfg


@pytest.mark.parametrize("metrics", [{"train_loss": torch.tensor(0.5), "val_loss": torch.tensor(float("nan"))},
                                     {"train_loss_epoch": torch.tensor(float("inf"))}])
def test_a_non_finite_logged_loss_fails_the_epoch(metrics: dict) -> None:
    trainer = SimpleNamespace(callback_metrics=metrics, current_epoch=2)
    with pytest.raises(HdmapError, match=r"^training diverged at epoch 3 \(\w+ (nan|inf)\): lower the learning rate"):
        DivergenceCheck().on_train_epoch_end(trainer, None)
    DivergenceCheck().on_train_epoch_end(SimpleNamespace(callback_metrics={"val_loss": torch.tensor(0.1)}, current_epoch=0), None)


def test_a_diverged_run_is_recorded_as_failed(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.module.learning_rate=1e6", "model.max_epochs=2",
                       "evaluation.plots=false")
    with pytest.raises(HdmapError, match=r"training diverged at epoch 1 \(\w+ nan\): lower the learning rate"):
        run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "training diverged at epoch 1" in record["error"]
    assert "source_results" not in record
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # the diverged epoch is never saved (nor resumed)
