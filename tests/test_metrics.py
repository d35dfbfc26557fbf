"""Metrics against scikit-learn, the validation threshold, predictions.csv, subgroups, the streaming collector,
and one tiny end-to-end run that leaves every evaluation output."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats
from scipy.stats import hmean
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hdmap_train.callbacks import PredictionCollector
from hdmap_train.console import print_results, summary_line
from hdmap_train.data import datamodule as datamodule_module
from hdmap_train.errors import HdmapError
from hdmap_train.metrics import (
    PREDICTION_COLUMNS,
    Scores,
    domain_metrics,
    harmonic_mean,
    image_metrics,
    predictions_table,
    transfer_metrics,
    transfer_ratio,
    transfer_ratio_note,
    validation_threshold,
)
from hdmap_train.thresholds import choose_threshold
from hdmap_train.train import run
from helpers.config import compose_cfg


def hand_made(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping good/fault scores, rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)
    return labels, scores


def brute_force_tpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_metrics_match_scikit_learn(seed: int) -> None:
    labels, scores = hand_made(seed)
    threshold = float(np.quantile(scores[labels == 0], 0.9))
    metrics = image_metrics(labels, scores, threshold)
    predicted = (scores > threshold).astype(int)
    assert metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["image_AUPR"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["image_pAUC_FPR_10pct"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1), abs=1e-12)
    assert metrics["image_F1Score"] == pytest.approx(f1_score(labels, predicted))
    assert metrics["image_precision"] == pytest.approx(precision_score(labels, predicted))
    assert metrics["image_recall"] == pytest.approx(recall_score(labels, predicted))
    assert metrics["image_accuracy"] == pytest.approx((predicted == labels).mean())
    assert metrics["image_FPR"] == pytest.approx(predicted[labels == 0].mean())
    assert metrics["TPR_at_FPR_1pct"] == pytest.approx(brute_force_tpr(labels, scores, 0.01))
    assert metrics["TPR_at_FPR_5pct"] == pytest.approx(brute_force_tpr(labels, scores, 0.05))
    assert metrics["TPR_at_FPR_1pct"] <= metrics["TPR_at_FPR_5pct"]
    assert (metrics["n_samples"], metrics["n_normal"], metrics["n_fault"]) == (200, int((labels == 0).sum()), int(labels.sum()))
    assert metrics["threshold"] == threshold


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_f1_is_the_best_threshold_on_test_labels(seed: int) -> None:
    labels, scores = hand_made(seed, n=60)
    metrics = image_metrics(labels, scores, threshold=0.0)
    candidates = np.concatenate([[scores.min() - 1], np.unique(scores)])
    best = max(f1_score(labels, (scores > t).astype(int), zero_division=0) for t in candidates)
    assert metrics["oracle_F1Score"] == pytest.approx(best)
    assert f1_score(labels, (scores > metrics["oracle_threshold"]).astype(int)) == pytest.approx(best)
    assert metrics["oracle_F1Score"] >= metrics["image_F1Score"]
    assert metrics["threshold_gap"] == pytest.approx(best - f1_score(labels, (scores > 0.0).astype(int), zero_division=0))


def test_threshold_free_metrics_are_none_with_one_class() -> None:
    metrics = image_metrics(np.zeros(5, dtype=int), np.arange(5.0), threshold=2.5)
    assert metrics["image_AUROC"] is None and metrics["image_AUPR"] is None and metrics["oracle_F1Score"] is None
    assert metrics["TPR_at_FPR_1pct"] is None
    assert metrics["image_FPR"] == pytest.approx(0.4) and metrics["image_accuracy"] == pytest.approx(0.6)


def test_validation_threshold_uses_normal_images_only() -> None:
    normal = np.linspace(0.0, 1.0, 101)
    only_normal = Scores(normal, np.zeros(101, dtype=int), [f"n{i}" for i in range(101)])
    with_faults = Scores(np.append(normal, [50.0, 80.0]), np.append(np.zeros(101, dtype=int), [1, 1]), [""] * 103)
    assert validation_threshold(only_normal, 0.99) == pytest.approx(0.99)
    assert validation_threshold(with_faults, 0.99) == validation_threshold(only_normal, 0.99)
    with pytest.raises(HdmapError, match="no normal images"):
        validation_threshold(Scores(np.ones(3), np.ones(3, dtype=int), [""] * 3), 0.99)


def samples_frame(paths: list[str], subgroups: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"image_path": paths, "label_index": 0, "split": "test", "domain": "domain_B", "mask_path": ""})
    if subgroups is not None:
        frame["subgroup"] = subgroups
    return frame


def test_predictions_table_carries_subgroups_by_path() -> None:
    paths = [f"/d/{i}.tiff" for i in range(6)]
    samples = samples_frame(paths, ["cold", "warm", "cold", "warm", None, "cold"])
    order = [5, 0, 3, 1, 4, 2]  # predictions come in loader order, not samples order
    test = Scores(np.array([0.9, 0.1, 0.6, 0.2, 0.5, 0.3])[order], np.array([1, 0, 1, 0, 1, 0])[order], [paths[i] for i in order])
    table = predictions_table("domain_B", test, samples, threshold=0.4)
    assert list(table.columns) == PREDICTION_COLUMNS
    assert table["image_path"].tolist() == [paths[i] for i in order]
    assert table["subgroup"].tolist() == ["cold", "cold", "warm", "warm", "", "cold"]
    assert table["predicted_label"].tolist() == [int(s > 0.4) for s in test.scores]
    assert set(table["split"]) == {"test"} and set(table["domain"]) == {"domain_B"}
    without = predictions_table("domain_B", test, samples_frame(paths), threshold=0.4)
    assert set(without["subgroup"]) == {""}


def test_domain_metrics_per_subgroup_use_the_same_threshold() -> None:
    labels, scores = hand_made(3, n=80)
    subgroups = np.where(np.arange(80) % 3 == 0, "cold", np.where(np.arange(80) % 3 == 1, "warm", ""))
    predictions = pd.DataFrame({"label": labels, "anomaly_score": scores, "subgroup": subgroups})
    result = domain_metrics("domain_C", predictions, threshold=0.5)
    assert result["domain"] == "domain_C" and set(result["subgroups"]) == {"cold", "warm"}
    assert result["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores))
    for name, metrics in result["subgroups"].items():
        mask = subgroups == name
        assert metrics["threshold"] == 0.5
        assert metrics["n_samples"] == mask.sum()
        assert metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels[mask], scores[mask]))
        assert metrics["image_F1Score"] == pytest.approx(f1_score(labels[mask], (scores[mask] > 0.5).astype(int)))
    assert "subgroups" not in domain_metrics("domain_C", predictions.assign(subgroup=""), threshold=0.5)


def test_transfer_ratio() -> None:
    assert transfer_ratio(0.8, 0.6) == pytest.approx(0.75)
    assert transfer_ratio(None, 0.6) is None and transfer_ratio(0.8, None) is None
    assert transfer_ratio(0.5, 0.6) is None and transfer_ratio(0.42, 0.66) is None  # not 1.58: source at chance
    assert transfer_ratio_note(0.8) is None and transfer_ratio_note(None) is None
    assert transfer_ratio_note(0.42) == "source AUROC 0.42 is at or below chance: a ratio would be meaningless"


def test_harmonic_means_and_transfer_metrics() -> None:
    assert harmonic_mean([0.9, None, 0.6]) == pytest.approx(hmean([0.9, 0.6]))
    assert harmonic_mean([None]) is None and harmonic_mean([0.9, 0.0]) == 0.0
    shift = transfer_metrics(0.9, [0.8, 0.6, None])
    assert shift == pytest.approx({"avg_target_auroc": 0.7, "hmean_target_auroc": hmean([0.8, 0.6]),
                                   "hmean_auroc": hmean([0.9, 0.8, 0.6]), "transfer_ratio": 0.7 / 0.9, "transfer_ratio_note": None})
    chance = transfer_metrics(0.42, [0.66])
    assert chance["transfer_ratio"] is None and chance["transfer_ratio_note"].startswith("source AUROC 0.42 is at or below chance")
    assert transfer_metrics(0.9, [None]) == pytest.approx({"avg_target_auroc": None, "hmean_target_auroc": None, "hmean_auroc": 0.9,
                                                           "transfer_ratio": None, "transfer_ratio_note": None})


def fake_batch(scores: list[float], labels: list[int], start: int, with_maps: bool = True) -> SimpleNamespace:
    n = len(scores)
    return SimpleNamespace(
        pred_score=torch.tensor(scores),
        gt_label=torch.tensor(labels),
        image_path=[f"img{start + i}" for i in range(n)],
        image=torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 3, 4, 6) + start,
        anomaly_map=torch.full((n, 1, 4, 6), 1.0) * torch.tensor(scores).reshape(n, 1, 1, 1) if with_maps else None,
    )


def test_collector_streams_scores_and_keeps_only_the_top_examples() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(50).round(3)
    labels = (rng.random(50) < 0.5).astype(int)
    collector = PredictionCollector(["validation", "domain_A"], example_names=["domain_A"], n_examples=3)
    collector.on_predict_batch_end(None, None, fake_batch([0.1, 0.2], [0, 0], 1000), None, 0, dataloader_idx=0)
    for start in range(0, 50, 8):
        batch = fake_batch(scores[start:start + 8].tolist(), labels[start:start + 8].tolist(), start)
        collector.on_predict_batch_end(None, None, batch, None, start // 8, dataloader_idx=1)

    collected = collector.scores("domain_A")
    np.testing.assert_allclose(collected.scores, scores, rtol=1e-6)
    assert collected.labels.tolist() == labels.tolist() and collected.paths == [f"img{i}" for i in range(50)]
    assert collector.scores("validation").paths == ["img1000", "img1001"]
    assert set(collector.examples) == {"domain_A"}

    kept = collector.examples["domain_A"]
    faults, normals = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    expected = {
        "highest-scoring faults": faults[np.argsort(-scores[faults], kind="stable")][:3],
        "lowest-scoring faults": faults[np.argsort(scores[faults], kind="stable")][:3],
        "highest-scoring normals": normals[np.argsort(-scores[normals], kind="stable")][:3],
    }
    for category, indices in expected.items():
        assert [e.path for e in kept[category]] == [f"img{i}" for i in indices], category
        for example, index in zip(kept[category], indices, strict=True):
            assert example.image.shape == (4, 6) and example.image[0, 0] == index  # the image of that very index
            assert example.anomaly_map.shape == (4, 6) and example.anomaly_map[0, 0] == pytest.approx(scores[index])


def test_collector_rejects_non_finite_scores_and_tolerates_missing_maps() -> None:
    collector = PredictionCollector(["domain_A"], example_names=["domain_A"], n_examples=2)
    collector.on_predict_batch_end(None, None, fake_batch([0.5, float("nan")], [0, 1], 0, with_maps=False), None, 0)
    assert collector.examples["domain_A"]["highest-scoring normals"][0].anomaly_map is None
    with pytest.raises(HdmapError, match=r"1 non-finite anomaly scores on .domain_A. \(training diverged\): lower the learning rate"):
        collector.scores("domain_A")


def test_results_table_and_summary_line(capsys: pytest.CaptureFixture) -> None:
    metrics = image_metrics(*hand_made(0, n=40), threshold=0.5)
    record = {
        "condition": {"name": "draem_A", "model": "draem"}, "status": "success", "source_domain": "domain_A",
        "experiment_path": "/runs/x", "validation": {"threshold": 0.5},
        "source_results": {"domain": "domain_A", **metrics, "subgroups": {"cold": metrics}},
        "target_results": {"domain_B": {"domain": "domain_B", **metrics}},
        "avg_target_auroc": 0.6, "transfer_ratio": 0.75,
    }
    print_results(record)
    out = capsys.readouterr().out
    assert "domain_B" in out and " cold" in out and "TPR@1" in out
    assert summary_line(record) in out
    assert summary_line(record) == (
        f"draem | source domain_A AUROC {metrics['image_AUROC']:.4f} | avg target AUROC 0.6000 | transfer ratio 0.7500"
        " | success | /runs/x"
    )


@pytest.mark.slow
def test_tiny_run_leaves_predictions_plots_and_tensorboard(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    scan = datamodule_module.scan_domain

    def with_subgroups(root: Path, domain: str, split: str, *rest) -> pd.DataFrame:
        samples = scan(root, domain, split, *rest)
        if split == "test":  # a hand-made subgroup column (replacing any configured one): even/odd file number
            samples["subgroup"] = ["even" if int(Path(p).stem) % 2 == 0 else "odd" for p in samples["image_path"]]
        return samples

    monkeypatch.setattr(datamodule_module, "scan_domain", with_subgroups)
    cfg = compose_cfg(
        ["model=draem", "trainer=cpu", "trainer.enable_progress_bar=false", f"data.root={tiny_dataset}",
         "size=tiny", "model.max_epochs=1", "domain.targets=[B]"],
        tmp_path,
    )
    record = run(cfg, tmp_path)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    source, target = saved["source_results"], saved["target_results"]["domain_B"]
    assert saved["transfer_ratio"] == (target["image_AUROC"] / source["image_AUROC"] if source["image_AUROC"] > 0.5 else None)
    assert saved["hmean_auroc"] == pytest.approx(hmean([source["image_AUROC"], target["image_AUROC"]]))
    assert saved["hmean_target_auroc"] == pytest.approx(target["image_AUROC"]) and "transfer_ratio_note" in saved
    assert source["image_pAUC_FPR_10pct"] is not None and "image_pAUC_FPR_10pct" in source["subgroups"]["odd"]
    assert source["threshold"] == target["threshold"] == saved["validation"]["threshold"]
    for result in (source, target):
        assert set(result["subgroups"]) == {"even", "odd"}
        assert sum(s["n_samples"] for s in result["subgroups"].values()) == result["n_samples"] == 24
        assert all(s["threshold"] == saved["validation"]["threshold"] for s in result["subgroups"].values())
    assert saved["training_info"]["report_seconds"] > 0

    predictions = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == PREDICTION_COLUMNS and len(predictions) == 48
    assert predictions.groupby("domain").size().to_dict() == {"domain_A": 24, "domain_B": 24}
    assert set(predictions["subgroup"]) == {"even", "odd"} and set(predictions["split"]) == {"test"}
    assert (predictions["predicted_label"] == (predictions["anomaly_score"] > saved["validation"]["threshold"])).all()
    b = predictions[predictions["domain"] == "domain_B"]
    assert roc_auc_score(b["label"], b["anomaly_score"]) == pytest.approx(target["image_AUROC"])

    pictures = {"roc", "score_histograms", "anomaly_maps_domain_A", "anomaly_maps_domain_B"}
    assert {p.stem for p in (tmp_path / "plots").glob("*.png")} == pictures
    for path in (tmp_path / "plots").glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"test/domain_A/image_AUROC", "test/domain_B/image_AUROC", "test/domain_B/TPR_at_FPR_1pct",
            "test/domain_B/odd/image_AUROC", "test/domain_B/image_pAUC_FPR_10pct", "test/hmean_auroc", "hp_metric"} <= scalars
    assert events.Scalars("test/domain_B/image_AUROC")[-1].value == pytest.approx(target["image_AUROC"])
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(record["avg_target_auroc"])
    assert {f"plots/{name}" for name in pictures} <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"hp_metric" in hparams["_hparams_/experiment"] and b"model/name" in hparams["_hparams_/session_start_info"]


def test_the_three_threshold_rules_side_by_side() -> None:
    rng = np.random.default_rng(0)
    normal = stats.gamma.rvs(2.0, loc=0.3, scale=1.5, size=4000, random_state=rng)  # a known gamma distribution
    validation = Scores(np.append(normal, [90.0]), np.append(np.zeros(normal.size, dtype=int), 1), [""] * (normal.size + 1))
    chosen = choose_threshold(validation, "gamma", 0.99, 3.0)
    truth = stats.gamma.ppf(0.99, 2.0, loc=0.3, scale=1.5)
    assert chosen["threshold"] == chosen["thresholds"]["gamma"] == pytest.approx(truth, rel=0.05)
    assert chosen["thresholds"]["quantile"] == pytest.approx(np.quantile(normal, 0.99))  # the fault never counts
    assert chosen["thresholds"]["mean_std"] == pytest.approx(normal.mean() + 3.0 * normal.std(ddof=1))
    assert (chosen["threshold_method"], chosen["n_normal"], chosen["threshold_k"]) == ("gamma", 4000, 3.0) and "note" not in chosen


def test_few_validation_normals_under_a_high_quantile_warn_and_undefined_rules_stop(caplog) -> None:
    twelve = Scores(np.linspace(0.1, 0.5, 12), np.zeros(12, dtype=int), [""] * 12)
    with caplog.at_level(logging.WARNING):
        chosen = choose_threshold(twelve, "quantile", 0.99, 3.0)
    assert "0.99 quantile of 12 validation normals is about their largest score" in chosen["note"]
    assert "raise data.val_fraction" in caplog.text
    assert "note" not in choose_threshold(twelve, "quantile", 0.5, 3.0)  # the median of 12 is no single image
    flat = Scores(np.ones(5), np.zeros(5, dtype=int), [""] * 5)
    with pytest.raises(HdmapError, match="evaluation.threshold=gamma is undefined on 5 validation normals"):
        choose_threshold(flat, "gamma", 0.99, 3.0)
