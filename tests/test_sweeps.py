"""Sweeps: parallel local launcher, summary, failure isolation and exit code, skipping finished jobs on a
re-run, resuming from last.ckpt, submitit, Optuna, named experiments and the returned metric."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write

from hdmap_train import train
from hdmap_train.background_pictures import wait_for_pictures
from hdmap_train.errors import HdmapError
from hdmap_train.run_dir import earlier_attempt
from hdmap_train.weights import write_random_weights
from helpers.config import compose_cfg
from helpers.runs import run_cli

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


def sweep_args(sweep_dir: Path, data_root: Path, *overrides: str) -> list[str]:
    return [f"hydra.sweep.dir={sweep_dir}", "size=tiny", "trainer=cpu",
            "trainer.enable_progress_bar=false", f"data.root={data_root}", *overrides]


def output(result) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_parallel_sweep_summary_failure_and_rerun(tmp_path: Path, tiny_dataset: Path, hf_cache: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["--multirun", *sweep_args(sweep, tiny_dataset, "hydra/launcher=gpus",
                                      "model=draem,patchcore", "domain=A,B", "seed=0,1")]
    jobs = [f"domain={d},model={m},seed={s},size=tiny,trainer=cpu" for d in "AB" for m in ("draem", "patchcore") for s in (0, 1)]
    fake_gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}  # two GPU slots, so n_jobs=2; the CPU trainer never opens them

    # First run: PatchCore's backbone is not in the offline cache, so its two jobs fail; DRAEM's succeed.
    first = run_cli(args, cwd=tmp_path, env=fake_gpus)
    assert first.returncode == 1, output(first)
    assert sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()) == sorted(jobs)
    for job in jobs:
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == ("success" if "draem" in job else "failed")
        assert (sweep / job / "train.log").is_file()
    assert (sweep / jobs[0] / "checkpoints" / "best.ckpt").is_file() and list((sweep / jobs[0] / "tensorboard").iterdir())
    logs = [(sweep / job / "train.log").read_text() for job in jobs]
    assert all("Leased GPU slot" in log and "CPU thread(s)" in log for log in logs)  # lease, then the CPU share
    leased = {line.split()[-1] for log in logs for line in log.splitlines() if "Leased GPU slot" in line}
    assert leased <= {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"} and (sweep / ".gpu_locks" / "slot0.lock").is_file()
    table = pd.read_csv(sweep / "summary.csv").set_index("job")
    assert list(table.index) == jobs
    assert list(table["status"]) == ["success", "success", "failed", "failed"] * 2
    assert table.loc[jobs[0], "source_AUROC"] >= 0 and table.loc[jobs[0], "AUROC_B"] >= 0 and table.loc[jobs[4], "AUROC_A"] >= 0
    assert "resnet18" in table.loc[jobs[2], "error"]
    markdown = (sweep / "summary.md").read_text()
    assert "8 jobs: 4 succeeded, 4 failed" in markdown and f"- `{jobs[2]}`: " in markdown
    assert (sweep / "summary.png").stat().st_size > 0
    finished = {job: (sweep / job / "metrics.json").read_bytes() for job in jobs if "draem" in job}

    # Second run into the same sweep dir, weights now cached: DRAEM jobs are skipped, PatchCore jobs run.
    write_random_weights("resnet18", hf_cache)
    second = run_cli(args, cwd=tmp_path, env=fake_gpus)
    assert second.returncode == 0, output(second)
    assert all((sweep / job / "metrics.json").read_bytes() == data for job, data in finished.items())
    assert all("Already done, not trained again" in (sweep / job / "train.log").read_text() for job in finished)
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["status"]) == ["success"] * 8
    assert (summary["parameters_total"] > 0).all() and (summary["inference_images_per_second"] > 0).all()  # efficiency per job
    assert summary["memory_bank_mb"].notna().tolist() == [False, False, True, True] * 2  # PatchCore's coreset only
    assert "## Cost per condition and source domain" in (sweep / "summary.md").read_text()

    # 2 models x 2 sources x 2 seeds: repeats with spread, the paper table, the long table, the transfer matrix.
    markdown = (sweep / "summary.md").read_text()
    assert " ± " in markdown and "(n=2 of 2)" in markdown
    assert "\\pm" in (sweep / "summary.tex").read_text() and "\\textbf{" in (sweep / "summary.tex").read_text()
    stats = pd.read_csv(sweep / "summary_stats.csv")
    auroc = stats[(stats["metric"] == "image_AUROC") & (stats["subgroup"].fillna("") == "")]
    assert set(auroc["n"]) == {2} and set(auroc["target"]) == {"A", "B", "C", "D", "average"}
    assert len(auroc) == 2 * 2 * 5  # conditions x sources x (evaluated domains + their average)
    long = pd.read_csv(sweep / "results_long.csv")
    assert {"model", "source", "target", "seed", "metric", "value"} <= set(long.columns) and set(long["seed"]) == {0, 1}
    assert (sweep / "transfer_matrix.png").stat().st_size > 0


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path: Path, tiny_dataset: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["--multirun", *sweep_args(sweep, tiny_dataset, "hydra/launcher=submitit_local",
                                      "hydra.launcher.timeout_min=10", "model=draem", "domain=A,B")]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert list(pd.read_csv(sweep / "summary.csv")["status"]) == ["success", "success"]
    assert (sweep / ".submitit").is_dir()
    lines = result.stdout.splitlines()  # the launching process's
    finished = [line for line in lines if line.startswith("[sweep] job ") and " finished " in line]
    assert len(finished) == 2 and all("| success | fit " in line for line in finished), output(result)
    assert len([line for line in lines if line.startswith("[sweep] job started: domain=")]) == 2, output(result)


@pytest.mark.slow
def test_optuna_search_maximises_the_returned_metric(tmp_path: Path, tiny_dataset: Path) -> None:
    sweep = tmp_path / "sweep"
    # The README's narrowing example: a command-line range replaces the config's, a plain value fixes a parameter.
    args = sweep_args(sweep, tiny_dataset, "hparams_search=draem_optuna", "model=draem", "hydra.sweeper.n_trials=2",
                      "model.max_epochs=1", "model.module.learning_rate=tag(log, interval(1e-4, 2e-4))",
                      "model.module.reconstructive_width=8", "model.module.discriminative_width=choice(4, 6)")
    result = run_cli(args, cwd=tmp_path)  # no --multirun: the search config sets it
    assert result.returncode == 0, output(result)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    trials = pd.read_csv(sweep / "summary.csv")
    assert len(trials) == 2 and best.best_value == pytest.approx(trials["avg_target_auroc"].max())
    assert set(best.best_params) == {"model.module.learning_rate", "model.module.discriminative_width"}
    assert 1e-4 <= best.best_params["model.module.learning_rate"] <= 2e-4 and best.best_params["model.module.discriminative_width"] in (4, 6)
    configs = [OmegaConf.load(path).model.module for path in sweep.glob("*/.hydra/config.yaml")]
    assert len(configs) == 2 and all(c.reconstructive_width == 8 and 1e-4 <= c.learning_rate <= 2e-4 for c in configs)


def sweep_job_cfg(overrides: list[str], run_dir: Path):
    """A composed config whose HydraConfig says MULTIRUN, as a sweep job sees it."""
    cfg = compose_cfg(overrides, run_dir)
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.slow
def test_killed_job_resumes_from_last_checkpoint_then_is_skipped(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    base = ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={tiny_dataset}", "size=tiny"]
    # A job killed after its first epoch leaves checkpoints/last.ckpt and no metrics.json.
    train.run(compose_cfg([*base, "model.max_epochs=1"], tmp_path), tmp_path)
    (tmp_path / "metrics.json").unlink()

    value = train.main(sweep_job_cfg([*base, "model.max_epochs=2"], tmp_path))
    wait_for_pictures()  # a sweep job of Hydra's basic launcher: a helper process draws its pictures (as SweepSummary waits)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "plots" / "roc.png").is_file()
    assert record["status"] == "success" and record["condition"]["config"]["ckpt_path"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert record["training_info"]["last_trained_epoch"] == 2
    assert len(record["training_info"]["train_loss_per_epoch"]) == 2  # the first attempt's epoch is kept
    assert record["training_info"]["attempts"] == 2
    assert value == pytest.approx(record["avg_target_auroc"])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job must not be trained again")

    monkeypatch.setattr(train, "run", no_training)
    assert train.main(sweep_job_cfg([*base, "model.max_epochs=2", "optimized_metric=source_results.image_AUROC"], tmp_path)) \
        == pytest.approx(record["source_results"]["image_AUROC"])
    assert train.main(sweep_job_cfg([*base, "model.max_epochs=2", "optimized_metric=nosuch"], tmp_path)) is None


def test_changed_config_is_not_skipped(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    base = ["model=draem", f"data.root={tiny_dataset}"]
    record = {"status": "success", "condition": {"config": OmegaConf.to_container(compose_cfg(base, tmp_path), resolve=True)}}
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("")
    assert earlier_attempt(compose_cfg([*base, "ckpt_path=/x.ckpt", "gpus_per_job=2"], tmp_path), tmp_path) == (record, None)
    with pytest.raises(HdmapError, match="holds a finished run of another config .*differs in seed.*not overwritten"):
        earlier_attempt(compose_cfg([*base, "seed=7"], tmp_path), tmp_path)
    record["status"] = "failed"
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    assert earlier_attempt(compose_cfg([*base, "seed=7"], tmp_path), tmp_path) == (None, None)
    assert not (tmp_path / "checkpoints").exists()  # training anew: the other config's checkpoints are set aside
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("")  # unreadable: resumed, so that the resume check names it
    assert earlier_attempt(compose_cfg(base, tmp_path), tmp_path) == (None, str(tmp_path / "checkpoints" / "last.ckpt"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_named_experiments_compose(experiment: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", "data.root=/data/x"], tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    if experiment.startswith("domain"):
        source, model = experiment.removeprefix("domain").split("_")[:2]
        assert cfg.model.name == model and cfg.domain.source == source and cfg.name == experiment


def test_seed_conditions(tmp_path: Path) -> None:
    draem = compose_cfg(["experiment=domainA_draem_baseline"], tmp_path)
    assert draem.trainer.max_epochs == 5 and draem.data.train_batch_size == 16 and draem.model.module.learning_rate == 1e-4
    patchcore = compose_cfg(["experiment=domainA_patchcore_optimized"], tmp_path).model
    assert patchcore.module.coreset_sampling_ratio == 0.1 and patchcore.module.num_neighbors == 9 and patchcore.batch_size == 32
    dinomaly = compose_cfg(["experiment=domainA_dinomaly_baseline"], tmp_path).model
    assert dinomaly.module.encoder_name == "vit_base_patch14_reg4_dinov2" and dinomaly.batch_size == 8


def test_slurm_preset_asks_one_gpu_per_job(tmp_path: Path) -> None:
    launcher = compose_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1 and launcher.partition == "gpu"
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0 and launcher.max_num_timeout > 0


def test_job_folder_names_leave_out_paths(tmp_path: Path) -> None:
    # More on job folder names (long overrides, unsafe values, a real sweep) in tests/test_job_names.py.
    overrides = ["model=draem", "domain=A", "data.root=/data/x/y", "paths.cache_dir=/c", "ckpt_path=/k.ckpt",
                 "gpus_per_job=2", "evaluation.plots=false", "trainer.enable_progress_bar=false", "data.num_workers=4"]
    assert compose_cfg(overrides, tmp_path).hydra.sweep.subdir == "domain=A,model=draem"
