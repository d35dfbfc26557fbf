"""One tiny CPU run per model, end to end, asserting what metrics.json and the run directory hold."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from anomalib.models.image.draem.torch_model import DraemModel

from hdmap_train.engine_patches import RunEngine
from hdmap_train.models import build_model, draem
from hdmap_train.models.components import draem_subnetworks
from hdmap_train.models.draem import HDMAPDraem
from hdmap_train.train import run
from hdmap_train.weights import write_random_weights
from helpers.config import PRETRAINED
from helpers.runs import assert_complete_record, tiny_run_cfg, validate_twice


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
    path = write_random_weights(PRETRAINED[model], hf_cache)
    run(tiny_run_cfg(model, tiny_dataset, tmp_path / "run"), tmp_path / "run")
    record = assert_complete_record(tmp_path / "run", model)
    assert record["weights"]["mode"] == "unverified" and [f["path"] for f in record["weights"]["files"]] == [str(path)]
    assert record["weights"]["pre_trained"] is False  # random weights planted in the cache are not the published ones
    assert record["weights"]["files"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
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


def test_draem_initial_weights_as_after_anomalib_default_networks_built_or_remembered(monkeypatch) -> None:
    """The first build draws anomalib's default networks for real, the second (same generator state) remembers where
    they leave the generator: the same initial weights, the same generator state after, no weight left on the meta
    device; the real build is DraemModel() itself, then the small networks.
    """
    monkeypatch.setattr(draem, "_STATE_AFTER_DEFAULT_NETWORKS", {})
    states, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = HDMAPDraem(reconstructive_width=8, discriminative_width=4)
        states.append(torch.get_rng_state())
        weights.append(model.model.state_dict())
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert len(draem._STATE_AFTER_DEFAULT_NETWORKS) == 1
    assert torch.equal(states[0], states[1])
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    before = next(iter(draem._STATE_AFTER_DEFAULT_NETWORKS))  # the generator state the real build started from
    torch.set_rng_state(torch.frombuffer(bytearray(before), dtype=torch.uint8))
    DraemModel()
    expected = draem_subnetworks(3, 8, 4)
    for name, net in zip(("reconstructive_subnetwork", "discriminative_subnetwork"), expected, strict=True):
        assert all(torch.equal(weights[0][f"{name}.{k}"], v) for k, v in net.state_dict().items())


def test_plots_can_be_switched_off(tiny_dataset: Path, tmp_path: Path) -> None:
    run(tiny_run_cfg("draem", tiny_dataset, tmp_path, "model.max_epochs=1", "evaluation.plots=false"), tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "success" and (tmp_path / "predictions.csv").is_file()
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_memory_bank_single_epoch_is_complete_whatever_max_epochs_says(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    run(tiny_run_cfg("patchcore", tiny_dataset, tmp_path, "weights=random", "model.max_epochs=2"), tmp_path)
    info = assert_complete_record(tmp_path, "patchcore")["training_info"]
    assert info["max_epochs_configured"] == 2 and info["max_epochs_effective"] == 1 == info["last_trained_epoch"]
    assert info["completion_type"] == "max_epochs_reached"
