"""One tiny CPU run per model, end to end, asserting what metrics.json and the run directory hold."""

import json
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from conftest import PRETRAINED, TINY_MODEL, compose_cfg
from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from hdmap_train.models import build_model
from hdmap_train.models.draem import HDMAPDraem
from hdmap_train.train import RunEngine, run
from hdmap_train.weights import write_random_weights

DOMAINS = ["domain_A", "domain_B", "domain_C", "domain_D"]


def tiny_run_cfg(model: str, data_root: Path, run_dir: Path, *extra: str):
    return compose_cfg(
        [f"model={model}", "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={data_root}",
         *TINY_MODEL[model], *extra],
        run_dir,
    )


def assert_complete_record(run_dir: Path, model: str) -> dict:
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success" and record["error"] is None
    assert record["condition"]["model"] == model and record["condition"]["config"]["model"]["name"] == model
    assert record["source_domain"] == "domain_A"
    assert set(record["target_results"]) == {"domain_B", "domain_C", "domain_D"}
    results = [record["source_results"], *record["target_results"].values()]
    assert [r["domain"] for r in results] == DOMAINS
    for result in results:
        assert 0.0 <= result["image_AUROC"] <= 1.0 and 0.0 <= result["image_F1Score"] <= 1.0
        assert result["n_normal"] == 12 and result["n_fault"] == 12 and result["n_samples"] == 24
        assert result["threshold"] == record["validation"]["threshold"]  # one validation threshold everywhere
    expected_avg = sum(r["image_AUROC"] for r in record["target_results"].values()) / 3
    assert record["avg_target_auroc"] == pytest.approx(expected_avg)
    assert record["data"]["train_samples"] + record["data"]["val_samples"] == 40
    assert Path(record["best_checkpoint"]).is_file() and Path(record["best_checkpoint"]).parent == run_dir / "checkpoints"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    info = record["training_info"]
    assert info["fit_seconds"] > 0 and info["test_seconds"] > 0
    assert {"anomalib", "torch", "lightning", "hydra-core"} <= set(record["versions"])
    assert not list(run_dir.rglob("v0")), "anomalib's versioned workspace must not be created"
    return record


def validate_twice(model, data_root: Path, eval_batch_size: int = 32) -> tuple[dict, dict]:
    """Validate `model` twice on a held-out quarter of domain A; BatchNorm statistics must stay untouched."""
    dm = MultiDomainHDMAPDataModule(data_root, "A", ["B"], (32, 96), val_fraction=0.25, eval_batch_size=eval_batch_size)
    dm.setup()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(model, dataloaders=dm.val_dataloader(), verbose=False)[0]
    after = model.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    return metrics, trainer.validate(model, dataloaders=dm.val_dataloader(), verbose=False)[0]


@pytest.mark.slow
def test_draem_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    run(tiny_run_cfg("draem", tiny_dataset, tmp_path), tmp_path)
    record = assert_complete_record(tmp_path, "draem")
    info = record["training_info"]
    assert info["monitor"] == "val_loss" and len(info["val_loss_per_epoch"]) == info["last_trained_epoch"] == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["patchcore", "dinomaly"])
def test_pretrained_models_end_to_end_offline(model: str, tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    write_random_weights(PRETRAINED[model], hf_cache)
    run(tiny_run_cfg(model, tiny_dataset, tmp_path / "run"), tmp_path / "run")
    record = assert_complete_record(tmp_path / "run", model)
    if model == "patchcore":
        info = record["training_info"]
        assert info["last_trained_epoch"] == 1 and info["monitor"] is None
        assert set(info["fit_phase_seconds"]) == {"feature_extraction", "coreset_selection", "memory_bank"}
        assert info["fit_phase_seconds"]["feature_extraction"] > 0
        assert info["train_images_per_epoch"] == [36] == [record["data"]["train_images_per_epoch"]]  # every image in the bank
    else:
        assert len(record["training_info"]["val_loss_per_epoch"]) == 1


def test_missing_weights_fail_clearly_without_success_record(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    cfg = tiny_run_cfg("patchcore", tiny_dataset, tmp_path)
    with pytest.raises(Exception, match="resnet18.*HF_HOME"):
        run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "resnet18" in record["error"]


def test_exception_during_fit_is_recorded_as_failed(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    def broken_fit(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(RunEngine, "fit", broken_fit)
    with pytest.raises(RuntimeError):
        run(tiny_run_cfg("draem", tiny_dataset, tmp_path), tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "out of memory" in record["error"]
    assert not list(tmp_path.glob(".metrics.json.*")), "no temporary file left behind"


def test_validation_loss_leaves_batchnorm_statistics_alone(tiny_dataset: Path, tmp_path: Path) -> None:
    model = build_model(tiny_run_cfg("draem", tiny_dataset, tmp_path).model)
    assert isinstance(model, HDMAPDraem)
    metrics, again = validate_twice(model, tiny_dataset)
    assert metrics["val_loss"] > 0
    assert again["val_loss"] == pytest.approx(metrics["val_loss"])  # seeded synthetic anomalies: same number


def test_plots_can_be_switched_off(tiny_dataset: Path, tmp_path: Path) -> None:
    run(tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.max_epochs=1", "evaluation.plots=false"), tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "success" and (tmp_path / "predictions.csv").is_file()
    assert not (tmp_path / "plots").exists()
