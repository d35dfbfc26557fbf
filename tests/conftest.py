"""Shared fixtures: composed configs, a tiny synthetic dataset, the CLI in a subprocess."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hdmap_train.data.synthetic import SyntheticSpec, ensure_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
TINY_SPEC = SyntheticSpec(n_train=40, n_test=12, seed=0)

# CPU-sized settings for each model (the defaults stay paper-sized for GPU users).
TINY_MODEL = {
    "draem": [
        "model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=2",
        "model.module.reconstructive_width=8", "model.module.discriminative_width=4",
    ],
    "patchcore": [
        "model.image_size=[32,96]", "model.batch_size=8", "model.module.backbone=resnet18",
        "model.module.coreset_sampling_ratio=0.1",
    ],
    "dinomaly": [
        "model.image_size=[28,84]", "model.batch_size=8", "model.max_epochs=1",
        "model.module.encoder_name=vit_small_patch14_reg4_dinov2",
    ],
    "draem_cutpaste": [
        "model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=2",
        "model.module.reconstructive_width=4", "model.module.discriminative_width=4",
        "model.module.cut_w_range=[2,95]", "model.module.cut_h_range=[1,2]",
    ],
    "draem_sevnet": [
        "model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=2",
        "model.module.reconstructive_width=4", "model.module.discriminative_width=4",
        "model.module.severity_head_hidden_dim=8", "model.module.patch_width_range=[10,60]",
    ],
    "padim": [
        "model.image_size=[28,84]", "model.batch_size=8", "model.module.n_features=20",
    ],
    "fastflow": [
        "model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=1",
        "model.module.backbone=resnet18", "model.module.flow_steps=2",
    ],
    "reverse_distillation": ["model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=1"],
    "efficient_ad": [
        "model.image_size=[256,256]", "model.max_epochs=1", "data.eval_batch_size=12", "+trainer.limit_train_batches=4",
    ],
    "cflow": [
        "model.image_size=[28,84]", "model.batch_size=8", "model.max_epochs=1",
        "model.module.coupling_blocks=2", "model.module.fiber_batch_size=32",
    ],
    "uninet": ["model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=1"],
    "ganomaly": [
        "model.image_size=[32,32]", "model.batch_size=8", "model.max_epochs=1",
        "model.module.n_features=8", "model.module.latent_vec_size=16", "model.module.extra_layers=0",
    ],
    "supersimplenet": [
        "model.image_size=[256,256]", "model.batch_size=4", "model.max_epochs=1", "model.module.backbone=resnet18",
    ],
    "stfpm": ["model.image_size=[32,96]", "model.batch_size=8", "model.max_epochs=1"],
}
PRETRAINED = {
    "patchcore": "resnet18",
    "dinomaly": "vit_small_patch14_reg4_dinov2",
    "padim": "vit_small_patch14_dinov2",
    "fastflow": "resnet18",
    "reverse_distillation": "resnet18",
    "cflow": "vit_small_patch14_dinov2",
    "supersimplenet": "resnet18",
    "stfpm": "resnet18",
}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic HDMAP dataset (40 train, 12+12 test per domain), generated once per session."""
    return ensure_dataset(TINY_SPEC, tmp_path_factory.mktemp("data"))


def compose_cfg(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as `python -m hdmap_train` would, with the run directory at output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m hdmap_train ARGS` in cwd and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "hdmap_train", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline hub cache; any network connection fails the test."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read these at import time and timm passes no cache_dir: patch the constants too.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache
