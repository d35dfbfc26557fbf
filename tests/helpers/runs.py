"""Runners shared by the tests: the CLI in a subprocess, tiny end-to-end runs and what their records must hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule
from helpers.config import compose_cfg


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m hdmap_train ARGS` in cwd and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "hdmap_train", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False,
    )


DOMAINS = ["domain_A", "domain_B", "domain_C", "domain_D"]
# The top-level keys of a single-source record, in order (several sources add source_domains, source_domain_results).
RECORD_KEYS = ["condition", "status", "error", "source_domain", "experiment_path", "timestamp", "versions", "data", "weights",
               "training_info", "best_checkpoint", "efficiency", "provenance", "validation", "source_results", "target_results",
               "avg_target_auroc", "hmean_target_auroc", "hmean_auroc", "transfer_ratio", "transfer_ratio_note"]


def tiny_run_cfg(model: str, data_root: Path, run_dir: Path, *extra: str):
    return compose_cfg(
        [f"model={model}", "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={data_root}",
         "size=tiny", *extra],
        run_dir,
    )


def assert_complete_record(run_dir: Path, model: str) -> dict:
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success" and record["error"] is None
    assert record["condition"]["model"] == model and record["condition"]["config"]["model"]["name"] == model
    assert record["source_domain"] == "domain_A"
    assert list(record) == RECORD_KEYS
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
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    after = model.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    return metrics, trainer.validate(model, datamodule=dm, verbose=False)[0]
