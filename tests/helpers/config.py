"""Composed configs and CPU-sized model settings shared by the tests."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hdmap_train.data.synthetic import SyntheticSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
TINY_SPEC = SyntheticSpec(n_train=40, n_test=12, seed=0)

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


def checked_datamodule(root, **options):
    """A MultiDomainHDMAPDataModule built in Python as train does: its options checked first (hdmap_train.checks)."""
    from hdmap_train.checks import check_data
    from hdmap_train.data.datamodule import MultiDomainHDMAPDataModule

    check_data(root=root, **options)
    return MultiDomainHDMAPDataModule(root, **options)
