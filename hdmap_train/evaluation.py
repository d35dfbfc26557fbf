"""Per-domain image-level metrics with a threshold chosen on validation normals only.

`PredictionCollector` streams the anomaly scores out of `engine.predict` and keeps, per domain, only
the few images and anomaly maps the pictures show (never every map of a large test set).
"""

from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
from anomalib.data import ImageBatch
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from hdmap_train.errors import HdmapError

FPR_LEVELS = {"TPR_at_FPR_1pct": 0.01, "TPR_at_FPR_5pct": 0.05}
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


class PredictionCollector(Callback):
    """Gathers scores of every predict dataloader and the grid examples of `example_names`.

    `names[i]` names dataloader i. Per example name and category only `n_examples` images are kept,
    updated batch by batch (streaming top-k), so memory does not grow with the test set.
    """

    def __init__(self, names: list[str], example_names: list[str], n_examples: int = 4) -> None:
        self.names = names
        self.n_examples = n_examples
        self._parts: dict[str, list[tuple[np.ndarray, np.ndarray, list[str]]]] = {name: [] for name in names}
        self.examples: dict[str, dict[str, list[Example]]] = {
            name: {category: [] for category in EXAMPLE_CATEGORIES} for name in example_names
        }

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: ImageBatch, batch: ImageBatch,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        del trainer, pl_module, batch, batch_idx
        name = self.names[dataloader_idx]
        scores = outputs.pred_score.detach().float().cpu().reshape(-1).numpy()
        labels = outputs.gt_label.detach().cpu().reshape(-1).numpy().astype(int)
        paths = [str(p) for p in outputs.image_path]
        self._parts[name].append((scores, labels, paths))
        if name in self.examples:
            for category, (label, sign) in EXAMPLE_CATEGORIES.items():
                self._keep_best(self.examples[name][category], outputs, scores, labels, paths, label, sign)

    def _keep_best(
        self, kept: list[Example], outputs: ImageBatch, scores: np.ndarray, labels: np.ndarray, paths: list[str],
        label: int, sign: int,
    ) -> None:
        """Merge this batch's images of `label` into `kept`, keeping the n_examples with the largest sign*score."""
        pool: list[tuple[float, Example | int]] = [(sign * e.score, e) for e in kept]
        pool += [(sign * float(scores[i]), i) for i in np.flatnonzero(labels == label)]
        pool.sort(key=lambda item: item[0], reverse=True)
        kept[:] = [
            entry if isinstance(entry, Example) else _example(outputs, entry, scores, labels, paths)
            for _, entry in pool[: self.n_examples]
        ]

    def scores(self, name: str) -> Scores:
        """All scores of dataloader `name`; raises if the model produced non-finite scores."""
        parts = self._parts[name]
        if not parts:
            raise RuntimeError(f"No predictions were collected for '{name}'.")
        scores = np.concatenate([p[0] for p in parts])
        if not np.isfinite(scores).all():
            msg = f"The model produced {int((~np.isfinite(scores)).sum())} non-finite anomaly scores on '{name}'."
            raise FloatingPointError(msg)
        return Scores(scores, np.concatenate([p[1] for p in parts]), [path for p in parts for path in p[2]])


def _example(outputs: ImageBatch, index: int, scores: np.ndarray, labels: np.ndarray, paths: list[str]) -> Example:
    """Copy one image (first channel) and its anomaly map to the CPU."""
    maps = outputs.anomaly_map
    return Example(
        score=float(scores[index]),
        label=int(labels[index]),
        path=paths[index],
        image=outputs.image[index, 0].detach().float().cpu().numpy().copy(),
        anomaly_map=None if maps is None else maps[index].detach().float().cpu().reshape(maps.shape[-2:]).numpy().copy(),
    )


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
    return {
        "image_AUROC": float(roc_auc_score(labels, scores)) if both else None,
        "image_AUPR": float(average_precision_score(labels, scores)) if both else None,
        "image_F1Score": 2 * tp / (tp + n_fault + fp) if tp + n_fault + fp else 0.0,
        "image_precision": tp / (tp + fp) if tp + fp else 0.0,
        "image_recall": tp / n_fault if n_fault else 0.0,
        "image_accuracy": float((predicted == (labels == 1)).mean()) if labels.size else 0.0,
        "image_FPR": fp / n_normal if n_normal else 0.0,
        "threshold": threshold,
        "oracle_F1Score": oracle[0],
        "oracle_threshold": oracle[1],
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
    collector: PredictionCollector, test_samples: dict[str, pd.DataFrame], quantile: float,
) -> tuple[float, pd.DataFrame, dict[str, dict]]:
    """Validation threshold, predictions of every test image, and domain_metrics per domain (in test_samples order)."""
    threshold = validation_threshold(collector.scores("validation"), quantile)
    predictions = pd.concat(
        [predictions_table(domain, collector.scores(domain), samples, threshold) for domain, samples in test_samples.items()],
        ignore_index=True,
    )
    results = {domain: domain_metrics(domain, predictions[predictions["domain"] == domain], threshold) for domain in test_samples}
    return threshold, predictions, results


def transfer_ratio(source_auroc: float | None, avg_target_auroc: float | None) -> float | None:
    """Average target AUROC / source AUROC (None when either is undefined)."""
    if source_auroc is None or avg_target_auroc is None or source_auroc == 0:
        return None
    return avg_target_auroc / source_auroc
