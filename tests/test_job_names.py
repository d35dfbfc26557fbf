"""Sweep job folder names (hdmap_train.job_names): short and readable, unique, stable, never nested; the
result-neutral keys; the ${hdmap_job_dir:} resolver in a composed config and in a real sweep."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser

from hdmap_train.job_names import (
    JOB_NAME_EXCLUDED_KEYS,
    MAX_NAME_LENGTH,
    comparable_config,
    covered,
    drop_keys,
    job_dir_name,
    override_key,
)
from helpers.config import compose_cfg
from helpers.runs import run_cli

# The overrides of one job of the sweep that crashed with "OSError: File name too long".
LONG = ["experiment=quickstart", "evaluation.plots=False", "model.max_epochs=1", "model.module.reconstructive_width=8",
        "model.module.discriminative_width=4", "data.synthetic.n_train=40", "data.synthetic.n_test=12", "domain=A"]
NEUTRAL = ["data.root=/data/HDMAP/1000_tiff_minmax", "paths.cache_dir=/scratch/cache", "data.num_workers=4",
           "data.cache_limit_mb=512", "trainer.enable_progress_bar=false", "evaluation.plots=true", "ckpt_path=/x/last.ckpt",
           "gpus_per_job=2", "optimized_metric=source_results.image_AUROC", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2"]


def hydra_dirname(lines: list[str], exclude: list[str]) -> str:
    """What Hydra itself writes into hydra.job.override_dirname for these override lines."""
    return get_overrides_dirname(OverridesParser.create().parse_overrides(lines), exclude, item_sep=",", kv_sep="=")


@pytest.mark.parametrize("lines", [
    ["model=draem", "domain=A"],
    ["domain=B", "model=patchcore", "data.image_size=[32,96]", "+trainer.limit_train_batches=4"],
    ["model.module.learning_rate=0.000123", "model@x=draem", "~model.monitor"],
    [],
])
def test_short_name_is_hydras_override_dirname(lines: list[str]) -> None:
    assert job_dir_name(lines) == hydra_dirname(lines, [])  # existing sweep directories keep their folder names
    assert [override_key(line) for line in lines] == [o.key_or_group for o in OverridesParser.create().parse_overrides(lines)]


def test_long_name_is_short_readable_stable_and_unique() -> None:
    name = job_dir_name(LONG)
    assert len(hydra_dirname(LONG, [])) > MAX_NAME_LENGTH and len(name) <= MAX_NAME_LENGTH
    assert name.startswith("domain=A,experiment=quickstart,max_epochs=1,")  # groups first, then the last key parts
    assert job_dir_name(list(reversed(LONG))) == name == job_dir_name(LONG)  # order of the overrides does not matter
    # Jobs that differ anywhere, also in an item cut from the readable part, get different folders.
    names = {name, job_dir_name([*LONG[:-1], "domain=B"]), job_dir_name([*LONG[:3], "model.module.reconstructive_width=16", *LONG[4:]]),
             job_dir_name([*LONG, "model.module.learning_rate=0.01"]), job_dir_name([*LONG, "data.learning_rate=0.01"])}
    assert len(names) == 5 and all(len(n) <= MAX_NAME_LENGTH for n in names)
    assert len(job_dir_name([f"model.module.{'x' * 300}=1"])) <= MAX_NAME_LENGTH


def test_name_pinned_across_releases() -> None:
    # A re-run into an old sweep dir finds its jobs only if the name function never changes: do not update
    # this value unless old sweep directories may be left behind.
    assert job_dir_name(LONG) == "domain=A,experiment=quickstart,max_epochs=1,n_test=12,n_train=40-0ab09e14c7"


@pytest.mark.parametrize("value", ["hf_hub:timm/resnet18", "../../etc", "a b", "'quoted'", "ü", "x\\y", "-rf"])
def test_unsafe_values_never_nest_or_collide(value: str) -> None:
    name = job_dir_name([f"model.module.backbone={value}", "domain=A"])
    assert "/" not in name and "\\" not in name and " " not in name and name not in ("", ".", "..")
    assert not name.startswith((".", "-")) and name.isascii() and len(name) <= MAX_NAME_LENGTH
    twin = value.replace("/", "_").replace(" ", "_")
    if twin != value:  # 'a/b' and 'a_b' are different jobs
        assert name != job_dir_name([f"model.module.backbone={twin}", "domain=A"])


def test_result_neutral_overrides_are_left_out() -> None:
    assert job_dir_name(["model=draem", "domain=A", *NEUTRAL]) == "domain=A,model=draem"
    assert job_dir_name([*LONG, *NEUTRAL]) == job_dir_name(LONG) == job_dir_name([o for o in LONG if "plots" not in o])
    assert job_dir_name(NEUTRAL) == ""
    assert covered("hydra/launcher", JOB_NAME_EXCLUDED_KEYS) and covered("paths.data_dir", JOB_NAME_EXCLUDED_KEYS)
    assert not covered("data.root_size", JOB_NAME_EXCLUDED_KEYS) and not covered("model.data.root", JOB_NAME_EXCLUDED_KEYS)


def test_comparable_config_drops_only_result_neutral_keys() -> None:
    config = {"seed": 1, "ckpt_path": "/x", "optimized_metric": "m", "gpus_per_job": 1, "hydra": {}, "paths": {"root_dir": "/r"},
              "data": {"root": "/d", "num_workers": 4, "cache_limit_mb": 9, "image_size": [32, 96]},
              "evaluation": {"plots": False, "threshold_quantile": 0.99}, "trainer": {"enable_progress_bar": True, "max_epochs": 2}}
    assert comparable_config(config) == {"seed": 1, "data": {"root": "/d", "image_size": [32, 96]},
                                         "evaluation": {"threshold_quantile": 0.99}, "trainer": {"max_epochs": 2}}
    assert config["data"]["num_workers"] == 4  # the argument is left as it was
    assert drop_keys({"a": 1, "b": [1]}, ["a.x", "c", "b.y"]) == {"a": 1, "b": [1]}


def test_hydra_exclude_keys_agree_with_job_names(tmp_path: Path) -> None:
    excluded = list(compose_cfg([], tmp_path).hydra.job.config.override_dirname.exclude_keys)
    assert all(covered(key, JOB_NAME_EXCLUDED_KEYS) for key in excluded)
    assert {"data.root", "paths.cache_dir", "ckpt_path", "gpus_per_job", "evaluation.plots"} <= set(excluded)
    leaves = [key for key in JOB_NAME_EXCLUDED_KEYS if key not in ("paths", "hydra")]
    assert set(leaves) <= set(excluded)


def test_composed_sweep_subdir_uses_the_resolver(tmp_path: Path) -> None:
    short = compose_cfg(["model=patchcore", "domain=B", "data.root=/data/x", "evaluation.plots=false"], tmp_path)
    assert short.hydra.sweep.subdir == short.hydra.job.override_dirname == "domain=B,model=patchcore"
    composed = compose_cfg([*LONG, "data.root=/data/x"], tmp_path)
    assert list(composed.hydra.overrides.task) == [*LONG, "data.root=/data/x"]  # what a sweep job's config holds
    assert composed.hydra.sweep.subdir == job_dir_name(LONG) and len(composed.hydra.sweep.subdir) <= MAX_NAME_LENGTH


@pytest.mark.slow
def test_real_sweep_long_overrides_short_stable_folders(tmp_path: Path, tiny_dataset: Path) -> None:
    """The crashed sweep's overrides (plus a '/' value), in loky workers and then in the launching process.

    model.max_epochs=0 is refused before training, so every job fails at once and writes its metrics.json.
    """
    sweep = tmp_path / "sweep"
    overrides = [*(o for o in LONG if not o.startswith(("domain", "model.max_epochs"))), "model.max_epochs=0",
                 "domain=A,B", "name=run/with/slashes", f"data.root={tiny_dataset}", f"hydra.sweep.dir={sweep}"]
    first = run_cli(["--multirun", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", *overrides], cwd=tmp_path)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2 and all(len(job) <= MAX_NAME_LENGTH for job in jobs), jobs
    assert all(json.loads((sweep / job / "metrics.json").read_text())["status"] == "failed" for job in jobs)
    assert sorted(p.parent for p in sweep.rglob("metrics.json")) == [sweep / job for job in jobs]  # nothing nested
    table = pd.read_csv(sweep / "summary.csv", dtype=str)
    assert list(table["job"]) == jobs and list(table["override.domain"]) == ["A", "B"]
    assert set(table["override.name"]) == {"run/with/slashes"} and "override.evaluation.plots" not in table

    second = run_cli(["--multirun", *overrides], cwd=tmp_path)  # a re-run finds the same folders
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == jobs


def test_a_key_added_later_at_its_neutral_default_is_no_config_difference() -> None:
    from hdmap_train.job_names import config_differences

    old = {"data": {"root": "/d"}, "model": {"name": "draem"}}
    new = {"data": {"root": "/d", "layout": None}, "model": {"name": "draem", "random_weights": False}}
    assert config_differences(old, new) == [] and config_differences(new, old) == []
    assert config_differences(old, {**new, "model": {"name": "draem", "random_weights": True}}) == ["model.random_weights"]
    assert config_differences(old, {**old, "seed": 0}) == ["seed"]  # 0 is a value, not an absent default
    assert config_differences(new, {**new, "data": {"root": "/e", "layout": None}}) == ["data.root"]
    before = {"evaluation": {"threshold_quantile": 0.99}}  # a record from before the threshold rules and protocols
    rules = {"evaluation": {"threshold_quantile": 0.99, "threshold": "quantile", "threshold_k": 3.0, "protocol": "standard"}}
    assert config_differences(before, rules) == [] and config_differences(rules, before) == []
    gamma = {"evaluation": {"threshold_quantile": 0.99, "threshold": "gamma"}}
    assert config_differences(before, gamma) == ["evaluation.threshold"]
