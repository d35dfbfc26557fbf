"""The decision threshold, from validation normals only: three rules side by side, one applied (evaluation.threshold).

- quantile: the `threshold_quantile` quantile of the validation normals' scores (the default, 0.99);
- gamma: that quantile of a gamma distribution fitted to them (scipy.stats.gamma.fit), as DCASE Task 2's
  baseline sets its decision threshold;
- mean_std: their mean + `threshold_k` standard deviations (ddof=1).

With few validation normals a high quantile is about their largest score, so F1 and accuracy at it rest on one
image: a warning says so and is kept in the record (validation.note).
"""

import logging
import warnings

import numpy as np
from scipy import stats

from hdmap_train.errors import HdmapError
from hdmap_train.metrics import Scores, validation_threshold

log = logging.getLogger(__name__)
FEW_NORMALS, HIGH_QUANTILE = 30, 0.9  # fewer normals than this setting a quantile at least this high: a warning


def gamma_threshold(normal: np.ndarray, quantile: float) -> float | None:
    """The `quantile` of a gamma distribution fitted to the normal scores (shape, location, scale); None when it
    cannot be fitted (fewer than 3 scores, all equal, or no finite result).
    """
    if normal.size < 3 or np.ptp(normal) == 0:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = stats.gamma.ppf(quantile, *stats.gamma.fit(normal))
    return float(value) if np.isfinite(value) else None


def validation_thresholds(validation: Scores, quantile: float, k: float) -> dict[str, float | None]:
    """Each rule's threshold from the validation normals (None where a rule is undefined)."""
    normal = validation.scores[validation.labels == 0]
    return {"quantile": validation_threshold(validation, quantile), "gamma": gamma_threshold(normal, quantile),
            "mean_std": float(normal.mean() + k * normal.std(ddof=1)) if normal.size > 1 else None}


def choose_threshold(validation: Scores, method: str, quantile: float, k: float) -> dict:
    """metrics.json `validation`: the applied rule's threshold, every rule's, the number of normals that set them
    and, with few normals under a high quantile, the warning (also logged). HdmapError when the rule is undefined.
    """
    thresholds = validation_thresholds(validation, quantile, k)
    n_normal = int((validation.labels == 0).sum())
    if thresholds[method] is None:
        raise HdmapError(f"evaluation.threshold={method} is undefined on {n_normal} validation normals (a gamma fit needs 3 "
                         "or more differing scores, mean_std 2 or more): use evaluation.threshold=quantile or raise data.val_fraction.")
    chosen = {"threshold_method": method, "threshold_quantile": quantile, "threshold_k": k,
              "threshold": thresholds[method], "thresholds": thresholds, "n_normal": n_normal}
    if method != "mean_std" and quantile >= HIGH_QUANTILE and n_normal < FEW_NORMALS:
        chosen["note"] = (f"the {quantile:g} quantile of {n_normal} validation normals is about their largest score: F1 and "
                          "accuracy at this threshold rest on one or two images; raise data.val_fraction for more")
        log.warning("Threshold: %s.", chosen["note"])
    return chosen
