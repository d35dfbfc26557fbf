"""The image-level interval of an AUROC difference: a paired percentile bootstrap over test images."""

import numpy as np
from sklearn.metrics import roc_auc_score

CONFIDENCE = 0.95


def resample_indices(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, images) indices: each row draws the normal images (label 0), then the fault images, with
    replacement within their class (np.random.default_rng(seed).integers), so every resample keeps both classes.
    """
    rng = np.random.default_rng(seed)
    normal, fault = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    return np.concatenate([normal[rng.integers(0, normal.size, (n_resamples, normal.size))],
                           fault[rng.integers(0, fault.size, (n_resamples, fault.size))]], axis=1)


def resampled_auroc(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """AUROC of each resample (a row of indices), ties counting one half as in roc_auc_score, from image counts."""
    rows, n = indices.shape[0], labels.size
    counts = np.bincount((indices + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
    normal, fault = labels == 0, labels == 1
    order = np.argsort(scores[normal], kind="stable")
    normal_scores = scores[normal][order]
    below = np.concatenate([np.zeros((rows, 1)), np.cumsum(counts[:, normal][:, order], axis=1)], axis=1)
    lower = below[:, np.searchsorted(normal_scores, scores[fault], "left")]  # normals scored below each fault
    not_higher = below[:, np.searchsorted(normal_scores, scores[fault], "right")]  # ... plus the tied ones
    pairs = counts[:, fault].sum(axis=1) * counts[:, normal].sum(axis=1)
    return (counts[:, fault] * (lower + not_higher) / 2).sum(axis=1) / pairs


def paired_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_resamples: int, seed: int) -> dict:
    """Mean AUROCs, their difference (a - b, mean over seeds) and its paired percentile bootstrap interval.

    scores_a, scores_b: (seeds, images), row k of both from the same seed, columns aligned with labels.
    """
    auroc_a = np.array([roc_auc_score(labels, s) for s in scores_a])
    auroc_b = np.array([roc_auc_score(labels, s) for s in scores_b])
    indices = resample_indices(labels, n_resamples, seed)
    differences = np.mean([resampled_auroc(a, labels, indices) - resampled_auroc(b, labels, indices)
                           for a, b in zip(scores_a, scores_b, strict=True)], axis=0)
    low, high = np.percentile(differences, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"n_seeds": len(scores_a), "auroc_a": float(auroc_a.mean()), "auroc_b": float(auroc_b.mean()),
            "difference": float((auroc_a - auroc_b).mean()), "ci_low": float(low), "ci_high": float(high)}
