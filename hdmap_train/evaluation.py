"""Per-domain image-level metrics with a threshold chosen on validation data only."""

from dataclasses import dataclass

import numpy as np
from anomalib.data import ImageBatch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score


@dataclass
class Scores:
    """Raw anomaly scores of one split with labels (0 good, 1 fault) and image paths."""

    scores: np.ndarray
    labels: np.ndarray
    paths: list[str]

    @classmethod
    def from_batches(cls, batches: list[ImageBatch]) -> "Scores":
        """Gather the predictions of anomalib's predict loop."""
        scores = np.concatenate([b.pred_score.detach().float().cpu().reshape(-1).numpy() for b in batches])
        labels = np.concatenate([b.gt_label.detach().cpu().reshape(-1).numpy() for b in batches]).astype(int)
        paths = [str(p) for b in batches for p in b.image_path]
        if not np.isfinite(scores).all():
            msg = f"The model produced {int((~np.isfinite(scores)).sum())} non-finite anomaly scores."
            raise FloatingPointError(msg)
        return cls(scores, labels, paths)


def validation_threshold(validation: Scores, quantile: float) -> float:
    """Threshold = `quantile` of the scores of held-out normal images (expected FPR about 1 - quantile)."""
    return float(np.quantile(validation.scores, quantile))


def domain_metrics(domain: str, test: Scores, threshold: float) -> dict:
    """Image AUROC (threshold-free) and F1/precision/recall/accuracy at the validation threshold."""
    predicted = (test.scores > threshold).astype(int)
    both_classes = len(np.unique(test.labels)) == 2
    return {
        "domain": domain,
        "image_AUROC": float(roc_auc_score(test.labels, test.scores)) if both_classes else None,
        "image_F1Score": float(f1_score(test.labels, predicted, zero_division=0)),
        "image_precision": float(precision_score(test.labels, predicted, zero_division=0)),
        "image_recall": float(recall_score(test.labels, predicted, zero_division=0)),
        "image_accuracy": float((predicted == test.labels).mean()),
        "threshold": threshold,
        "n_samples": len(test.labels),
        "n_normal": int((test.labels == 0).sum()),
        "n_fault": int((test.labels == 1).sum()),
    }
