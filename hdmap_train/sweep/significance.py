"""Tests at the unit that was repeated: a training run, i.e. a (source domain, seed) pair of jobs.

The evaluated domains of one run share its weights, so they are not independent repeats: a run's unit value is
its mean AUROC over the evaluated domains it shares with its partner. Two conditions are tested on their paired
units (paired t-test and Wilcoxon signed-rank test, scipy), the p-values of many condition pairs corrected with
Holm's method (statsmodels), and conditions ranked over the units every condition ran, with Friedman's test and
the Nemenyi post-hoc test behind the critical-difference diagram (scikit-posthocs).
"""

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
UNIT = ["source", "seed"]


def seed_interval(differences: np.ndarray) -> tuple[float, float]:
    """The 95% t-interval of the mean of per-seed differences (NaN, NaN below two seeds)."""
    differences = np.asarray(differences, dtype=float)
    if differences.size < 2:
        return np.nan, np.nan
    half = stats.t.ppf((1 + CONFIDENCE) / 2, differences.size - 1) * differences.std(ddof=1) / np.sqrt(differences.size)
    return float(differences.mean() - half), float(differences.mean() + half)


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired t-test and Wilcoxon signed-rank test (two-sided) of unit values a and b; None where undefined
    (fewer than two units, or no unit differs).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    differs = a.size > 1 and bool(np.any(a != b))
    t = stats.ttest_rel(a, b) if differs and np.std(a - b) > 0 else None
    w = stats.wilcoxon(a, b) if differs else None
    return {"units": int(a.size),
            "t_statistic": None if t is None else float(t.statistic), "t_p": None if t is None else float(t.pvalue),
            "wilcoxon_n": int(a.size), "wilcoxon_statistic": None if w is None else float(w.statistic),
            "wilcoxon_p": None if w is None else float(w.pvalue)}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels multipletests) of the defined ones, None kept in place."""
    from statsmodels.stats.multitest import multipletests

    defined = [k for k, p in enumerate(p_values) if p is not None and not pd.isna(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    if defined:
        for k, p in zip(defined, multipletests([p_values[k] for k in defined], method="holm")[1], strict=True):
            adjusted[k] = float(p)
    return adjusted


def unit_table(aurocs: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """(source, seed) units x conditions: each run's mean AUROC over the evaluated domains every condition has in
    that unit; only units every condition ran.
    """
    by_domain = aurocs.pivot_table(index=[*UNIT, "domain"], columns="condition", values="auroc").reindex(columns=conditions)
    return by_domain.dropna().groupby(level=UNIT).mean()


def ranks_and_tests(units: pd.DataFrame) -> dict:
    """Mean ranks (1 = highest AUROC, ties averaged) over the units, Friedman's test (three or more conditions) and
    the Nemenyi post-hoc p-values (conditions x conditions), where there are at least two units.
    """
    import scikit_posthocs

    result = {"units": len(units), "mean_ranks": units.rank(axis=1, ascending=False, method="average").mean(),
              "friedman": None, "nemenyi": None}
    if len(units) >= 2 and units.shape[1] >= 3:
        statistic, p = stats.friedmanchisquare(*(units[c].to_numpy() for c in units.columns))
        result["friedman"] = (float(statistic), float(p))
    if len(units) >= 2:
        result["nemenyi"] = scikit_posthocs.posthoc_nemenyi_friedman(units.to_numpy())
        result["nemenyi"].index = result["nemenyi"].columns = units.columns
    return result


def critical_difference_figure(mean_ranks: pd.Series, nemenyi: pd.DataFrame, path) -> None:
    """critical_difference.png: the conditions on their mean-rank axis, those the Nemenyi test cannot tell apart
    (p >= 0.05) joined by a bar (scikit-posthocs' critical_difference_diagram).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scikit_posthocs

    figure, axes = plt.subplots(figsize=(7, 1.2 + 0.3 * len(mean_ranks)))
    scikit_posthocs.critical_difference_diagram(mean_ranks, nemenyi, ax=axes)
    axes.set_title("Mean rank over (source, seed) runs (1 = best AUROC); bars: no significant difference (Nemenyi, α=0.05)",
                   fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
