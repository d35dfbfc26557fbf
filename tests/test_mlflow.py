"""logger=mlflow: a run is one MLflow run (config params, losses, metric table, pictures and metrics.json, status);
a sweep is one parent run with a child run per job, the summary files as the parent's artifacts."""

import json
from pathlib import Path

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from hdmap_train.errors import HdmapError  # noqa: E402
from hdmap_train.mlflow_log import PARENT_TAG, end_sweep, flat_params, require_mlflow, start_sweep  # noqa: E402
from hdmap_train.train import run  # noqa: E402
from helpers.config import compose_cfg  # noqa: E402
from helpers.runs import run_cli, tiny_run_cfg  # noqa: E402

TINY = ["size=tiny", "trainer=cpu", "trainer.enable_progress_bar=false", "model=draem", "model.max_epochs=1"]


def only_run(store: Path):
    client = MlflowClient(f"file:{store}")
    return client, client.search_runs([client.get_experiment_by_name("hdmap_train").experiment_id])


@pytest.mark.slow
def test_run_is_one_mlflow_run_with_config_metrics_and_artifacts(tmp_path: Path, tiny_dataset: Path) -> None:
    run(tiny_run_cfg("draem", tiny_dataset, tmp_path, "logger=mlflow", "model.max_epochs=2"), tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    client, (found,) = only_run(tmp_path / "mlruns")
    assert found.info.status == "FINISHED" and found.data.tags["status"] == "success"
    params, metrics = found.data.params, found.data.metrics
    assert params["model.name"] == "draem" and params["domain.source"] == "A" and params["seed"] == "42"
    assert metrics["test/domain_A/image_AUROC"] == pytest.approx(record["source_results"]["image_AUROC"])
    assert metrics["test/domain_B/image_F1Score"] == pytest.approx(record["target_results"]["domain_B"]["image_F1Score"])
    assert metrics["test/avg_target_auroc"] == pytest.approx(record["avg_target_auroc"])
    for loss in ("train_loss_epoch", "val_loss"):  # one per epoch, logged by Lightning
        assert len(client.get_metric_history(found.info.run_id, loss)) == 2, sorted(metrics)
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    pictures = {a.path for a in client.list_artifacts(found.info.run_id, "plots")}
    assert "metrics.json" in artifacts and pictures == {f"plots/{p.name}" for p in (tmp_path / "plots").glob("*.png")} != set()


def test_run_failing_before_training_is_a_failed_mlflow_run(tmp_path: Path, tiny_dataset: Path) -> None:
    with pytest.raises(HdmapError, match="evaluation.threshold=bogus"):
        run(tiny_run_cfg("draem", tiny_dataset, tmp_path, "logger=mlflow", "evaluation.threshold=bogus"), tmp_path)
    client, (found,) = only_run(tmp_path / "mlruns")
    assert found.info.status == "FAILED" and found.data.tags["status"] == "failed"
    assert found.data.params["evaluation.threshold"] == "bogus" and found.data.tags["condition"] == "draem_A"
    assert "metrics.json" in {a.path for a in client.list_artifacts(found.info.run_id)}


def test_missing_mlflow_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_cfg(["logger=mlflow"], tmp_path)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "mlflow" else object())
    with pytest.raises(HdmapError, match=r"^logger=mlflow needs the mlflow package, .*pip install -e '\.\[mlflow\]'$"):
        require_mlflow(cfg)
    require_mlflow(compose_cfg(["logger=csv"], tmp_path))  # no MLflow asked for: nothing to install


def test_config_params_are_dot_keys_without_hydra() -> None:
    params = flat_params({"model": {"name": "draem", "module": {"lr": 0.1}}, "domain": {"targets": ["B", "C"]}, "hydra": {"x": 1}})
    assert params == {"model.name": "draem", "model.module.lr": "0.1", "domain.targets": "['B', 'C']"}


@pytest.mark.slow
def test_sweep_is_one_parent_run_with_a_child_per_job(tmp_path: Path, tiny_dataset: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(["--multirun", f"hydra.sweep.dir={sweep}", *TINY, f"data.root={tiny_dataset}", "logger=mlflow",
                      "evaluation.threshold=quantile,bogus"], cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # the bogus job failed
    mlflow.set_tracking_uri(f"file:{sweep / 'mlruns'}")
    runs = mlflow.search_runs(experiment_names=["hdmap_train"]).set_index("tags.mlflow.runName")
    (parent,) = runs.index[runs[f"tags.{PARENT_TAG}"].isna()]
    assert parent == sweep.name and runs.loc[parent, "status"] == "FAILED"  # a job failed, so did the sweep
    children = runs.drop(parent)
    assert (children[f"tags.{PARENT_TAG}"] == runs.loc[parent, "run_id"]).all()
    assert sorted(children.index) == sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())  # named by job folder
    statuses = sorted(("bogus" in Path(row["tags.run_dir"]).name, row["status"], row["tags.status"]) for _, row in children.iterrows())
    assert statuses == [(False, "FINISHED", "success"), (True, "FAILED", "failed")]
    assert set(children["tags.source"]) == {"domain_A"} and set(children["tags.seed"]) == {"42"}
    done = children[children["status"] == "FINISHED"].iloc[0]
    record = json.loads((Path(done["tags.run_dir"]) / "metrics.json").read_text())
    assert done["tags.condition"].startswith("draem") and done["params.evaluation.threshold"] == "quantile"
    assert done["metrics.test/domain_A/image_AUROC"] == pytest.approx(record["source_results"]["image_AUROC"])
    client = MlflowClient(f"file:{sweep / 'mlruns'}")  # pictures drawn by the helper process, then logged with the record
    assert {a.path for a in client.list_artifacts(done["run_id"], "plots")} == {f"plots/{p.name}" for p in (Path(done["tags.run_dir"]) / "plots").glob("*.png")} != set()
    artifacts = {a.path for a in client.list_artifacts(runs.loc[parent, "run_id"])}
    assert {"summary.md", "summary.csv", "summary.png"} <= artifacts


def test_a_child_left_running_by_a_killed_job_is_failed_at_the_sweep_end(tmp_path: Path) -> None:
    entry = {"_target_": "lightning.pytorch.loggers.MLFlowLogger", "experiment_name": "hdmap_train",
             "tracking_uri": f"file:{tmp_path / 'mlruns'}"}
    config = OmegaConf.create({"logger": {"mlflow": entry}, "hydra": {"sweep": {"dir": str(tmp_path)}, "overrides": {"task": []}}})
    start_sweep(config)
    client = MlflowClient(entry["tracking_uri"])
    parent = (tmp_path / ".mlflow_parent_run").read_text().strip()
    experiment = client.get_experiment_by_name("hdmap_train").experiment_id
    killed = client.create_run(experiment, tags={PARENT_TAG: parent, "run_dir": str(tmp_path / "seed=1"), "status": "running"})
    done = client.create_run(experiment, tags={PARENT_TAG: parent, "run_dir": str(tmp_path / "seed=0")})
    client.set_terminated(done.info.run_id, "FINISHED")
    table = pd.DataFrame({"job": ["seed=0", "seed=1"], "condition": ["draem", "draem"], "status": ["success", "failed"]})
    end_sweep(config, table, succeeded=False)
    assert client.get_run(killed.info.run_id).info.status == "FAILED"
    assert client.get_run(killed.info.run_id).data.tags["status"] == "failed"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"  # a closed run is left as it was
    assert client.get_run(parent).info.status == "FAILED"
