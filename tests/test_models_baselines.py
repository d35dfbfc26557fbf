"""anomalib baselines: one tiny offline CPU run per config, validation losses, offline-only weights."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork
from PIL import Image

from hdmap_train.errors import HdmapError
from hdmap_train.models import build_model
from hdmap_train.models.baselines import training_branch
from hdmap_train.train import run
from hdmap_train.weights import torchvision_weights_file, write_random_weights
from helpers.config import PRETRAINED, compose_cfg
from helpers.runs import assert_complete_record, tiny_run_cfg

LOSS_MODELS = ["fastflow", "reverse_distillation", "cflow", "ganomaly", "supersimplenet", "stfpm"]


def check_record(run_dir: Path, model: str) -> None:
    """metrics.json says success; a loss-trained model logged one finite val_loss for its one epoch."""
    record = assert_complete_record(run_dir, model)
    info = record["training_info"]
    if info["monitor"] is None:
        assert info["val_loss_per_epoch"] == []
    else:
        assert info["monitor"] == "val_loss" and len(info["val_loss_per_epoch"]) == 1
        assert math.isfinite(info["val_loss_per_epoch"][0])


def efficient_ad_assets(folder: Path) -> list[str]:
    """A random-valued teacher file and a tiny ImageFolder of penalty images; the overrides that use them."""
    teacher = folder / "pretrained_teacher_small.pth"
    torch.save(SmallPatchDescriptionNetwork(out_channels=384, padding=True).state_dict(), teacher)
    images = folder / "imagenet" / "class0"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return [f"model.module.teacher_weights={teacher}", f"model.module.imagenet_dir={images.parent}"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["padim", *LOSS_MODELS])
def test_timm_baselines_end_to_end_offline(model: str, tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    if model in PRETRAINED:
        write_random_weights(PRETRAINED[model], hf_cache)
    run(tiny_run_cfg(model, tiny_dataset, tmp_path / "run"), tmp_path / "run")
    check_record(tmp_path / "run", model)


@pytest.mark.slow
def test_efficient_ad_end_to_end_with_local_teacher(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    overrides = efficient_ad_assets(tmp_path)
    run(tiny_run_cfg("efficient_ad", tiny_dataset, tmp_path / "run", *overrides), tmp_path / "run")
    check_record(tmp_path / "run", "efficient_ad")


@pytest.mark.slow
def test_uninet_end_to_end_with_local_torchvision_weights(
    tiny_dataset: Path, tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision_weights_file("wide_resnet50_2")
    weights.parent.mkdir(parents=True)
    torch.save(torchvision.models.wide_resnet50_2().state_dict(), weights)
    run(tiny_run_cfg("uninet", tiny_dataset, tmp_path / "run"), tmp_path / "run")
    check_record(tmp_path / "run", "uninet")


def test_efficient_ad_never_downloads_its_teacher(tmp_path: Path) -> None:
    cfg = compose_cfg(["model=efficient_ad", f"model.module.teacher_weights={tmp_path}/missing.pth"], tmp_path)
    with pytest.raises(HdmapError, match=r"missing\.pth is not a file.*efficientad_pretrained_weights\.zip"):
        build_model(cfg.model)
    overrides = efficient_ad_assets(tmp_path)
    cfg = compose_cfg(["model=efficient_ad", overrides[0], f"model.module.imagenet_dir={tmp_path}/none"], tmp_path)
    with pytest.raises(HdmapError, match="imagenet_dir=.*none is not a folder"):
        build_model(cfg.model)


def test_uninet_never_downloads_torchvision_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(HdmapError, match=r"wide_resnet50_2-\w+\.pth.*TORCH_HOME.*download\.pytorch\.org"):
        build_model(compose_cfg(["model=uninet"], tmp_path).model)


@pytest.mark.parametrize(
    ("model", "size", "message"),
    [("ganomaly", "[32,96]", "square power-of-two"), ("supersimplenet", "[128,128]", "at least 256x256"),
     ("efficient_ad", "[128,128]", "at least 256x256")],
)
def test_image_size_limits_fail_clearly(model: str, size: str, message: str, tmp_path: Path, hf_cache: Path) -> None:
    write_random_weights("resnet18", hf_cache)  # supersimplenet's backbone must be found before the size check
    overrides = [f"model={model}", f"model.image_size={size}"]
    if model == "supersimplenet":
        overrides.append("model.module.backbone=resnet18")
    with pytest.raises(HdmapError, match=message):
        build_model(compose_cfg(overrides, tmp_path).model)


def test_training_branch_flips_only_the_top_level_flag() -> None:
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.Dropout()).eval()
    with training_branch(model):
        assert model.training and not model[0].training and not model[1].training
    assert not model.training


@pytest.mark.parametrize(
    ("model", "monitor"),
    [("padim", None), ("fastflow", "val_loss"), ("reverse_distillation", "val_loss"), ("efficient_ad", "val_loss"),
     ("cflow", "val_loss"), ("uninet", "val_loss"), ("ganomaly", "val_loss"), ("supersimplenet", "val_loss"),
     ("stfpm", "val_loss"), ("draem_cutpaste", "val_loss"), ("draem_sevnet", "val_loss")],
)
def test_each_config_declares_its_monitor(model: str, monitor: str | None, tmp_path: Path) -> None:
    cfg = compose_cfg([f"model={model}"], tmp_path).model
    assert cfg.monitor == monitor
    assert (cfg.early_stopping_patience is None) == (monitor is None)


def test_seed_defaults(tmp_path: Path) -> None:
    padim = compose_cfg(["model=padim"], tmp_path).model
    assert padim.module.backbone == "vit_small_patch14_dinov2" and padim.module.n_features == 100
    assert list(padim.module.layers) == ["blocks.2", "blocks.5", "blocks.8"]
    fastflow = compose_cfg(["model=fastflow"], tmp_path).model
    assert fastflow.module.backbone == "wide_resnet50_2" and fastflow.module.flow_steps == 12
    cflow = compose_cfg(["model=cflow"], tmp_path).model
    assert cflow.module.coupling_blocks == 4 and list(cflow.image_size) == [518, 518]
    ganomaly = compose_cfg(["model=ganomaly"], tmp_path).model
    assert (ganomaly.module.wadv, ganomaly.module.wcon, ganomaly.module.wenc) == (1, 100, 5)
    efficient_ad = compose_cfg(["model=efficient_ad"], tmp_path).model
    assert efficient_ad.batch_size == 1 and efficient_ad.module.model_size == "small"
    cutpaste = compose_cfg(["model=draem_cutpaste"], tmp_path).model
    assert cutpaste.module.focal_alpha == 0.9 and list(cutpaste.image_size) == [128, 128]


@pytest.mark.slow
def test_ganomaly_records_its_training_loss(tiny_dataset: Path, tmp_path: Path, hf_cache: Path) -> None:
    run(tiny_run_cfg("ganomaly", tiny_dataset, tmp_path), tmp_path)
    info = assert_complete_record(tmp_path, "ganomaly")["training_info"]
    assert len(info["train_loss_per_epoch"]) == info["last_trained_epoch"] >= 1
    assert all(math.isfinite(loss) and loss > 0 for loss in info["train_loss_per_epoch"])
