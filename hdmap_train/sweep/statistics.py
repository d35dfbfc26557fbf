"""Repeats (seeds, or jobs of one condition): mean, std (ddof=1), n and a 95% t-interval of every metric per
condition x source x evaluated domain x subgroup (summary_stats.csv), and their `mean ± std (n=k)` text.
"""

import numpy as np
import pandas as pd
from scipy import stats

from hdmap_train.sweep.collect import EFFICIENCY_COLUMNS, SHIFT_COLUMNS

CONFIDENCE = 0.95
KEYS = ["condition", "source", "target", "subgroup", "metric"]
STATISTICS = ["mean", "std", "n", "ci_low", "ci_high"]
AVERAGE = "average"  # the `target` of a job's mean over its evaluated domains (whole domains)


def interval(values: np.ndarray) -> dict:
    """Mean, std (ddof=1), n and the t-interval of the defined values (std and interval NaN below two values)."""
    values = values[~np.isnan(values)]
    n = int(values.size)
    mean = float(values.mean()) if n else np.nan
    std = float(values.std(ddof=1)) if n > 1 else np.nan
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def domain_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Each job's mean of each metric over its evaluated domains (whole domains), as rows with target 'average'."""
    whole = long[long["subgroup"] == ""]
    averages = whole.groupby(["job", "condition", "source", "metric"], sort=False, as_index=False)["value"].mean()
    return averages.assign(target=AVERAGE, subgroup="")


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
    rows = [{**dict(zip(KEYS, key, strict=True)), **interval(group.to_numpy(dtype=float))}
            for key, group in values.groupby(KEYS, sort=True)["value"]]
    return pd.DataFrame(rows, columns=KEYS + STATISTICS)


def mean_std(mean: float, std: float, n: int | None = None, digits: int = 3, scale: float = 1.0) -> str:
    """'0.912 ± 0.013 (n=3)' ('0.912 (n=1)' for one value, '-' for none); n=None leaves the count out."""
    if n == 0 or pd.isna(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}" + ("" if pd.isna(std) else f" ± {std * scale:.{digits}f}")
    return text if n is None else f"{text} (n={n})"
