"""size=paper|cpu|tiny: one switch that sizes any model (conf/size/, conf/size_model/<size>/<model>.yaml)."""

import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hdmap_train.weights import pretrained_source, write_random_weights
from helpers.config import CONF_DIR, compose_cfg
from helpers.runs import run_cli

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
CPU_BACKBONES = {"resnet18", "vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"}
SECTIONS = ("model", "data", "trainer")   # what a size may change


def resolved(overrides: list[str], output_dir: Path) -> dict:
    cfg = compose_cfg(["data.root=/data/x", *overrides], output_dir)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in SECTIONS}


def test_every_model_has_both_sizes() -> None:
    for size in ("cpu", "tiny"):
        assert sorted(p.stem for p in (CONF_DIR / "size_model" / size).glob("*.yaml")) == MODELS
    assert not (CONF_DIR / "size_model" / "paper").exists()   # paper = the model files as they are


@pytest.mark.parametrize("model", ["draem", "patchcore"])
def test_size_paper_is_the_model_file(model: str, tmp_path: Path) -> None:
    assert resolved([f"model={model}", "size=paper"], tmp_path) == resolved([f"model={model}"], tmp_path)


@pytest.mark.parametrize("model", MODELS)
def test_size_cpu_is_cpu_sized(model: str, tmp_path: Path) -> None:
    paper = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")
    cpu = resolved([f"model={model}", "size=cpu"], tmp_path)
    sized = cpu["model"]
    height, width = sized["image_size"]
    assert height * width <= paper["image_size"][0] * paper["image_size"][1]
    assert height * width <= 256 * 256 and sized["batch_size"] <= 16 and sized["max_epochs"] <= 15
    assert cpu["data"]["image_size"] == sized["image_size"] and cpu["trainer"]["max_epochs"] == sized["max_epochs"]
    assert any(sized[key] != paper[key] for key in ("image_size", "batch_size", "max_epochs")), "size=cpu changes nothing"
    if sized["early_stopping_patience"] is not None:
        assert sized["early_stopping_patience"] < sized["max_epochs"] or sized["max_epochs"] == 1
    backbone = sized["pretrained_backbone"]
    if backbone is not None:
        assert backbone in CPU_BACKBONES
        assert pretrained_source(backbone)[0].startswith("timm/")   # the offline weight check can name its file
    # the shapes each family needs
    if model.startswith("draem") or model in ("reverse_distillation", "uninet"):
        assert height % 32 == 0 and width % 32 == 0
    if "vit" in str(backbone):
        assert height % 14 == 0 and width % 14 == 0
    if model in ("efficient_ad", "supersimplenet"):
        assert min(height, width) >= 256
    if model == "ganomaly":
        assert height == width and math.log2(height).is_integer()
    for key in ("cut_w_range", "patch_width_range"):
        if key in sized["module"]:
            assert sized["module"][key][1] < width


def test_size_cpu_draem_is_the_quickstart(tmp_path: Path) -> None:
    quickstart = resolved(["experiment=quickstart"], tmp_path)["model"]
    cpu = resolved(["model=draem", "size=cpu"], tmp_path)["model"]
    assert cpu == quickstart


def test_size_applies_after_a_named_experiment(tmp_path: Path) -> None:
    # The experiment selects the model (override /model), and the size of that model applies on top.
    patchcore = resolved(["experiment=domainA_patchcore_optimized", "size=cpu"], tmp_path)["model"]
    assert patchcore["module"]["backbone"] == "resnet18" and patchcore["batch_size"] == 16
    assert patchcore["module"]["num_neighbors"] == 9
    assert resolved(["experiment=quickstart", "size=tiny"], tmp_path)["model"]["max_epochs"] == 2


def test_mixed_sweep_sizes_each_job_for_its_model(tmp_path: Path) -> None:
    # What `--multirun model=draem,patchcore size=cpu` composes for its two jobs: no key of one model
    # is forced onto the other (the old per-model overrides were refused for the other model).
    draem, patchcore = (resolved([f"model={m}", "size=cpu"], tmp_path / m)["model"] for m in ("draem", "patchcore"))
    assert draem["module"]["reconstructive_width"] == 16 and "backbone" not in draem["module"]
    assert patchcore["module"]["backbone"] == "resnet18" and "reconstructive_width" not in patchcore["module"]


@pytest.mark.slow
def test_multirun_two_models_size_tiny(tmp_path: Path, tiny_dataset: Path, hf_cache: Path) -> None:
    write_random_weights("resnet18", hf_cache)
    sweep = tmp_path / "sweep"
    result = run_cli(["--multirun", "model=draem,patchcore", "size=tiny", "trainer=cpu", "trainer.enable_progress_bar=false",
                      "evaluation.plots=false", f"data.root={tiny_dataset}", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = ["model=draem,size=tiny,trainer=cpu", "model=patchcore,size=tiny,trainer=cpu"]
    assert sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()) == jobs
    draem, patchcore = (OmegaConf.load(sweep / job / ".hydra" / "config.yaml").model for job in jobs)
    assert draem.module.reconstructive_width == 8 and draem.max_epochs == 2
    assert patchcore.module.backbone == "resnet18" and patchcore.module.coreset_sampling_ratio == 0.1
    assert list(pd.read_csv(sweep / "summary.csv")["status"]) == ["success", "success"]
