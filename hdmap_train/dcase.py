"""DCASE Task 2 scoring (evaluation.protocol=dcase), beside hdmap_train's own per-domain metrics.

As DCASE's official evaluator scores domain-shift anomaly detection:
- AUC(domain): that domain's normal images against **all** anomalous images of every evaluated domain;
- pAUC: the partial AUC at FPR <= 0.1 (McClish-standardised, roc_auc_score(max_fpr=0.1)) of the pooled set;
- the official score: the harmonic mean of every AUC(domain) and the pAUC, with a 95% jackknife interval
  (leave one test image out; estimate ± 1.96 jackknife standard errors, clipped to [0, 1]);
- precision, recall and F1 per domain, on the same images as its AUC, at the run's frozen validation threshold.
"""

import numpy as np
import pandas as pd
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from hdmap_train.metrics import PAUC_MAX_FPR

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def official_score(labels: np.ndarray, scores: np.ndarray, domains: np.ndarray, names: list[str]) -> float:
    """The harmonic mean of AUC(d) (d's normals + all anomalies) for every domain in names and the pooled pAUC."""
    anomalous = labels == 1
    aucs = [roc_auc_score(labels[(domains == d) | anomalous], scores[(domains == d) | anomalous]) for d in names]
    return float(hmean([*aucs, roc_auc_score(labels, scores, max_fpr=PAUC_MAX_FPR)]))


def jackknife_interval(labels: np.ndarray, scores: np.ndarray, domains: np.ndarray, names: list[str]) -> list[float]:
    """[low, high]: the official score ± 1.96 leave-one-image-out jackknife standard errors, within [0, 1]."""
    n = labels.size
    keep = ~np.eye(n, dtype=bool)
    values = np.array([official_score(labels[k], scores[k], domains[k], names) for k in keep])
    error = np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2))
    estimate = official_score(labels, scores, domains, names)
    return [float(max(0.0, estimate - Z95 * error)), float(min(1.0, estimate + Z95 * error))]


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of 'anomalous if score > threshold' (0 where undefined)."""
    predicted = scores > threshold
    tp = int((predicted & (labels == 1)).sum())
    precision = tp / int(predicted.sum()) if predicted.any() else 0.0
    recall = tp / int((labels == 1).sum()) if (labels == 1).any() else 0.0
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def dcase_metrics(predictions: pd.DataFrame, threshold: float) -> dict | None:
    """metrics.json `dcase` of a run's test predictions (domain, label, anomaly_score rows; subgroups ignored);
    None without both classes.
    """
    labels = predictions["label"].to_numpy(dtype=int)
    scores = predictions["anomaly_score"].to_numpy(dtype=float)
    domains = predictions["domain"].to_numpy(dtype=str)
    names = [d for d in dict.fromkeys(domains) if ((domains == d) & (labels == 0)).any()]
    if not names or not (labels == 1).any():
        return None
    anomalous = labels == 1
    per_domain = {}
    for name in names:
        chosen = (domains == name) | anomalous
        per_domain[name] = {"auc": float(roc_auc_score(labels[chosen], scores[chosen])),
                            **at_threshold(labels[chosen], scores[chosen], threshold)}
    return {"domains": per_domain, "pauc": float(roc_auc_score(labels, scores, max_fpr=PAUC_MAX_FPR)),
            "official_score": official_score(labels, scores, domains, names),
            "official_score_ci": jackknife_interval(labels, scores, domains, names), "threshold": threshold,
            "ci_method": "leave-one-image-out jackknife, ± 1.96 standard errors, clipped to [0, 1]"}
