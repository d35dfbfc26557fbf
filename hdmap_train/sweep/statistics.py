"""Repeats (seeds, or jobs of one condition): mean, std (ddof=1), n of N and a 95% t-interval of every metric per
condition x source x evaluated domain x subgroup (summary_stats.csv), and their `mean ± std (n=k of N)` text.

N counts every job of the condition and source, failed, missing and unreadable ones included; `note` names the
seeds that gave no value (failed, diverged, missing, unreadable) and those below chance (source AUROC < 0.5),
which are kept in the mean. A bounded metric's interval is clipped to its bounds (results.Metric.bounds; the
clipped interval contains the true value exactly when the t-interval does), `ci_method` says which.
"""

import numpy as np
import pandas as pd
from scipy import stats

from hdmap_train.results import METRICS
from hdmap_train.sweep.collect import EFFICIENCY_COLUMNS, SHIFT_COLUMNS

CONFIDENCE = 0.95
KEYS = ["condition", "source", "target", "subgroup", "metric"]
STATISTICS = ["mean", "std", "n", "n_total", "ci_low", "ci_high", "ci_method", "note"]
AVERAGE = "average"  # the `target` of a job's mean over its evaluated domains (of whole domains or a subgroup)


def interval(values: np.ndarray, bounds: tuple[float | None, float | None] = (None, None)) -> dict:
    """Mean, std (ddof=1), n and the t-interval of the defined values, clipped to bounds (std and interval NaN
    below two values); ci_method names it.
    """
    values = values[~np.isnan(values)]
    n = int(values.size)
    mean = float(values.mean()) if n else np.nan
    std = float(values.std(ddof=1)) if n > 1 else np.nan
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan
    ends, method = [mean - half, mean + half], "t"
    if bounds != (None, None):
        low, high = bounds
        ends = np.clip(ends, low, high)
        method = f"t clipped to [{'-∞' if low is None else f'{low:g}'}, {'∞)' if high is None else f'{high:g}]'}"
    return {"mean": mean, "std": std, "n": n, "ci_low": float(ends[0]), "ci_high": float(ends[1]), "ci_method": method}


def who(job: pd.Series) -> str:
    """'seed 2' (the job's folder name when it has no seed)."""
    return f"seed {job['seed']:g}" if isinstance(job["seed"], int | float) and not pd.isna(job["seed"]) else str(job["job"])


def repeat_notes(table: pd.DataFrame) -> pd.DataFrame:
    """condition, source, n_total (every job of them) and note: the seeds without a result and those below chance."""
    rows = []
    for (condition, source), jobs in table.dropna(subset=["condition", "source"]).groupby(["condition", "source"], sort=True):
        notes = []
        for _, job in jobs.iterrows():
            if job["status"] != "success":
                diverged = isinstance(job["error"], str) and "diverged" in job["error"]
                notes.append(f"{who(job)} {'diverged' if diverged else job['status']}")
            elif job["source_AUROC"] < 0.5:
                notes.append(f"{who(job)} below chance (source AUROC {job['source_AUROC']:.3f})")
        rows.append({"condition": condition, "source": source, "n_total": len(jobs), "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=["condition", "source", "n_total", "note"])


def domain_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Each job's mean of each metric over its evaluated domains, of the whole domains and of each subgroup, as rows
    with target 'average'.
    """
    keys = ["job", "condition", "source", "subgroup", "metric"]
    return long.groupby(keys, sort=False, as_index=False)["value"].mean().assign(target=AVERAGE)


def run_level(table: pd.DataFrame) -> pd.DataFrame:
    """The successful jobs' domain-shift numbers (avg/hmean AUROC, transfer ratio) and, where recorded, their
    EFFICIENCY_COLUMNS, as rows with target ''.
    """
    done = table[table["status"] == "success"]
    shift = done.melt(id_vars=["job", "condition", "source"], value_vars=SHIFT_COLUMNS, var_name="metric")
    cost = done.melt(id_vars=["job", "condition", "source"], value_vars=EFFICIENCY_COLUMNS, var_name="metric")
    return pd.concat([shift, cost.dropna(subset=["value"])], ignore_index=True).assign(target="", subgroup="")


def repeat_statistics(long: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """summary_stats.csv rows (KEYS + STATISTICS): the long table, each job's domain average and its run-level
    numbers, over the jobs of each condition x source.
    """
    values = pd.concat([long[["job", *KEYS, "value"]], domain_averages(long), run_level(table)], ignore_index=True)
    values["value"] = pd.to_numeric(values["value"], errors="coerce")
    rows = [{**dict(zip(KEYS, key, strict=True)),
             **interval(group.to_numpy(dtype=float), METRICS[key[-1]].bounds if key[-1] in METRICS else (None, None))}
            for key, group in values.groupby(KEYS, sort=True)["value"] if group.notna().any()]  # a metric no job has: no row
    found = pd.DataFrame(rows, columns=[*KEYS, "mean", "std", "n", "ci_low", "ci_high", "ci_method"])
    return found.merge(repeat_notes(table), on=["condition", "source"], how="left")[KEYS + STATISTICS]


def mean_std(mean: float, std: float, n: int | None = None, digits: int = 3, scale: float = 1.0,
             n_total: int | None = None) -> str:
    """'0.912 ± 0.013 (n=2 of 3)' ('0.912 (n=1 of 1)' for one value, '-' for none); n=None leaves the count out,
    n_total=None its total.
    """
    if n == 0 or pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}" + ("" if pd.isna(std) else f" ± {std * scale:.{digits}f}")
    if n is None:
        return text
    return f"{text} (n={n})" if n_total is None or pd.isna(n_total) else f"{text} (n={n} of {int(n_total)})"
