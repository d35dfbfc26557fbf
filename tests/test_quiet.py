"""Quiet runs: what a newcomer need not learn to ignore is not printed (hdmap_train.quiet), and the config line says
where the image size came from."""

import subprocess
import sys
from pathlib import Path

import pytest

from hdmap_train.train import size_text
from helpers.config import compose_cfg

NOISE = ("💡 Tip", "TPU available", "INFO: Seed set", "Trying to infer the `batch_size`", "ckpt_path is not provided",
         "Selecting Coreset Indices", "configure_optimizers` returned `None`", "module(s) in eval mode",
         "will override existing callbacks", "Traceback")


@pytest.mark.parametrize("model", ["draem", "patchcore"])
def test_a_tiny_run_prints_none_of_the_noise(model: str, tiny_dataset: Path, hf_cache: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "hdmap_train", f"model={model}", "trainer=cpu", "size=tiny", "weights=random",
            "model.max_epochs=1", "evaluation.plots=false", "trainer.enable_progress_bar=false", f"data.root={tiny_dataset}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert [line for line in output.splitlines() if any(noise in line for noise in NOISE)] == []
    assert "Seed set to 42" in output and " | success | " in output  # the run's own lines are still there


def test_the_config_line_says_when_an_experiment_sets_the_image_size(tmp_path: Path) -> None:
    quickstart = compose_cfg(["experiment=quickstart"], tmp_path)
    assert size_text(quickstart, {"experiment": "quickstart", "size": "paper"}) == "image 32x96 (set by experiment=quickstart)"
    cpu = compose_cfg(["size=cpu", "data=synthetic"], tmp_path)
    assert size_text(cpu, {"size": "cpu"}) == "size=cpu (image 32x96)"
