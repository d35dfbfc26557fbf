"""`python -m hdmap_train.evaluate`: a run's checkpoint evaluated again reproduces it exactly, into a new directory,
without changing the run; what from_predictions=true recomputes without the model; usage errors."""

import hashlib
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hdmap_train.dcase import dcase_metrics
from hdmap_train.engine_patches import RunCheckpoint
from hdmap_train.evaluate import main
from hdmap_train.metrics import image_metrics
from hdmap_train.train import run
from helpers.runs import DOMAINS, tiny_run_cfg
from helpers.sweeps import config


def file_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of the run, its evaluations/ left out."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and "evaluations" not in p.relative_to(run_dir).parts}


def results(record: dict) -> dict[str, dict]:
    return {record["source_domain"]: record["source_results"], **record["target_results"]}


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run(tiny_run_cfg("draem", tiny_dataset, run_dir, "evaluation.plots=false"), run_dir)
    return run_dir


@pytest.mark.slow
def test_dcase_protocol_from_predictions(tmp_path: Path) -> None:
    fake_run(tmp_path / "run")
    out = tmp_path / "eval"
    assert main([f"run={tmp_path / 'run'}", f"out={out}", "from_predictions=true", "evaluation.protocol=dcase"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    expected = dcase_metrics(predictions, record["validation"]["threshold"])
    assert record["official_score"] == pytest.approx(expected["official_score"]) == pytest.approx(record["dcase"]["official_score"])
    assert set(record["dcase"]["domains"]) == set(predictions["domain"]) and 0 <= record["dcase"]["pauc"] <= 1


def test_another_threshold_rule_from_predictions(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path / "run")
    out = tmp_path / "eval"
    assert main([f"run={tmp_path / 'run'}", f"out={out}", "from_predictions=true", "evaluation.threshold=mean_std",
                 "evaluation.threshold_k=2"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    normal = pd.read_csv(out / "validation_scores.csv").query("label == 0")["anomaly_score"].to_numpy(dtype=np.float32)
    assert record["validation"]["threshold"] == pytest.approx(normal.mean() + 2 * normal.std(ddof=1), rel=1e-5)
    assert record["validation"]["threshold_method"] == "mean_std" and "(mean_std)" in capsys.readouterr().out


def test_a_best_checkpoint_not_reloaded_predicts_what_it_does_reloaded(tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    """After one epoch the best checkpoint is the model in memory: the run predicts without reloading it, and an
    evaluation that loads it gives the same scores, bit for bit."""
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="hdmap_train.train"):
        run(tiny_run_cfg("draem", tiny_dataset, run_dir, "model.max_epochs=1", "evaluation.plots=false"), run_dir)
    assert "not reloaded" in caplog.text
    assert main([f"run={run_dir}"]) == 0
    [out] = list((run_dir / "evaluations").iterdir())
    assert pd.read_csv(out / "predictions.csv").equals(pd.read_csv(run_dir / "predictions.csv"))
    assert (out / "validation_scores.csv").read_bytes() == (run_dir / "validation_scores.csv").read_bytes()


def test_the_best_checkpoint_is_reloaded_once_training_went_on(tmp_path: Path) -> None:
    def trainer(steps: int, batches: int, val_batches: int) -> SimpleNamespace:
        loop = SimpleNamespace(batch_progress=SimpleNamespace(total=SimpleNamespace(completed=batches)),
                               val_loop=SimpleNamespace(batch_progress=SimpleNamespace(total=SimpleNamespace(completed=val_batches))))
        return SimpleNamespace(global_step=steps, fit_loop=SimpleNamespace(epoch_loop=loop))

    checkpoint = RunCheckpoint(dirpath=tmp_path)
    assert not checkpoint.holds_best(trainer(0, 0, 0))  # never saved by this process (e.g. a resumed run)
    checkpoint.best_saved_at = (3, 3, 1)
    assert checkpoint.holds_best(trainer(3, 3, 1))
    assert not checkpoint.holds_best(trainer(6, 6, 2))  # later epochs trained on
    assert not checkpoint.holds_best(trainer(3, 3, 2))  # a later validation (memory banks fit there)


@pytest.mark.slow
def test_evaluating_a_run_on_its_own_data_reproduces_it_exactly(tiny_run: Path) -> None:
    original = json.loads((tiny_run / "metrics.json").read_text())
    before = file_hashes(tiny_run)
    assert "validation_scores.csv" in before
    assert main([f"run={tiny_run}"]) == 0
    assert file_hashes(tiny_run) == before, "the run's own files are never changed"
    [out] = list((tiny_run / "evaluations").iterdir())
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "success" and record["evaluated_from"] == str(tiny_run.resolve())
    assert record["best_checkpoint"] == original["best_checkpoint"] and record["experiment_path"] == str(out)
    assert record["validation"] == {**original["validation"], "threshold_from": str(tiny_run.resolve())}
    assert list(results(record)) == DOMAINS
    for domain, result in results(original).items():
        assert results(record)[domain]["image_AUROC"] == result["image_AUROC"], domain
        assert results(record)[domain] == result
    assert pd.read_csv(out / "predictions.csv").equals(pd.read_csv(tiny_run / "predictions.csv"))
    assert (out / "validation_scores.csv").read_bytes() == (tiny_run / "validation_scores.csv").read_bytes()

    # from the predictions alone, the run's own quantile of the stored validation scores is the run's threshold
    assert main([f"run={tiny_run}", "from_predictions=true", f"out={out.parent / 'again'}",
                 f"evaluation.threshold_quantile={original['validation']['threshold_quantile']}"]) == 0
    again = json.loads((out.parent / "again" / "metrics.json").read_text())
    assert again["validation"] == {**original["validation"], "threshold_from": str(tiny_run.resolve())}
    assert results(again) == results(original)
    assert file_hashes(tiny_run) == before


def fake_run(run_dir: Path, n: int = 10) -> dict:
    """A finished run without a checkpoint: metrics.json, predictions.csv (n normal + n fault per domain), validation_scores.csv."""
    rng = np.random.default_rng(3)
    cfg = config("draem", "A") | {"evaluation": {"threshold_quantile": 0.99, "plots": False}}
    cfg["data"]["subgroups"] = [{"name": "cold", "index": [0, n // 2]}, {"name": "warm", "index": [n // 2, None]}]
    validation = pd.DataFrame({"image_path": [f"/d/domain_A/train/good/{i:03d}.tiff" for i in range(30)], "label": 0,
                               "anomaly_score": rng.normal(size=30).astype(np.float32)})
    frames = [pd.DataFrame({"domain": domain, "split": "test",
                            "image_path": [f"/d/{domain}/test/{kind}/{i:03d}.tiff" for kind in ("good", "fault") for i in range(n)],
                            "label": np.repeat([0, 1], n), "anomaly_score": rng.normal(size=2 * n).astype(np.float32) + np.repeat([0, 1], n),
                            "predicted_label": 0, "subgroup": ["cold"] * (n // 2) + ["warm"] * (n - n // 2) + ["cold"] * (n // 2) + ["warm"] * (n - n // 2)})
              for domain in DOMAINS]
    run_dir.mkdir()
    validation.to_csv(run_dir / "validation_scores.csv", index=False)
    pd.concat(frames).to_csv(run_dir / "predictions.csv", index=False)
    record = {"status": "success", "error": None, "condition": {"name": "draem_A", "model": "draem", "config": cfg},
              "source_domain": "domain_A", "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
              "validation": {"threshold_quantile": 0.99, "threshold": float(np.quantile(validation["anomaly_score"], 0.99))},
              "training_info": {"fit_seconds": 1.0}, "data": {"root": "/d"}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return record


def test_from_predictions_recomputes_a_new_quantile_new_subgroups_and_fewer_domains(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path / "run")
    before = file_hashes(tmp_path / "run")
    out = tmp_path / "eval"
    assert main([f"run={tmp_path / 'run'}", f"out={out}", "from_predictions=true", "evaluation.threshold_quantile=0.5",
                 "domain.targets=[C]", "data.subgroups=[{name:first,index:[0,3]}]"]) == 0
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert " | evaluated in " in closing and " | fit " not in closing  # what evaluate did, not the run's fit time
    log_lines = (out / "evaluate.log").read_text().splitlines()
    assert log_lines and all(re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[", line) for line in log_lines if line.startswith("["))
    assert file_hashes(tmp_path / "run") == before
    record = json.loads((out / "metrics.json").read_text())
    validation = pd.read_csv(out / "validation_scores.csv", dtype={"anomaly_score": np.float32})
    threshold = float(np.quantile(validation["anomaly_score"].to_numpy(), 0.5))
    assert {k: record["validation"][k] for k in ("threshold_quantile", "threshold", "threshold_from", "threshold_method")} == \
        {"threshold_quantile": 0.5, "threshold": threshold, "threshold_from": str((tmp_path / "run").resolve()),
         "threshold_method": "quantile"}
    assert set(record["validation"]["thresholds"]) == {"quantile", "gamma", "mean_std"}  # every rule, side by side
    assert list(record["target_results"]) == ["domain_C"] and record["evaluation"]["from_predictions"] is True
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    c = predictions[predictions["domain"] == "domain_C"]
    expected = image_metrics(c["label"], c["anomaly_score"].astype(np.float32), threshold)
    assert {k: v for k, v in record["target_results"]["domain_C"].items() if k not in ("domain", "subgroups")} == pytest.approx(expected)
    assert (predictions["predicted_label"] == (predictions["anomaly_score"].astype(np.float32) > threshold)).all()
    assert set(record["target_results"]["domain_C"]["subgroups"]) == {"first", "other"}
    assert record["target_results"]["domain_C"]["subgroups"]["first"]["n_samples"] == 6  # 3 normal + 3 fault images


@pytest.mark.parametrize(("args", "message"), [
    (["data.root=/elsewhere"], "data.root needs the model: drop from_predictions"),
    (["domain.targets=[E]"], "holds no domain_E: drop from_predictions=true"),
    (["evaluation.threshold_quantile=1.5"], "evaluation.threshold_quantile=1.5 must be a number in (0, 1] (e.g. 0.99)"),
    (["evaluation.threshold=median"], "evaluation.threshold=median must be one of quantile, gamma, mean_std"),
    (["evaluation.threshold_quantil=0.9"], "evaluation.threshold_quantil is not a key of the run's config"),
    (["evaluation.threshold=mean_std", "evaluation.threshold_k=-1"], "evaluation.threshold_k=-1 must be a number >= 0"),
])
def test_from_predictions_refuses_what_needs_the_model(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    run = tmp_path / "domain=A,model=draem,seed=0"  # a sweep job folder: '=' and ',' in run= are taken literally
    fake_run(run)
    before = file_hashes(run)
    assert main([f"run={run}", "from_predictions=true", *args]) == 1
    assert message in capsys.readouterr().err
    assert file_hashes(run) == before and not (run / "evaluations").exists()


def test_without_a_checkpoint_only_predictions_work(tmp_path: Path, capsys) -> None:
    fake_run(tmp_path / "run")
    assert main([f"run={tmp_path / 'run'}", "domain.targets=[B]"]) == 1
    assert "best checkpoint" in capsys.readouterr().err and not (tmp_path / "run" / "evaluations").exists()


@pytest.mark.parametrize("args", [[], ["data.root=/x"], ["run=/r", "model=draem,patchcore"], ["run=/r", "a=[1"],
                                  ["run=/r", "from_predictions=maybe"]])
def test_usage_errors_exit_2(args: list[str], capsys) -> None:
    assert main(args) == 2
    assert "usage: python -m hdmap_train.evaluate run=<run>" in capsys.readouterr().err
