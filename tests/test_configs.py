"""Every model x domain composes, resolves, and builds a consistent run configuration."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers.config import compose_cfg

MODELS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
DOMAINS = ["A", "B", "C", "D"]


def test_model_group_has_the_foundation_models() -> None:
    assert {"draem", "patchcore", "dinomaly"} <= set(MODELS)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("model", MODELS)
def test_compose_every_model_and_domain(model: str, domain: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"model={model}", f"domain={domain}", "data.root=/data/x"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["model"]["name"] == model
    assert resolved["model"]["module"]["_target_"]
    assert resolved["domain"]["source"] == domain
    assert sorted(resolved["domain"]["targets"]) == sorted(set(DOMAINS) - {domain})
    assert resolved["data"]["image_size"] == resolved["model"]["image_size"]
    assert resolved["trainer"]["max_epochs"] == resolved["model"]["max_epochs"]
    assert resolved["name"] == f"{model}_{domain}"


def test_model_defaults_follow_the_seed_settings(tmp_path: Path) -> None:
    patchcore = compose_cfg(["model=patchcore"], tmp_path).model
    assert patchcore.module.backbone == "wide_resnet50_2"
    assert list(patchcore.module.layers) == ["layer2", "layer3"]
    assert patchcore.module.coreset_sampling_ratio == 0.01 and patchcore.module.num_neighbors == 9
    assert patchcore.max_epochs == 1 and patchcore.monitor is None
    dinomaly = compose_cfg(["model=dinomaly"], tmp_path).model
    assert dinomaly.module.encoder_name == "vit_base_patch14_reg4_dinov2"
    assert list(dinomaly.module.target_layers) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert dinomaly.module.bottleneck_dropout == 0.2 and dinomaly.module.decoder_depth == 8
    assert dinomaly.batch_size == 8 and dinomaly.early_stopping_patience == 10
    draem = compose_cfg(["model=draem"], tmp_path).model
    assert draem.module.reconstructive_width == 128 and draem.module.discriminative_width == 64
    assert draem.monitor == "val_loss"


def test_synthetic_data_and_quickstart_compose(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=quickstart"], tmp_path)
    assert cfg.data.synthetic.n_train > 0 and cfg.data.root is None
    assert cfg.trainer.accelerator == "cpu"
    assert list(cfg.data.image_size) == [32, 96]


def test_hdmap_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDMAP_ROOT", "/somewhere/HDMAP")
    assert compose_cfg([], tmp_path).data.root == "/somewhere/HDMAP"


def test_run_folder_is_named_by_the_condition_name(tmp_path: Path) -> None:
    run_dir = compose_cfg(["experiment=quickstart"], tmp_path).hydra.run.dir
    assert run_dir.endswith("_quickstart_draem_A")
    assert compose_cfg(["model=patchcore", "domain=B"], tmp_path).hydra.run.dir.endswith("_patchcore_B")
