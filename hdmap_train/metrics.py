"""Pure metric functions on score arrays: the validation threshold, per-domain and per-subgroup metrics, and a
run's domain-shift numbers (average and harmonic-mean AUROC, transfer ratio).

The threshold is chosen on validation normals only and applied unchanged to every domain. Nothing here
needs a model or Lightning: hdmap_train.callbacks.PredictionCollector gathers the scores.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from hdmap_train.errors import HdmapError

FPR_LEVELS = {"TPR_at_FPR_1pct": 0.01, "TPR_at_FPR_5pct": 0.05}
PAUC_KEY, PAUC_MAX_FPR = "image_pAUC_FPR_10pct", 0.1  # McClish-standardised partial AUROC over FPR <= 0.1
CHANCE_AUROC = 0.5  # a source AUROC at or below it makes a transfer ratio meaningless
# Example categories of the anomaly-map grids: (label, +1 keeps the highest scores, -1 the lowest).
EXAMPLE_CATEGORIES = {
    "highest-scoring faults": (1, 1),
    "lowest-scoring faults": (1, -1),
    "highest-scoring normals": (0, 1),
}
PREDICTION_COLUMNS = ["domain", "split", "image_path", "label", "anomaly_score", "predicted_label", "subgroup"]


@dataclass
class Scores:
    """Raw anomaly scores of one split with labels (0 good, 1 fault) and image paths."""

    scores: np.ndarray
    labels: np.ndarray
    paths: list[str]


@dataclass
class Example:
    """One image kept for the anomaly-map grids (first channel of the model input, and its map)."""

    score: float
    label: int
    path: str
    image: np.ndarray
    anomaly_map: np.ndarray | None


def validation_threshold(validation: Scores, quantile: float) -> float:
    """Threshold = `quantile` of the validation scores of NORMAL images (expected FPR about 1 - quantile).

    Images labelled as faults (e.g. synthetic faults added to validation) never move the threshold.
    """
    normal = validation.scores[validation.labels == 0]
    if normal.size == 0:
        msg = "The validation set holds no normal images (label 0); the threshold needs some. Raise data.val_fraction."
        raise HdmapError(msg)
    return float(np.quantile(normal, quantile))


def predictions_table(domain: str, test: Scores, samples: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per test image: PREDICTION_COLUMNS. `subgroup` comes from samples' optional column ('' if none)."""
    rows = samples.set_index("image_path")
    subgroups = rows["subgroup"].fillna("").astype(str) if "subgroup" in rows else pd.Series("", index=rows.index)
    return pd.DataFrame({
        "domain": domain,
        "split": rows["split"].reindex(test.paths).to_numpy(),
        "image_path": test.paths,
        "label": test.labels,
        "anomaly_score": test.scores,
        "predicted_label": (test.scores > threshold).astype(int),
        "subgroup": subgroups.reindex(test.paths).fillna("").to_numpy(),
    })[PREDICTION_COLUMNS]


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest true-positive rate of any threshold whose false-positive rate is at most max_fpr (ROC steps)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def oracle_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over every threshold t (fault if score > t) and that t. Uses test labels: an oracle, for reference."""
    candidates = np.unique(scores)
    candidates = np.concatenate([[np.nextafter(candidates[0], -np.inf)], candidates])  # "everything is a fault"
    faults, normals = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    tp = faults.size - np.searchsorted(faults, candidates, side="right")
    fp = normals.size - np.searchsorted(normals, candidates, side="right")
    f1 = 2 * tp / np.maximum(tp + faults.size + fp, 1)  # 2TP / (2TP + FP + FN), FN = faults - TP
    best = int(np.argmax(f1))
    return float(f1[best]), float(candidates[best])


def image_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Threshold-free metrics (None without both classes), metrics at `threshold`, oracle F1, counts."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    predicted = scores > threshold
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    n_fault, n_normal = int((labels == 1).sum()), int((labels == 0).sum())
    both = n_fault > 0 and n_normal > 0
    oracle = oracle_f1(labels, scores) if both else (None, None)
    f1 = 2 * tp / (tp + n_fault + fp) if tp + n_fault + fp else 0.0
    return {
        "image_AUROC": float(roc_auc_score(labels, scores)) if both else None,
        "image_AUPR": float(average_precision_score(labels, scores)) if both else None,
        PAUC_KEY: float(roc_auc_score(labels, scores, max_fpr=PAUC_MAX_FPR)) if both else None,
        "image_F1Score": f1,
        "image_precision": tp / (tp + fp) if tp + fp else 0.0,
        "image_recall": tp / n_fault if n_fault else 0.0,
        "image_accuracy": float((predicted == (labels == 1)).mean()) if labels.size else 0.0,
        "image_FPR": fp / n_normal if n_normal else 0.0,
        "threshold": threshold,
        "oracle_F1Score": oracle[0],
        "oracle_threshold": oracle[1],
        "threshold_gap": None if oracle[0] is None else oracle[0] - f1,
        **{key: tpr_at_fpr(labels, scores, level) if both else None for key, level in FPR_LEVELS.items()},
        "n_samples": int(labels.size),
        "n_normal": n_normal,
        "n_fault": n_fault,
    }


def domain_metrics(domain: str, predictions: pd.DataFrame, threshold: float) -> dict:
    """image_metrics of one domain's predictions, plus `subgroups` {name: image_metrics} when subgroups are set.

    Every subgroup uses the same (validation) threshold; images without a subgroup only count for the domain.
    """
    result = {"domain": domain, **image_metrics(predictions["label"], predictions["anomaly_score"], threshold)}
    grouped = predictions[predictions["subgroup"] != ""].groupby("subgroup", sort=True)
    if len(grouped):
        result["subgroups"] = {
            str(name): image_metrics(group["label"], group["anomaly_score"], threshold) for name, group in grouped
        }
    return result


def evaluate_domains(
    threshold: float, tests: dict[str, Scores], test_samples: dict[str, pd.DataFrame],
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Predictions of every test image at `threshold`, and domain_metrics per domain (in test_samples order)."""
    predictions = pd.concat(
        [predictions_table(domain, tests[domain], samples, threshold) for domain, samples in test_samples.items()],
        ignore_index=True,
    )
    results = {domain: domain_metrics(domain, predictions[predictions["domain"] == domain], threshold) for domain in test_samples}
    return predictions, results


def transfer_ratio(source_auroc: float | None, avg_target_auroc: float | None) -> float | None:
    """Average target AUROC / source AUROC; None when either is undefined or the source AUROC is at or below chance."""
    if source_auroc is None or avg_target_auroc is None or source_auroc <= CHANCE_AUROC:
        return None
    return avg_target_auroc / source_auroc


def transfer_ratio_note(source_auroc: float | None) -> str | None:
    """Why transfer_ratio is None although the source AUROC exists (at or below chance); None otherwise."""
    if source_auroc is None or source_auroc > CHANCE_AUROC:
        return None
    return f"source AUROC {source_auroc:.3g} is at or below chance: a ratio would be meaningless"


def harmonic_mean(values: list[float | None]) -> float | None:
    """Harmonic mean of the defined values (None if there are none; 0 if one is 0): low when any domain fails."""
    defined = np.asarray([v for v in values if v is not None], dtype=float)
    if defined.size == 0:
        return None
    return 0.0 if (defined <= 0).any() else float(defined.size / np.sum(1.0 / defined))


NO_TARGETS_NOTE = "no target domain: every evaluated domain is a source"


def transfer_metrics(
    source_auroc: float | None, target_aurocs: list[float | None], source_domain_aurocs: list[float | None] | None = None,
) -> dict:
    """A run's domain-shift numbers from its source and target AUROCs (undefined AUROCs left out).

    avg_target_auroc, hmean_target_auroc (harmonic mean over targets), hmean_auroc (over every domain,
    source included: with several sources, each source domain's AUROC in source_domain_aurocs rather than
    the pooled one), transfer_ratio and transfer_ratio_note (see transfer_ratio / transfer_ratio_note; without
    target domains both are about the missing targets).
    """
    defined = [a for a in target_aurocs if a is not None]
    average = float(np.mean(defined)) if defined else None
    note = transfer_ratio_note(source_auroc) if average is not None else None
    return {
        "avg_target_auroc": average,
        "hmean_target_auroc": harmonic_mean(defined),
        "hmean_auroc": harmonic_mean([*(source_domain_aurocs or [source_auroc]), *defined]),
        "transfer_ratio": transfer_ratio(source_auroc, average),
        "transfer_ratio_note": NO_TARGETS_NOTE if not target_aurocs else note,
    }


def record_transfer_metrics(record: dict) -> dict:
    """transfer_metrics of a metrics.json record's source_results, target_results (and source_domain_results)."""
    by_source = [r["image_AUROC"] for r in (record.get("source_domain_results") or {}).values()]
    targets = [r["image_AUROC"] for r in record["target_results"].values()]
    return transfer_metrics(record["source_results"]["image_AUROC"], targets, by_source or None)
