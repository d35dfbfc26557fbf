"""evaluation.protocol=dcase: DCASE Task 2's scores against its formulas, worked out here without scikit-learn."""

import numpy as np
import pandas as pd
import pytest

from hdmap_train.dcase import dcase_metrics


def pairwise_auc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous score > normal score) + half the ties, over every pair."""
    greater = (anomalous[:, None] > normal[None, :]).sum()
    ties = (anomalous[:, None] == normal[None, :]).sum()
    return (greater + ties / 2) / (normal.size * anomalous.size)


def standardised_pauc(normal: np.ndarray, anomalous: np.ndarray, max_fpr: float = 0.1) -> float:
    """The area under the ROC curve up to max_fpr (curve from every distinct threshold, linear in between),
    McClish-standardised: 0.5 * (1 + (area - max_fpr^2 / 2) / (max_fpr - max_fpr^2 / 2)).
    """
    thresholds = np.unique(np.concatenate([normal, anomalous]))[::-1]
    fpr = np.array([0.0] + [(normal >= t).mean() for t in thresholds])
    tpr = np.array([0.0] + [(anomalous >= t).mean() for t in thresholds])
    cut = np.searchsorted(fpr, max_fpr, side="right")
    xs = np.append(fpr[:cut], max_fpr)
    ys = np.append(tpr[:cut], np.interp(max_fpr, fpr, tpr))
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    low, high = max_fpr ** 2 / 2, max_fpr
    return 0.5 * (1 + (area - low) / (high - low))


def official(frame: pd.DataFrame) -> float:
    anomalous = frame[frame.label == 1].anomaly_score.to_numpy()
    aucs = [pairwise_auc(frame[(frame.domain == d) & (frame.label == 0)].anomaly_score.to_numpy(), anomalous)
            for d in ("domain_A", "domain_B")]
    pauc = standardised_pauc(frame[frame.label == 0].anomaly_score.to_numpy(), anomalous)
    values = [*aucs, pauc]
    return len(values) / sum(1 / v for v in values)


@pytest.fixture
def predictions() -> pd.DataFrame:
    """Domain A: well separated; domain B: shifted normals that score like A's anomalies; one tie."""
    rng = np.random.default_rng(3)
    rows = []
    for domain, normal_mean, fault_mean in (("domain_A", 0.0, 2.0), ("domain_B", 1.2, 2.5)):
        for label, mean in ((0, normal_mean), (1, fault_mean)):
            rows += [{"domain": domain, "label": label, "anomaly_score": round(float(s), 1), "subgroup": ""}
                     for s in rng.normal(mean, 1.0, 14)]
    return pd.DataFrame(rows)


def test_dcase_scores_follow_the_evaluator_formulas(predictions: pd.DataFrame) -> None:
    found = dcase_metrics(predictions, threshold=1.5)
    anomalous = predictions[predictions.label == 1].anomaly_score.to_numpy()
    for domain in ("domain_A", "domain_B"):
        normal = predictions[(predictions.domain == domain) & (predictions.label == 0)].anomaly_score.to_numpy()
        assert found["domains"][domain]["auc"] == pytest.approx(pairwise_auc(normal, anomalous))  # all anomalies, both domains
        tp, fp = int((anomalous > 1.5).sum()), int((normal > 1.5).sum())
        precision, recall = tp / (tp + fp), tp / anomalous.size
        assert found["domains"][domain]["precision"] == pytest.approx(precision)
        assert found["domains"][domain]["recall"] == pytest.approx(recall)
        assert found["domains"][domain]["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert found["domains"]["domain_A"]["auc"] > found["domains"]["domain_B"]["auc"]  # the shifted normals cost AUC
    assert found["pauc"] == pytest.approx(standardised_pauc(predictions[predictions.label == 0].anomaly_score.to_numpy(), anomalous))
    assert found["official_score"] == pytest.approx(official(predictions))


def test_the_jackknife_interval_leaves_one_image_out(predictions: pd.DataFrame) -> None:
    found = dcase_metrics(predictions, threshold=1.5)
    n = len(predictions)
    values = np.array([official(predictions.drop(index=i)) for i in range(n)])
    error = np.sqrt((n - 1) / n * ((values - values.mean()) ** 2).sum())
    low, high = found["official_score"] - 1.959964 * error, found["official_score"] + 1.959964 * error
    assert found["official_score_ci"] == pytest.approx([max(low, 0.0), min(high, 1.0)], abs=1e-5)
    assert found["official_score_ci"][0] < found["official_score"] < found["official_score_ci"][1]


def test_no_anomalies_no_dcase_scores(predictions: pd.DataFrame) -> None:
    assert dcase_metrics(predictions[predictions.label == 0], threshold=1.5) is None
