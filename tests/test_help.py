"""`--help` of `python -m hdmap_train` and of `python -m hdmap_train.prepare`: built from conf/ when printed."""

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from hdmap_train import catalog
from helpers.config import CONF_DIR
from helpers.runs import run_cli

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
MAPPINGS = ["head", "sep11", "sep22", "v1"]


def render_help(config_name: str, overrides: tuple[str, ...] = ()) -> str:
    """The help text as Hydra's app_help renders it (compose, set HydraConfig, fill the template)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        template = cfg.hydra.help.template   # the resolvers run here, with Hydra's config loader up
    return string.Template(template).substitute(FLAGS_HELP="", APP_CONFIG_GROUPS="", HYDRA_CONFIG_GROUPS="", CONFIG="")


@pytest.fixture(scope="module")
def train_help() -> str:
    return render_help("train")


@pytest.fixture(scope="module")
def prepare_help() -> str:
    return render_help("prepare")


def model_lines(text: str) -> dict[str, str]:
    """{model: its first line} of the help's Models section."""
    section = text.split("== Models", 1)[1].split("\n== ", 1)[0]
    return {line.split()[0]: line for line in section.splitlines() if line.startswith("  ") and not line.startswith("   ")}


def test_train_help_teaches(train_help: str) -> None:
    assert train_help.startswith("hdmap_train: train an anomalib anomaly-detection model on one HDMAP domain")
    for text in ("== Everyday use ==", "python -m hdmap_train --multirun model=draem,patchcore domain=A,B,C,D",
                 "hparams_search=draem_optuna", "--cfg job", "python -m hdmap_train.report",
                 "outputs/<date>/<time>_<name>/", "metrics.json", "predictions.csv", "plots/",
                 "multirun/<date>/<time>/", "summary.csv", "summary.md", "summary.png"):
        assert text in train_help, text
    groups = train_help.split("== Config groups", 1)[1].split("\n== ", 1)[0]
    for group in ("model=", "size=", "domain=", "data=", "trainer=", "paths=", "experiment=", "hparams_search=",
                  "hydra/launcher="):
        assert f"\n  {group}" in groups, group
    assert "cpu, paper, tiny" in groups and "gpus" in groups and "slurm" in groups


def test_train_help_has_no_prepare_or_internal_groups(train_help: str) -> None:
    assert "prepare/mapping" not in train_help and "size_model" not in train_help
    assert "hydra/help" not in train_help and "head, sep11" not in train_help


def test_train_help_lists_every_model_from_its_file(train_help: str) -> None:
    lines = model_lines(train_help)
    assert sorted(lines) == MODELS
    entries = {entry.name: entry for entry in catalog.model_entries()}
    assert sorted(entries) == MODELS
    assert catalog.models_text() in train_help   # the same text as `python -m hdmap_train.catalog`
    assert entries["draem"].summary.startswith("DRAEM (Zavrtanik et al., ICCV 2021)")
    assert entries["draem"].weights == "none (from scratch)"
    assert entries["draem"].monitor == "val_loss (min, patience 10)"
    assert entries["patchcore"].weights == "timm wide_resnet50_2" and entries["patchcore"].monitor.startswith("none")
    assert entries["dinomaly"].weights == "timm vit_base_patch14_reg4_dinov2"
    assert "model.module.teacher_weights" in entries["efficient_ad"].weights
    assert "wide_resnet50_2-9ba9bcbe.pth" in entries["uninet"].weights
    for entry in entries.values():
        assert entry.summary.endswith(".") and entry.weights and entry.monitor


def test_model_entry_follows_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(
        "# Mine (Me et al., 2026): a test model,\n# over two lines. More text.\nname: mine\nmonitor: val_auc\n"
        "monitor_mode: max\nearly_stopping_patience: 3\npretrained_backbone: ${.module.backbone}\n"
        "module:\n  backbone: resnet18\n")
    assert catalog.model_entries(tmp_path) == [catalog.ModelEntry(
        "mine", "Mine (Me et al., 2026): a test model, over two lines.", "timm resnet18", "val_auc (max, patience 3)")]


def test_help_follows_the_size_and_model_overrides() -> None:
    # The help composes like a run: overrides are accepted (and wrong ones fail the same way).
    assert "== Models" in render_help("train", ("model=patchcore", "size=cpu"))


def test_prepare_help_shows_prepare_only(prepare_help: str) -> None:
    assert prepare_help.startswith("hdmap_train.prepare: turn the raw KRISS .mat files")
    for key in ("raw_root", "output_root", "name", "n_train", "n_test", "seed", "normalization", "overwrite",
                "files.train"):
        assert f"\n  prepare.{key}=" in prepare_help, key
    assert "training images per domain: a seeded random choice" in prepare_help   # the key's comment
    assert "prepare/mapping=" in prepare_help and "python -m hdmap_train.prepare prepare/mapping=v1" in prepare_help
    for mapping in MAPPINGS:
        assert f"\n  {mapping} " in prepare_help, mapping
    assert "A 1/3, B 1/1, C 3/3, D 3/1" in prepare_help   # head, read from conf/prepare/mapping/head.yaml
    assert "model=" not in prepare_help and "experiment=" not in prepare_help and "== Models" not in prepare_help


def test_help_commands_exit_zero(tmp_path: Path) -> None:
    train = run_cli(["--help"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.startswith("hdmap_train: ") and "prepare/mapping" not in train.stdout
    assert all(f"\n  {model} " in train.stdout for model in MODELS)
    prepare = subprocess.run([sys.executable, "-m", "hdmap_train.prepare", "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, check=False)
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    assert "prepare.n_train=1000" in prepare.stdout and "model=" not in prepare.stdout
    listing = subprocess.run([sys.executable, "-m", "hdmap_train.catalog"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False)
    assert listing.returncode == 0 and listing.stderr == ""
    assert listing.stdout.strip() == catalog.models_text().strip()
    assert not list(tmp_path.iterdir())   # help writes no run directory


@pytest.mark.parametrize("module", ["hdmap_train.report", "hdmap_train.evaluate", "hdmap_train.export",
                                    "hdmap_train.compare", "hdmap_train.catalog", "hdmap_train.weights"])
def test_every_entry_point_help_exits_zero(module: str, tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, check=False)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert f"python -m {module}" in shown.stdout and shown.stderr == ""
    assert not list(tmp_path.iterdir())
